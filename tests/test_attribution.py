"""Attribution of an answer to the input electrodes, and its scalp map."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from train.evaluation.attribution import channel_names_of, electrode_attribution, plot_attribution, reply_attribution


@pytest.fixture(scope="module")
def model_and_processor(make_tiny_e2llm):
    return make_tiny_e2llm()


@pytest.fixture(scope="module")
def eeg():
    from train.data.segments import SEGMENT_CHANNEL_IDS

    values = np.random.default_rng(0).normal(0, 0.02, (2, len(SEGMENT_CHANNEL_IDS), 1024)).astype(np.float32)
    values[:, 5] = 0.0  # one electrode carries no signal
    return {"eeg_values": values, "eeg_channel_ids": np.broadcast_to(SEGMENT_CHANNEL_IDS, values.shape[:2])}


MESSAGES = [{"role": "user", "content": [{"type": "eeg"}, {"type": "eeg"}, {"type": "text", "text": "Which emotion?"}]}]


@pytest.mark.parametrize("method", ["integrated_gradients", "gradient_x_input"])
def test_an_electrode_whose_input_is_zero_gets_zero_attribution(model_and_processor, eeg, method):
    model, processor = model_and_processor
    values = reply_attribution(model, processor, MESSAGES, eeg, "The EEG: calm.\nAnswer: neutral", method=method,
                               steps=2)  # fmt: skip
    assert values.shape == (eeg["eeg_values"].shape[1],)
    assert values[5] == 0.0
    assert np.count_nonzero(values) == len(values) - 1


def test_integrated_gradients_add_up_to_the_change_in_log_probability(model_and_processor, eeg):
    model, processor = model_and_processor
    one = [{"role": "user", "content": [{"type": "eeg"}, {"type": "text", "text": "Which emotion?"}]}]
    text = processor.apply_chat_template(one, tokenize=False, add_generation_prompt=True)
    inputs = processor(text=text, eeg={name: values[:1] for name, values in eeg.items()}, return_tensors="pt")
    target = processor.tokenizer("Answer: sad", add_special_tokens=False)["input_ids"]

    def log_probability(values):
        ids = torch.cat([inputs["input_ids"], torch.tensor([target])], dim=1)
        with torch.no_grad():
            logits = model(input_ids=ids, eeg_values=values, eeg_channel_ids=inputs["eeg_channel_ids"]).logits
        return logits[0, inputs["input_ids"].shape[1] - 1 : -1].log_softmax(-1).gather(-1, torch.tensor(target)[:, None]).sum()

    attribution = electrode_attribution(model, inputs, target, steps=12)
    change = log_probability(inputs["eeg_values"]) - log_probability(torch.zeros_like(inputs["eeg_values"]))
    assert abs(float(change)) > 1e-3
    assert attribution.sum() == pytest.approx(float(change), rel=0.1)


def test_the_scalp_map_is_drawn_at_standard_positions(tmp_path, eeg):
    names = channel_names_of(eeg["eeg_channel_ids"][0])
    assert names[:3] == ["FP1", "FPZ", "FP2"]
    values = np.linspace(-1, 1, len(names))
    figure = plot_attribution(values, names, tmp_path / "map.png", title="Answer: sad")
    assert (tmp_path / "map.png").read_bytes()[:4] == b"\x89PNG"
    assert figure.axes[0].get_title() == "Answer: sad"
    with pytest.raises(ValueError, match="values for"):
        plot_attribution(values[:-1], names)
