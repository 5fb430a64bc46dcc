"""E2LLM: configuration, building from parts, EEG merged into the text, refusals, loss, generation."""

import pytest
import torch
from transformers import Qwen3ForCausalLM

from modeling_e2llm import (
    E2LLMConfig,
    E2LLMForConditionalGeneration,
    E2LLMModel,
    E2LLMPreTrainedModel,
    EEGPTConfig,
    EEGPTModel,
)
from train.stages.tiny import tiny_qwen3_config
from train.tokenizer import EEG_END_TOKEN_ID, EEG_START_TOKEN_ID, EEG_TOKEN_ID

TOKENS_PER_WINDOW = 16
PAD = 151643
CHANNELS = torch.arange(58)


def prompt_ids(num_windows, prefix=(9707, 1879), suffix=(13, 151645)):
    """Text ids with `num_windows` expanded EEG windows, as the processor writes them."""
    ids = list(prefix)
    for _ in range(num_windows):
        ids += [EEG_START_TOKEN_ID] + [EEG_TOKEN_ID] * TOKENS_PER_WINDOW + [EEG_END_TOKEN_ID]
    return ids + list(suffix)


def eeg_windows(count, seed=0):
    return torch.randn(count, 58, 1024, generator=torch.Generator().manual_seed(seed)) * 0.05


def build_model(seed=0, **text_overrides):
    torch.manual_seed(seed)
    encoder = EEGPTModel(EEGPTConfig.from_preset("tiny"))
    language_model = Qwen3ForCausalLM(tiny_qwen3_config(**text_overrides))
    return E2LLMForConditionalGeneration.from_parts(encoder, language_model).eval()


@pytest.fixture(scope="module")
def model():
    return build_model()


def test_config_records_the_eeg_token_ids():
    config = E2LLMConfig()
    assert (config.eeg_token_id, config.eeg_start_token_id, config.eeg_end_token_id) == (
        EEG_TOKEN_ID,
        EEG_START_TOKEN_ID,
        EEG_END_TOKEN_ID,
    )


@pytest.mark.parametrize("tied", [True, False])
def test_tie_word_embeddings_is_copied_from_the_text_config(tied):
    text_config = tiny_qwen3_config(tie_word_embeddings=tied)
    config = E2LLMConfig(eeg_config=EEGPTConfig.from_preset("tiny"), text_config=text_config)
    assert config.tie_word_embeddings is tied
    model = E2LLMForConditionalGeneration(config)
    assert (model.lm_head.weight is model.model.language_model.embed_tokens.weight) is tied


def test_from_parts_keeps_the_encoder_and_language_model_weights(tiny_text_config):
    encoder = EEGPTModel(EEGPTConfig.from_preset("tiny"))
    language_model = Qwen3ForCausalLM(tiny_text_config)
    model = E2LLMForConditionalGeneration.from_parts(encoder, language_model)
    assert isinstance(model, E2LLMPreTrainedModel) and isinstance(model.model, E2LLMModel)
    assert model.model.eeg_encoder is encoder
    assert model.model.language_model is language_model.model
    assert model.lm_head.weight is model.model.language_model.embed_tokens.weight
    assert not any(p.is_meta for p in model.parameters())
    assert model.model.projector.linear_1.in_features == 4 * 64
    assert model.model.projector.linear_2.out_features == tiny_text_config.hidden_size


def test_eeg_tokens_replace_the_placeholder_embeddings(model):
    input_ids = torch.tensor([prompt_ids(2)])
    captured = {}
    hook = model.model.language_model.register_forward_pre_hook(
        lambda module, args, kwargs: captured.update(kwargs), with_kwargs=True
    )
    try:
        with torch.no_grad():
            out = model(input_ids=input_ids, eeg_values=eeg_windows(2), eeg_channel_ids=CHANNELS)
            summary = model.model.eeg_encoder(eeg_windows(2), CHANNELS).last_hidden_state  # (2, 16, 4, 64)
            expected_eeg = model.model.projector(summary.flatten(2))
            text_embeddings = model.get_input_embeddings()(input_ids)
    finally:
        hook.remove()
    embeds = captured["inputs_embeds"]
    placeholders = input_ids[0] == EEG_TOKEN_ID
    torch.testing.assert_close(out.eeg_hidden_states, expected_eeg)
    torch.testing.assert_close(embeds[0, placeholders], expected_eeg.reshape(32, -1))
    torch.testing.assert_close(embeds[0, ~placeholders], text_embeddings[0, ~placeholders])


