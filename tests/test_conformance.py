"""What a transformers user tries beyond generation: attention implementations in encoder and language
model, torch.compile, disk offload, the multimodal API (get_eeg_features, get_placeholder_mask,
mm_encoder_outputs), and a processor that pads on the left and takes EEG in chat messages."""

from __future__ import annotations

import copy
import warnings

import mne
import numpy as np
import pytest
import torch
from test_modeling import CHANNELS, PAD, build_model, eeg_windows, prompt_ids
from transformers import AttentionInterface, AutoTokenizer, BatchFeature
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.modeling_outputs import BaseModelOutputWithPooling

from modeling_e2llm import E2LLMForConditionalGeneration, EEGPTConfig, EEGPTModel
from processing_e2llm import EEGPT_58_CHANNELS, E2LLMFeatureExtractor, E2LLMProcessor
from train.tokenizer import EEG_TOKEN_ID

NAMES = list(EEGPT_58_CHANNELS[:8])
# The recordings here are seconds long; the 0.1 Hz high-pass is longer (tested in test_feature_extraction).
pytestmark = pytest.mark.filterwarnings("ignore:The filter .* is longer than the recording")


@pytest.fixture(scope="module")
def model():
    return build_model()


@pytest.fixture(scope="module")
def saved(model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("e2llm")
    model.save_pretrained(folder)
    return folder


def one_window_inputs():
    return dict(input_ids=torch.tensor([prompt_ids(1)]), eeg_values=eeg_windows(1), eeg_channel_ids=CHANNELS)


def implementations(model) -> tuple[str, str, str]:
    return (
        model.config._attn_implementation,
        model.model.eeg_encoder.config._attn_implementation,
        model.model.language_model.config._attn_implementation,
    )


# ---------------------------------------------------------------------------------------------
# Attention implementations
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_attention_implementation_reaches_encoder_and_language_model(model, saved, implementation):
    loaded = E2LLMForConditionalGeneration.from_pretrained(saved, attn_implementation=implementation).eval()
    assert implementations(loaded) == (implementation,) * 3
    with torch.no_grad():
        torch.testing.assert_close(loaded(**one_window_inputs()).logits, model(**one_window_inputs()).logits)


def test_set_attn_implementation_switches_every_part(model, saved):
    loaded = E2LLMForConditionalGeneration.from_pretrained(saved, attn_implementation="sdpa").eval()
    loaded.set_attn_implementation("eager")
    assert implementations(loaded) == ("eager",) * 3
    with torch.no_grad():
        torch.testing.assert_close(loaded(**one_window_inputs()).logits, model(**one_window_inputs()).logits)


def test_a_registered_attention_function_runs_in_encoder_and_language_model(model, saved):
    callers = []

    def recording_sdpa(module, *args, **kwargs):
        callers.append(type(module).__name__)
        return sdpa_attention_forward(module, *args, **kwargs)

    AttentionInterface.register("recording_sdpa", recording_sdpa)
    loaded = E2LLMForConditionalGeneration.from_pretrained(saved, attn_implementation="recording_sdpa").eval()
    with torch.no_grad():
        logits = loaded(**one_window_inputs()).logits
    # The tiny encoder and language model have 2 layers each.
    assert sorted(callers) == ["EEGPTAttention"] * 2 + ["Qwen3Attention"] * 2
    torch.testing.assert_close(logits, model(**one_window_inputs()).logits)


def test_flex_attention_loads_and_computes_the_encoder_as_sdpa_does(saved):
    loaded = E2LLMForConditionalGeneration.from_pretrained(saved, attn_implementation="flex_attention").eval()
    assert implementations(loaded) == ("flex_attention",) * 3
    # The encoder alone (8 channels, one patch) keeps the CPU compilation of flex attention short.
    encoder = loaded.model.eeg_encoder
    eeg, ids = eeg_windows(1)[:, :8, :64], CHANNELS[:8]
    with torch.no_grad():
        flex = encoder(eeg, ids).last_hidden_state
        encoder.set_attn_implementation("sdpa")
        sdpa = encoder(eeg, ids).last_hidden_state
    torch.testing.assert_close(flex, sdpa, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# torch.compile, disk offload
# ---------------------------------------------------------------------------------------------


def test_forward_with_eeg_compiles_as_one_graph(model):
    graphs = []

    def recording_backend(graph, example_inputs):
        graphs.append(graph)
        return graph.forward

    assert model._can_compile_fullgraph and EEGPTModel._can_compile_fullgraph
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend=recording_backend)
    inputs = dict(input_ids=torch.tensor([prompt_ids(2)]), eeg_values=eeg_windows(2), eeg_channel_ids=CHANNELS)
    with torch.no_grad():
        torch.testing.assert_close(compiled(**inputs).logits, model(**inputs).logits)
    assert len(graphs) == 1


def test_compiled_input_checks_still_refuse_bad_channel_ids():
    encoder = EEGPTModel(EEGPTConfig.from_preset("tiny")).eval()
    compiled = torch.compile(encoder, fullgraph=True, backend="eager")
    # Compiled, the check is a runtime assertion of the graph; its message is the eager one's only.
    with pytest.raises(RuntimeError, match="Runtime assertion failed"):
        compiled(eeg_windows(1), torch.arange(58) + 10)
    with pytest.raises(ValueError, match=r"channel_ids must lie in \[0, 62\).*from 10 to 67"):
        encoder(eeg_windows(1), torch.arange(58) + 10)


def test_disk_offloaded_model_reads_eeg_as_the_model_in_memory(model, saved, tmp_path):
    offloaded = E2LLMForConditionalGeneration.from_pretrained(
        saved, device_map="auto", max_memory={"cpu": "1KB"}, offload_folder=tmp_path / "offload"
    ).eval()
    assert set(offloaded.hf_device_map.values()) == {"disk"}
    assert offloaded.model.eeg_encoder.patch_embed.proj.weight.is_meta
    inputs = one_window_inputs()
    settings = dict(max_new_tokens=3, do_sample=False, eos_token_id=None)
    with torch.no_grad():
        torch.testing.assert_close(offloaded(**inputs).logits, model(**inputs).logits)
        assert torch.equal(offloaded.generate(**inputs, **settings), model.generate(**inputs, **settings))


# ---------------------------------------------------------------------------------------------
# The multimodal API
# ---------------------------------------------------------------------------------------------


def test_get_eeg_features_returns_the_encoder_output_with_the_projected_tokens(model):
    eeg = eeg_windows(2)
    with torch.no_grad():
        features = model.get_eeg_features(eeg, CHANNELS)
        summary = model.model.eeg_encoder(eeg, CHANNELS).last_hidden_state
    assert isinstance(features, BaseModelOutputWithPooling)
    assert features.last_hidden_state.shape == (2, 16, 4, 64)
    torch.testing.assert_close(features.last_hidden_state, summary)
    torch.testing.assert_close(features.pooler_output, model.model.projector(summary.flatten(2)))
    assert features.pooler_output.shape == (2, 16, 64)
    with torch.no_grad():
        with_states = model.get_eeg_features(eeg, CHANNELS, output_hidden_states=True)
    assert len(with_states.hidden_states) == 3  # the input of each of 2 blocks and the last block's output


def test_get_placeholder_mask_finds_the_placeholders_and_checks_their_count(model):
    input_ids = torch.tensor([prompt_ids(2)])
    embeds = model.get_input_embeddings()(input_ids)
    with torch.no_grad():
        features = model.get_eeg_features(eeg_windows(2), CHANNELS).pooler_output
        from_ids = model.model.get_placeholder_mask(input_ids, embeds, features)
        from_embeds = model.model.get_placeholder_mask(None, embeds, features)
        assert torch.equal(from_ids, input_ids == EEG_TOKEN_ID) and torch.equal(from_embeds, from_ids)
        with pytest.raises(ValueError, match=r"tokens: 32, features: 16 \(1 windows x 16 tokens each\)"):
            model.model.get_placeholder_mask(input_ids, embeds, features[:1])


def test_eeg_encoded_beforehand_reads_as_eeg_values(model):
    inputs = dict(input_ids=torch.tensor([prompt_ids(2)]))
    eeg = dict(eeg_values=eeg_windows(2), eeg_channel_ids=CHANNELS)
    with torch.no_grad():
        encoded = model.get_eeg_features(**eeg)
        direct = model(**inputs, **eeg).logits
        torch.testing.assert_close(model(**inputs, mm_encoder_outputs={"eeg": encoded}).logits, direct)
        with pytest.raises(ValueError, match="not both"):
            model(**inputs, **eeg, mm_encoder_outputs={"eeg": encoded})


# ---------------------------------------------------------------------------------------------
# The processor
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def processor(qwen3_tokenizer):
    return E2LLMProcessor(E2LLMFeatureExtractor(), qwen3_tokenizer)


def model_ready(windows: int, seed: int = 0) -> dict[str, np.ndarray]:
    values = np.random.default_rng(seed).standard_normal((windows, 58, 1024)).astype(np.float32) * 0.05
    return {"eeg_values": values, "eeg_channel_ids": np.broadcast_to(CHANNELS.numpy(), (windows, 58)).copy()}


def recording(seconds: float, rate: float, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((8, int(seconds * rate))) * 20.0


def test_processor_exposes_its_eeg_tokens_as_transformers_processors_do(processor):
    assert (processor.eeg_token, processor.eeg_start_token, processor.eeg_end_token) == (
        "<eeg>",
        "<eeg_start>",
        "<eeg_end>",
    )
    assert processor.eeg_token_id == EEG_TOKEN_ID == processor.tokenizer.convert_tokens_to_ids(processor.eeg_token)
    assert processor.num_eeg_tokens == 16


def test_processor_pads_on_the_left_and_saves_its_tokenizer_so(qwen3_tokenizer, tmp_path):
    tokenizer = copy.deepcopy(qwen3_tokenizer)
    tokenizer.padding_side = "right"
    processor = E2LLMProcessor(E2LLMFeatureExtractor(), tokenizer)
    out = processor(text=["<eeg>Short.", "<eeg> A longer question."], eeg=model_ready(2), padding=True)
    assert out["attention_mask"][0][0] == 0 and out["attention_mask"][0][-1] == 1
    right = processor(text=["Short.", "A longer question."], padding=True, padding_side="right")
    assert right["attention_mask"][0][-1] == 0
    processor.save_pretrained(tmp_path)
    assert AutoTokenizer.from_pretrained(tmp_path).padding_side == "left"


def test_batched_generation_from_the_processor_equals_each_prompt_alone(model, processor):
    texts = ["<eeg>Calm?", "<eeg><eeg> Which of the two is calmer, and why?"]
    ready = model_ready(3, seed=5)
    batch = processor(text=texts, eeg=ready, padding=True, return_tensors="pt")
    settings = dict(max_new_tokens=4, do_sample=False, eos_token_id=None, pad_token_id=PAD)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a right-padded batch makes generate() warn
        with torch.no_grad():
            together = model.generate(**batch, **settings)[:, -4:]
    for row, (text, windows) in enumerate(zip(texts, [slice(0, 1), slice(1, 3)])):
        alone = processor(text=text, eeg={k: v[windows] for k, v in ready.items()}, return_tensors="pt")
        with torch.no_grad():
            assert torch.equal(model.generate(**alone, **settings)[0, -4:], together[row])


def test_chat_template_takes_the_eeg_from_the_messages(processor, tmp_path):
    """An array item, a file path and model-ready windows: each item renders one <eeg> per window it
    gives, and the result is what rendering the text and calling the processor give."""
    array = recording(10.0, 256.0, seed=1)
    raw = mne.io.RawArray(recording(10.0, 200.0, seed=2) * 1e-6, mne.create_info(NAMES, 200.0, "eeg"), verbose="error")
    raw.save(tmp_path / "second_raw.fif", verbose="error")
    ready = {"eeg_values": model_ready(2)["eeg_values"][:, :8], "eeg_channel_ids": np.arange(8)}
    messages = [
        {"role": "user", "content": [
            {"type": "eeg", "eeg": array, "sampling_rate": 256, "channel_names": NAMES},
            {"type": "eeg", "path": str(tmp_path / "second_raw.fif")},
            {"type": "eeg", "eeg": ready},
            {"type": "text", "text": "Compare them."},
        ]},
    ]  # fmt: skip
    out = processor.apply_chat_template(
        messages, tokenize=True, return_dict=True, add_generation_prompt=True, return_tensors="pt"
    )

    bare = [{"role": "user", "content": [{"type": "eeg"}] * 4 + [{"type": "text", "text": "Compare them."}]}]
    text = processor.apply_chat_template(bare, tokenize=False, add_generation_prompt=True)
    extractor = processor.feature_extractor
    first = extractor(array, sampling_rate=256, channel_names=NAMES, windowing="center")
    second = extractor(mne.io.read_raw(tmp_path / "second_raw.fif", verbose="error"), windowing="center")
    eeg = {
        "eeg_values": np.concatenate([first["eeg_values"], second["eeg_values"], ready["eeg_values"]]),
        "eeg_channel_ids": np.concatenate(
            [first["eeg_channel_ids"], second["eeg_channel_ids"], np.broadcast_to(np.arange(8), (2, 8))]
        ),
    }
    expected = processor(text=text, eeg=eeg, return_tensors="pt")
    assert isinstance(out, BatchFeature) and set(out) == set(expected)
    assert torch.equal(out["input_ids"], expected["input_ids"])
    assert (out["input_ids"] == EEG_TOKEN_ID).sum() == 4 * 16
    assert torch.equal(out["eeg_channel_ids"], expected["eeg_channel_ids"])
    torch.testing.assert_close(out["eeg_values"], expected["eeg_values"])
    assert messages[0]["content"][0]["eeg"] is array  # the caller's messages are left as they were


def test_chat_template_batches_conversations_with_eeg_in_order(processor):
    conversations = [
        [{"role": "user", "content": [{"type": "eeg", "eeg": model_ready(1, seed=1)}, {"type": "text", "text": "?"}]}],
        [{"role": "user", "content": [{"type": "eeg", "eeg": model_ready(2, seed=2)}, {"type": "text", "text": "?"}]}],
    ]
    out = processor.apply_chat_template(
        conversations, tokenize=True, return_dict=True, padding=True, return_tensors="pt"
    )
    assert (out["input_ids"] == EEG_TOKEN_ID).sum(dim=1).tolist() == [16, 32]
    expected = np.concatenate([model_ready(1, seed=1)["eeg_values"], model_ready(2, seed=2)["eeg_values"]])
    np.testing.assert_array_equal(out["eeg_values"].numpy(), expected)
    assert out["attention_mask"][0][0] == 0  # left padding


def test_chat_template_keeps_eeg_passed_beside_bare_items_and_refuses_it_twice(processor):
    bare = [{"role": "user", "content": [{"type": "eeg"}, {"type": "text", "text": "?"}]}]
    out = processor.apply_chat_template(bare, tokenize=True, return_dict=True, processor_kwargs={"eeg": model_ready(1)})
    assert (np.asarray(out["input_ids"]) == EEG_TOKEN_ID).sum() == 16
    carrying = [{"role": "user", "content": [{"type": "eeg", "eeg": model_ready(1)}]}]
    with pytest.raises(ValueError, match="give it once"):
        processor.apply_chat_template(carrying, tokenize=True, processor_kwargs={"eeg": model_ready(1)})


def test_chat_template_refuses_unknown_keys_in_an_eeg_item(processor):
    messages = [{"role": "user", "content": [{"type": "eeg", "eeg": model_ready(1), "rate": 200}]}]
    with pytest.raises(ValueError, match=r"unknown keys \['rate'\]"):
        processor.apply_chat_template(messages, tokenize=True)


def test_processor_refuses_inputs_it_does_not_take(processor):
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['images'\]"):
        processor(text="<eeg>", eeg=model_ready(1), images=[np.zeros((8, 8, 3))])
    with pytest.raises(TypeError, match=r"\['audio', 'pading'\]"):
        processor(text="Hi", pading=True, audio=np.zeros(16000))
    messages = [{"role": "user", "content": [{"type": "eeg", "eeg": model_ready(1)}]}]
    with pytest.raises(TypeError, match=r"\['images'\]"):
        processor.apply_chat_template(messages, tokenize=True, processor_kwargs={"images": [np.zeros((8, 8, 3))]})
