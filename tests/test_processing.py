"""E2LLMProcessor: text with <eeg> placeholders + EEG -> model inputs; chat template; save/load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import mne
import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import BatchFeature, PreTrainedTokenizerFast

from processing_e2llm import EEGPT_58_CHANNELS, EEGPT_CHANNELS, E2LLMFeatureExtractor, E2LLMProcessor
from train.tokenizer import EEG_END_TOKEN_ID, EEG_START_TOKEN_ID, EEG_TOKEN_ID

NAMES = list(EEGPT_58_CHANNELS[:8])
# The recordings here are seconds long; the 0.1 Hz high-pass is longer (tested in test_feature_extraction).
pytestmark = pytest.mark.filterwarnings("ignore:The filter .* is longer than the recording")


@pytest.fixture
def processor(qwen3_tokenizer):
    return E2LLMProcessor(E2LLMFeatureExtractor(), qwen3_tokenizer)


def recording(seconds: float, rate: float = 256.0, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((8, int(seconds * rate))) * 20.0


def model_ready(windows: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(windows)
    return {
        "eeg_values": rng.standard_normal((windows, 58, 1024)).astype(np.float32),
        "eeg_channel_ids": np.broadcast_to(
            np.array([EEGPT_CHANNELS.index(c) for c in EEGPT_58_CHANNELS]), (windows, 58)
        ).copy(),
    }


def expanded_block() -> list[int]:
    return [EEG_START_TOKEN_ID] + [EEG_TOKEN_ID] * 16 + [EEG_END_TOKEN_ID]


def test_num_eeg_tokens_and_token_ids(processor):
    assert processor.num_eeg_tokens == 16
    assert (processor.eeg_token_id, processor.eeg_start_token_id, processor.eeg_end_token_id) == (
        151669,
        151670,
        151671,
    )


def test_each_placeholder_expands_to_sixteen_eeg_tokens_between_markers(processor, qwen3_tokenizer):
    out = processor(text="Hello<eeg>world<eeg>", eeg=model_ready(2))
    hello, world = qwen3_tokenizer("Hello")["input_ids"], qwen3_tokenizer("world")["input_ids"]
    assert out["input_ids"][0] == hello + expanded_block() + world + expanded_block()
    assert out["attention_mask"][0] == [1] * len(out["input_ids"][0])


def test_text_without_eeg_tokenizes_like_qwen3(processor):
    out = processor(text="Hello world")
    assert out["input_ids"] == [[9707, 1879]]
    assert "eeg_values" not in out


def test_eeg_alone_returns_only_eeg_features(processor):
    out = processor(eeg=recording(8.0), sampling_rate=256, channel_names=NAMES, return_tensors="pt")
    assert set(out) == {"eeg_values", "eeg_channel_ids"}
    assert out["eeg_values"].shape == (2, 8, 1024)


def test_raw_recording_goes_through_the_feature_extractor(processor):
    data = recording(8.5, rate=500)
    raw = mne.io.RawArray(data * 1e-6, mne.create_info(NAMES, 500, "eeg"), verbose="error")
    out = processor(text="<eeg><eeg> Which emotion?", eeg=raw, return_tensors="pt")
    direct = E2LLMFeatureExtractor()(raw, return_tensors="pt")
    assert torch.equal(out["eeg_values"], direct["eeg_values"])
    assert int((out["input_ids"] == EEG_TOKEN_ID).sum()) == 32


def test_arrays_take_sampling_rate_channel_names_and_units(processor):
    data = recording(4.0)
    in_mv = processor(text="<eeg>", eeg=data * 1e-3, sampling_rate=256, channel_names=NAMES, units="mV",
                      apply_filters=False)  # fmt: skip
    in_uv = processor(text="<eeg>", eeg=data, sampling_rate=256, channel_names=NAMES, apply_filters=False)
    np.testing.assert_allclose(in_mv["eeg_values"], in_uv["eeg_values"], rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(in_uv["eeg_values"][0], (data - data.mean(0)) * 1e-3, rtol=1e-5, atol=1e-8)


def test_model_ready_windows_pass_through_unchanged(processor):
    ready = {k: torch.from_numpy(v) for k, v in model_ready(3).items()}
    out = processor(text=["<eeg>", "<eeg><eeg>"], eeg=ready, padding=True, return_tensors="pt")
    assert out["eeg_values"] is ready["eeg_values"]
    assert out["eeg_channel_ids"] is ready["eeg_channel_ids"]


def test_batch_feature_windows_pass_through_unchanged(processor):
    ready = BatchFeature(model_ready(2))
    out = processor(text="<eeg> and <eeg>", eeg=ready)
    np.testing.assert_array_equal(out["eeg_values"], ready["eeg_values"])


def test_pass_through_accepts_one_channel_id_row_for_all_windows(processor):
    ready = model_ready(2)
    ready["eeg_channel_ids"] = ready["eeg_channel_ids"][0]
    out = processor(text="<eeg><eeg>", eeg=ready)
    assert out["eeg_channel_ids"].shape == (58,)


def test_batch_of_texts_pads_and_keeps_window_order(processor, qwen3_tokenizer):
    out = processor(
        text=["<eeg> first", "<eeg><eeg> second and longer"], eeg=model_ready(3), padding=True, return_tensors="pt"
    )
    assert out["input_ids"].shape[0] == 2
    assert (out["input_ids"] == EEG_TOKEN_ID).sum(dim=1).tolist() == [16, 32]
    assert out["attention_mask"][0].sum() < out["attention_mask"][1].sum()
    assert out["eeg_values"].shape == (3, 58, 1024)


@pytest.mark.parametrize(("text", "placeholders"), [("<eeg>", 1), ("<eeg><eeg><eeg>", 3)])
def test_refuses_placeholder_and_window_count_mismatch(processor, text, placeholders):
    with pytest.raises(ValueError, match=rf"placeholders: {placeholders}, windows: 2"):
        processor(text=text, eeg=model_ready(2))


def test_refuses_placeholders_without_eeg(processor):
    with pytest.raises(ValueError, match="placeholders: 1, windows: 0"):
        processor(text="What does this EEG show? <eeg>")


def test_refuses_text_with_expanded_markers(processor):
    with pytest.raises(ValueError, match="write one <eeg> per EEG window"):
        processor(text="<eeg_start><eeg><eeg_end>", eeg=model_ready(1))


def test_refuses_truncation_that_cuts_eeg_tokens(processor):
    with pytest.raises(ValueError, match="holds 4 <eeg> tokens; expected 16"):
        processor(text="Look: <eeg>", eeg=model_ready(1), truncation=True, max_length=8)


def test_refuses_model_ready_eeg_with_wrong_shapes(processor):
    ready = model_ready(1)
    with pytest.raises(ValueError, match=r"eeg_values must be \(windows, channels, 1024\)"):
        processor(text="<eeg>", eeg={**ready, "eeg_values": ready["eeg_values"][..., :512]})
    with pytest.raises(ValueError, match="eeg_channel_ids must be"):
        processor(text="<eeg>", eeg={**ready, "eeg_channel_ids": ready["eeg_channel_ids"][:, :10]})
    with pytest.raises(ValueError, match="needs 'eeg_values' and 'eeg_channel_ids'"):
        processor(text="<eeg>", eeg={"eeg_values": ready["eeg_values"]})


def test_chat_template_renders_chatml_with_eeg_placeholders(processor):
    messages = [
        {"role": "system", "content": [{"type": "text", "text": "You read EEG."}]},
        {"role": "user", "content": [{"type": "eeg"}, {"type": "text", "text": "Which emotion?"}]},
        {"role": "assistant", "content": "Happy."},
    ]
    rendered = processor.apply_chat_template(messages, tokenize=False)
    assert rendered == (
        "<|im_start|>system\nYou read EEG.<|im_end|>\n"
        "<|im_start|>user\n<eeg>Which emotion?<|im_end|>\n"
        "<|im_start|>assistant\nHappy.<|im_end|>\n"
    )


def test_chat_template_generation_prompt(processor):
    messages = [{"role": "user", "content": [{"type": "eeg"}, {"type": "eeg"}, {"type": "text", "text": "Compare."}]}]
    rendered = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == "<|im_start|>user\n<eeg><eeg>Compare.<|im_end|>\n<|im_start|>assistant\n"
    out = processor(text=rendered, eeg=model_ready(2))
    assert out["input_ids"][0][-3:] == [151644, 77091, 198]  # <|im_start|> assistant \n


def test_chat_template_refuses_unknown_content_types(processor):
    messages = [{"role": "user", "content": [{"type": "video"}]}]
    with pytest.raises(Exception, match="Unknown content type video"):
        processor.apply_chat_template(messages, tokenize=False)


def test_decode_and_batch_decode_drop_eeg_tokens_when_asked(processor):
    out = processor(text=["<eeg>Calm.", "Sad."], eeg=model_ready(1))
    assert processor.decode(out["input_ids"][0], skip_special_tokens=True) == "Calm."
    assert processor.batch_decode(out["input_ids"], skip_special_tokens=True) == ["Calm.", "Sad."]
    assert processor.decode(out["input_ids"][0]).startswith("<eeg_start><eeg><eeg>")


def test_model_input_names(processor):
    assert processor.model_input_names == ["input_ids", "attention_mask", "eeg_values", "eeg_channel_ids"]
    assert E2LLMFeatureExtractor.model_input_names == ["eeg_values", "eeg_channel_ids"]


def test_adds_eeg_tokens_to_a_tokenizer_that_lacks_them():
    vocab = {"[UNK]": 0, "hello": 1, "world": 2}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]")
    processor = E2LLMProcessor(E2LLMFeatureExtractor(), tokenizer)
    assert (processor.eeg_token_id, processor.eeg_start_token_id, processor.eeg_end_token_id) == (3, 4, 5)
    out = processor(text="hello <eeg> world", eeg=model_ready(1))
    assert out["input_ids"][0] == [1, 4] + [3] * 16 + [5, 2]


def test_save_and_load_through_auto_processor_in_a_fresh_offline_process(processor, tmp_path):
    folder = tmp_path / "processor"
    processor.feature_extractor.notch_freq = 60.0
    processor.save_pretrained(folder)
    config = json.loads((folder / "processor_config.json").read_text())
    assert config["auto_map"]["AutoProcessor"] == "processing_e2llm.E2LLMProcessor"
    assert config["feature_extractor"]["auto_map"]["AutoFeatureExtractor"] == "processing_e2llm.E2LLMFeatureExtractor"
    assert (folder / "processing_e2llm.py").is_file()

    data = recording(8.0, rate=500, seed=4)
    np.save(tmp_path / "data.npy", data)
    expected = processor(text="<eeg><eeg> Hi", eeg=data, sampling_rate=500, channel_names=NAMES)
    script = textwrap.dedent(
        f"""
        import json, numpy as np
        from transformers import AutoFeatureExtractor, AutoProcessor
        processor = AutoProcessor.from_pretrained({str(folder)!r}, trust_remote_code=True)
        feature_extractor = AutoFeatureExtractor.from_pretrained({str(folder)!r}, trust_remote_code=True)
        out = processor(text="<eeg><eeg> Hi", eeg=np.load({str(tmp_path / "data.npy")!r}), sampling_rate=500,
                        channel_names={NAMES!r})
        np.save({str(tmp_path / "values.npy")!r}, out["eeg_values"])
        print(json.dumps({{"class": type(processor).__module__ + "." + type(processor).__name__,
                           "notch": processor.feature_extractor.notch_freq,
                           "feature_extractor": type(feature_extractor).__name__,
                           "input_ids": out["input_ids"], "template": processor.chat_template}}))
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["class"].startswith("transformers_modules.") and loaded["class"].endswith(".E2LLMProcessor")
    assert loaded["notch"] == 60.0
    assert loaded["feature_extractor"] == "E2LLMFeatureExtractor"
    assert loaded["input_ids"] == expected["input_ids"]
    assert loaded["template"] == processor.chat_template
    np.testing.assert_array_equal(np.load(tmp_path / "values.npy"), expected["eeg_values"])