def test_forward_gives_logits_and_the_shifted_loss(model):
    input_ids = torch.tensor([prompt_ids(2)])
    labels = input_ids.clone()
    labels[0, :-3] = -100
    out = model(input_ids=input_ids, eeg_values=eeg_windows(2), eeg_channel_ids=CHANNELS, labels=labels)
    assert out.logits.shape == (1, input_ids.shape[1], 151936)
    expected = torch.nn.functional.cross_entropy(out.logits[0, :-1], labels[0, 1:], ignore_index=-100)
    torch.testing.assert_close(out.loss, expected)


def test_a_boolean_logits_to_keep_scores_each_rows_own_positions(model):
    """Two left-padded rows answering at different lengths: transformers' boolean `logits_to_keep` keeps
    exactly their answer positions (row-major), and the model's loss over them, given the matching
    `shift_labels`, is the full loss."""
    from train.stages.trainer import answer_inputs

    short, long = prompt_ids(1), prompt_ids(2)
    input_ids = torch.tensor([[PAD] * (len(long) - len(short)) + short, long])
    attention_mask = (torch.arange(len(long)) >= len(long) - len(short)).long()[None].repeat(2, 1)
    attention_mask[1] = 1
    labels = torch.full_like(input_ids, -100)
    labels[0, -2:] = input_ids[0, -2:]  # row 0 answers with 2 tokens, row 1 with 5
    labels[1, -5:] = input_ids[1, -5:]
    inputs = dict(input_ids=input_ids, attention_mask=attention_mask, eeg_values=eeg_windows(3), eeg_channel_ids=CHANNELS)
    answers, targets = answer_inputs(inputs, labels)
    mask = answers["logits_to_keep"]
    assert mask.sum() == 7 and not mask[:, -1].any()
    assert mask[0].nonzero().flatten().tolist() == [len(long) - 3, len(long) - 2]
    assert targets.tolist() == labels[0, -2:].tolist() + labels[1, -5:].tolist()
    with torch.no_grad():
        full = model(**inputs, labels=labels)
        scored = model(**answers)
        summed = model(**answers, num_items_in_batch=2)
    assert scored.logits.shape == (7, 151936)
    torch.testing.assert_close(scored.logits, full.logits[mask])
    torch.testing.assert_close(scored.loss, full.loss)
    torch.testing.assert_close(summed.loss, full.loss * 7 / 2)


def test_the_remote_code_file_holds_no_training_speed_code():
    import inspect

    import modeling_e2llm

    source = inspect.getsource(modeling_e2llm)
    assert "autograd.Function" not in source and "linear_cross_entropy" not in source
    assert not hasattr(E2LLMForConditionalGeneration, "accepts_answer_mask")


def test_different_eeg_gives_different_logits(model):
    input_ids = torch.tensor([prompt_ids(1)])
    with torch.no_grad():
        first = model(input_ids=input_ids, eeg_values=eeg_windows(1, seed=1), eeg_channel_ids=CHANNELS).logits
        second = model(input_ids=input_ids, eeg_values=eeg_windows(1, seed=2), eeg_channel_ids=CHANNELS).logits
    assert torch.equal(first[0, :2], second[0, :2])  # the text before the EEG cannot see it
    assert (first[0, -1] - second[0, -1]).abs().max() > 1e-3


