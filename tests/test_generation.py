"""generate() with EEG: every row of beam search, sampling and returned sequences reads its own prompt's
EEG, encoded once per prompt; inputs_embeds, chunked prefill and a compiled static cache give the same."""

import pytest
import torch
from test_modeling import CHANNELS, PAD, build_model, eeg_windows, prompt_ids
from transformers import CompileConfig

SEARCHES = {
    "beams": dict(num_beams=3, num_return_sequences=2, do_sample=False),
    "beam sampling": dict(num_beams=3, num_return_sequences=2, do_sample=True),
    "sampling": dict(num_return_sequences=2, do_sample=True),
}
ROWS_PER_PROMPT = {"beams": 3, "beam sampling": 3, "sampling": 2}


@pytest.fixture(scope="module")
def model():
    return build_model()


def first_step_logits(model, **inputs):
    """The logits generate() scores its first new token with, one row per beam or returned sequence."""
    out = model.generate(
        **inputs, max_new_tokens=2, eos_token_id=None, pad_token_id=PAD, output_logits=True,
        return_dict_in_generate=True,
    )  # fmt: skip
    return out.logits[0]


def encoder_batches(model):
    """The number of windows of each call into the EEG encoder, and the hook's handle."""
    batches = []
    handle = model.model.eeg_encoder.register_forward_hook(lambda module, args, out: batches.append(len(args[0])))
    return batches, handle


@pytest.mark.parametrize("search", SEARCHES)
@pytest.mark.parametrize("windows", [2, 3])
def test_every_row_reads_its_prompts_eeg_encoded_once(model, search, windows):
    ids = torch.tensor([prompt_ids(windows)])
    eeg = eeg_windows(windows, seed=windows)
    batches, handle = encoder_batches(model)
    try:
        with torch.no_grad():
            alone = model(input_ids=ids, eeg_values=eeg, eeg_channel_ids=CHANNELS).logits[0, -1]
            batches.clear()
            torch.manual_seed(0)
            rows = first_step_logits(model, input_ids=ids, eeg_values=eeg, eeg_channel_ids=CHANNELS, **SEARCHES[search])
    finally:
        handle.remove()
    assert batches == [windows]
    assert rows.shape == (ROWS_PER_PROMPT[search], 151936)
    for row in rows:
        torch.testing.assert_close(row, alone, atol=1e-5, rtol=1e-5)


def test_beams_of_a_padded_batch_read_their_own_prompts_windows(model):
    """Two prompts of 2 and 3 windows, left-padded, with per-window channel ids: beams 0-2 belong to the
    first prompt, 3-5 to the second, and each matches its prompt alone."""
    first, second = prompt_ids(2), prompt_ids(3)
    width = len(second)
    input_ids = torch.tensor([[PAD] * (width - len(first)) + first, second])
    eeg = eeg_windows(5, seed=7)
    channel_ids = CHANNELS.expand(5, -1)
    batches, handle = encoder_batches(model)
    try:
        with torch.no_grad():
            rows = first_step_logits(
                model, input_ids=input_ids, attention_mask=(input_ids != PAD).long(), eeg_values=eeg,
                eeg_channel_ids=channel_ids, num_beams=3, do_sample=False,
            )  # fmt: skip
            assert batches == [5]
            alone_first = model(input_ids=torch.tensor([first]), eeg_values=eeg[:2], eeg_channel_ids=CHANNELS)
            alone_second = model(input_ids=torch.tensor([second]), eeg_values=eeg[2:], eeg_channel_ids=CHANNELS)
    finally:
        handle.remove()
    assert rows.shape[0] == 6
    for row in rows[:3]:
        torch.testing.assert_close(row, alone_first.logits[0, -1], atol=1e-4, rtol=1e-4)
    for row in rows[3:]:
        torch.testing.assert_close(row, alone_second.logits[0, -1], atol=1e-4, rtol=1e-4)


def test_a_window_count_mismatch_is_refused_before_beams_are_expanded(model):
    with pytest.raises(ValueError, match="tokens: 32, features: 48"):
        model.generate(
            input_ids=torch.tensor([prompt_ids(2)]), eeg_values=eeg_windows(3), eeg_channel_ids=CHANNELS,
            num_beams=2, max_new_tokens=2,
        )  # fmt: skip


@pytest.mark.parametrize("num_beams", [1, 2])
def test_generation_from_inputs_embeds_equals_generation_from_ids(model, num_beams):
    ids = torch.tensor([prompt_ids(2)])
    eeg = dict(eeg_values=eeg_windows(2, seed=3), eeg_channel_ids=CHANNELS)
    settings = dict(max_new_tokens=4, do_sample=False, num_beams=num_beams, eos_token_id=None, pad_token_id=PAD)
    with torch.no_grad():
        from_ids = model.generate(input_ids=ids, **eeg, **settings)
        from_embeds = model.generate(inputs_embeds=model.get_input_embeddings()(ids), **eeg, **settings)
    # With inputs_embeds generate() returns only the new tokens.
    assert torch.equal(from_embeds, from_ids[:, ids.shape[1] :])


def test_chunked_prefill_fills_each_chunks_placeholders(model):
    short, long = prompt_ids(1), prompt_ids(2)
    input_ids = torch.tensor([[PAD] * (len(long) - len(short)) + short, long])
    inputs = dict(input_ids=input_ids, attention_mask=(input_ids != PAD).long(), eeg_values=eeg_windows(3),
                  eeg_channel_ids=CHANNELS)  # fmt: skip
    with torch.no_grad():
        whole = first_step_logits(model, **inputs, do_sample=False)
        chunked = first_step_logits(model, **inputs, do_sample=False, prefill_chunk_size=8)
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-5)


def test_static_cache_generation_compiles_without_graph_breaks(model):
    short, long = prompt_ids(1), prompt_ids(2)
    input_ids = torch.tensor([[PAD] * (len(long) - len(short)) + short, long])
    inputs = dict(input_ids=input_ids, attention_mask=(input_ids != PAD).long(), eeg_values=eeg_windows(3),
                  eeg_channel_ids=CHANNELS)  # fmt: skip
    settings = dict(max_new_tokens=6, do_sample=False, eos_token_id=None, pad_token_id=PAD)
    graphs = []

    def recording_backend(graph, example_inputs):
        graphs.append(graph)
        return graph.forward

    # fullgraph=True makes any graph break an error; the recording backend runs the captured graph as is.
    compile_config = CompileConfig(fullgraph=True, backend=recording_backend, mode=None)
    compile_config._compile_all_devices = True  # transformers compiles on GPUs only unless told
    torch._dynamo.reset()
    with torch.no_grad():
        eager = model.generate(**inputs, **settings)
        compiled = model.generate(**inputs, cache_implementation="static", compile_config=compile_config, **settings)
    assert len(graphs) == 1
    assert torch.equal(compiled, eager)