def test_windows_are_assigned_to_samples_in_order(model):
    """A padded batch of a 1-window and a 2-window prompt reads the same as each prompt alone."""
    short, long = prompt_ids(1), prompt_ids(2)
    width = len(long)
    input_ids = torch.tensor([[PAD] * (width - len(short)) + short, long])
    attention_mask = (torch.arange(width) >= width - len(short)).long().unsqueeze(0)
    attention_mask = torch.cat([attention_mask, torch.ones(1, width, dtype=torch.long)])
    windows = eeg_windows(3)
    with torch.no_grad():
        batch = model(input_ids=input_ids, attention_mask=attention_mask, eeg_values=windows, eeg_channel_ids=CHANNELS)
        alone_short = model(input_ids=torch.tensor([short]), eeg_values=windows[:1], eeg_channel_ids=CHANNELS)
        alone_long = model(input_ids=torch.tensor([long]), eeg_values=windows[1:], eeg_channel_ids=CHANNELS)
    torch.testing.assert_close(batch.logits[0, -1], alone_short.logits[0, -1], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(batch.logits[1, -1], alone_long.logits[0, -1], atol=1e-4, rtol=1e-4)


def test_more_eeg_windows_than_placeholders_is_refused(model):
    with pytest.raises(ValueError, match=r"do not match, tokens: 16, features: 32 \(2 windows x 16 tokens each\)"):
        model(input_ids=torch.tensor([prompt_ids(1)]), eeg_values=eeg_windows(2), eeg_channel_ids=CHANNELS)


def test_fewer_eeg_windows_than_placeholders_is_refused(model):
    with pytest.raises(ValueError, match="tokens: 48, features: 32"):
        model(input_ids=torch.tensor([prompt_ids(3)]), eeg_values=eeg_windows(2), eeg_channel_ids=CHANNELS)


def test_eeg_placeholders_without_eeg_values_are_refused(model):
    with pytest.raises(ValueError, match="holds 16 <eeg> tokens but no eeg_values were given"):
        model(input_ids=torch.tensor([prompt_ids(1)]))


def test_eeg_values_without_channel_ids_are_refused(model):
    with pytest.raises(ValueError, match="eeg_values came without eeg_channel_ids"):
        model(input_ids=torch.tensor([prompt_ids(1)]), eeg_values=eeg_windows(1))


def test_text_only_input_runs_without_eeg(model):
    out = model(input_ids=torch.tensor([[9707, 1879, 13]]))
    assert out.logits.shape == (1, 3, 151936) and out.eeg_hidden_states is None


def test_base_model_returns_hidden_states_for_the_trainer(model):
    out = model.model(input_ids=torch.tensor([prompt_ids(1)]), eeg_values=eeg_windows(1), eeg_channel_ids=CHANNELS)
    assert out.last_hidden_state.shape == (1, 22, 64)


def count_encoder_calls(model):
    calls = []
    handle = model.model.eeg_encoder.register_forward_hook(lambda *args: calls.append(1))
    return calls, handle


def test_greedy_generation_is_identical_with_and_without_cache(model):
    short, long = prompt_ids(1), prompt_ids(2)
    width = len(long)
    input_ids = torch.tensor([[PAD] * (width - len(short)) + short, long])
    attention_mask = (input_ids != PAD).long()
    inputs = dict(
        input_ids=input_ids, attention_mask=attention_mask, eeg_values=eeg_windows(3), eeg_channel_ids=CHANNELS
    )
    settings = dict(max_new_tokens=8, do_sample=False, pad_token_id=PAD, eos_token_id=None)
    with torch.no_grad():
        cached = model.generate(**inputs, use_cache=True, **settings)
        uncached = model.generate(**inputs, use_cache=False, **settings)
    assert cached.shape == (2, width + 8)
    assert torch.equal(cached, uncached)


@pytest.mark.parametrize("name", ["cache", "past_key_values"])
def test_the_kv_cache_is_taken_under_either_name(model, name):
    """transformers 5.24 renamed `past_key_values` to `cache`: the old name is renamed by transformers'
    `deprecate_kwarg`, and a cached step scores the next token as the whole sequence does."""
    from modeling_e2llm import CACHE_NAME

    ids = torch.tensor([prompt_ids(1)])
    eeg = eeg_windows(1)
    with torch.no_grad():
        prefill = model(input_ids=ids[:, :-1], eeg_values=eeg, eeg_channel_ids=CHANNELS, use_cache=True)
        cache = getattr(prefill, CACHE_NAME)
        assert cache is not None and cache.get_seq_length() == ids.shape[1] - 1
        step = model(input_ids=ids[:, -1:], use_cache=True, **{name: cache})
        whole = model(input_ids=ids, eeg_values=eeg, eeg_channel_ids=CHANNELS)
    torch.testing.assert_close(step.logits[:, -1], whole.logits[:, -1], rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="Both `past_key_values` and `cache` are set"):
        model(input_ids=ids[:, -1:], cache=cache, past_key_values=cache)
    with pytest.raises(ValueError, match="Both `past_key_values` and `cache` are set"):
        model.model(input_ids=ids[:, -1:], cache=cache, past_key_values=cache)


def test_cached_generation_encodes_the_eeg_once(model):
    calls, handle = count_encoder_calls(model)
    try:
        with torch.no_grad():
            model.generate(
                input_ids=torch.tensor([prompt_ids(2)]),
                eeg_values=eeg_windows(2),
                eeg_channel_ids=CHANNELS,
                max_new_tokens=6,
                do_sample=False,
                eos_token_id=None,
            )
    finally:
        handle.remove()
    assert len(calls) == 1


def test_gradient_checkpointing_reaches_encoder_and_language_model():
    model = build_model().train()
    inputs = dict(input_ids=torch.tensor([prompt_ids(1)]), eeg_values=eeg_windows(1), eeg_channel_ids=CHANNELS)
    inputs["labels"] = inputs["input_ids"]
    model(**inputs).loss.backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.activation_checkpointing_enable()
    assert all(block.gradient_checkpointing for block in model.model.eeg_encoder.blocks)
    assert all(layer.gradient_checkpointing for layer in model.model.language_model.layers)
    model(**inputs).loss.backward()
    assert "model.projector.linear_1.weight" in plain and "model.eeg_encoder.summary_token" in plain
    for name, grad in plain.items():
        torch.testing.assert_close(dict(model.named_parameters())[name].grad, grad, msg=name)


def test_bfloat16_model_takes_float32_eeg(model):
    half = build_model().to(torch.bfloat16)
    input_ids = torch.tensor([prompt_ids(1)])
    with torch.no_grad():
        full = model(input_ids=input_ids, eeg_values=eeg_windows(1), eeg_channel_ids=CHANNELS).logits
        low = half(input_ids=input_ids, eeg_values=eeg_windows(1), eeg_channel_ids=CHANNELS).logits
    assert low.dtype == torch.bfloat16
    assert (low.float() - full).norm() / full.norm() < 3e-2


def test_saved_folder_carries_the_code_and_the_full_auto_map(model, tmp_path):
    model.save_pretrained(tmp_path)
    import json

    config = json.loads((tmp_path / "config.json").read_text())
    target = "modeling_e2llm.E2LLMForConditionalGeneration"
    assert config["auto_map"] == {
        "AutoConfig": "modeling_e2llm.E2LLMConfig",
        "AutoModel": target,
        "AutoModelForCausalLM": target,
        "AutoModelForImageTextToText": target,
    }
    assert config["tie_word_embeddings"] is True
    assert (tmp_path / "modeling_e2llm.py").is_file()


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_language_model_attention_implementation_is_selectable(model, tmp_path, implementation):
    model.save_pretrained(tmp_path)
    loaded = E2LLMForConditionalGeneration.from_pretrained(tmp_path, attn_implementation=implementation).eval()
    assert loaded.model.language_model.config._attn_implementation == implementation
    inputs = dict(input_ids=torch.tensor([prompt_ids(1)]), eeg_values=eeg_windows(1), eeg_channel_ids=CHANNELS)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, model(**inputs).logits, atol=1e-4, rtol=1e-4)
