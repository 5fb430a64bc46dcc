"""`e2llm publish`: the complete Hub folder, its offline check, and the upload against an autospec'd HfApi."""

from __future__ import annotations

import json
from pathlib import Path
from unittest.mock import create_autospec

import huggingface_hub
import pytest
import torch
from huggingface_hub import HfApi, ModelCard

from train.evaluation import publish as publishing
from train.evaluation.evaluate import score_predictions
from train.data.qa import EMOTIONS

MERGED_FILES = {
    "README.md",
    "chat_template.jinja",
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "modeling_e2llm.py",
    "processing_e2llm.py",
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
}
ADAPTER_FILES = {
    "README.md",
    "adapter_config.json",
    "adapter_model.safetensors",
    "chat_template.jinja",
    "processing_e2llm.py",
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
}


def _files(folder: Path) -> set[str]:
    return {path.name for path in folder.iterdir()}


@pytest.fixture
def no_token(monkeypatch, tmp_path):
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))


@pytest.fixture(scope="module")
def model_folder(tiny_e2llm_folder):
    return tiny_e2llm_folder


@pytest.fixture(scope="module")
def results_json(tmp_path_factory):
    """results.json as `e2llm evaluate` writes it, scored from a few hand-written predictions."""
    rows = [
        {"task": "IED", "gold": "happy", "predicted": "happy"},
        {"task": "IED", "gold": "sad", "predicted": None},
        {"task": "EPC", "gold": "more", "predicted": "more"},
        {"task": "ESR", "gold": "EEG 2", "predicted": "EEG 1"},
    ]
    path = tmp_path_factory.mktemp("eval") / "results.json"
    path.write_text(json.dumps({"name": "tiny", **score_predictions(rows, EMOTIONS)}))
    return path


@pytest.fixture(scope="module")
def published(model_folder, results_json, tmp_path_factory):
    """`e2llm publish --repo-id` run without a token: exit code and the folder it still completed.

    The offline load is checked once, by its own test, rather than inside every publish.
    """
    out = tmp_path_factory.mktemp("hub") / "e2llm-tiny"
    with pytest.MonkeyPatch.context() as patch:
        for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
            patch.delenv(name, raising=False)
        patch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(out.parent / "no-token"))
        code = publishing.main(
            ["--model", str(model_folder), "--out", str(out), "--results", str(results_json),
             "--base-model", "Qwen/Qwen3-8B", "--repo-id", "my-org/e2llm-tiny", "--no-verify"]
        )  # fmt: skip
    return code, out


def test_publish_writes_the_complete_hub_folder(published):
    _, out = published
    assert _files(out) == MERGED_FILES


def test_publish_without_a_token_fails_clearly_and_keeps_the_folder(published):
    code, out = published
    assert code == 1
    assert (out / "model.safetensors").stat().st_size > 0
    assert ModelCard.load(out / "README.md").data.base_model == "Qwen/Qwen3-8B"


def test_published_config_sends_the_auto_classes_to_the_shipped_code(published):
    _, out = published
    config = json.loads((out / "config.json").read_text())
    processor = json.loads((out / "processor_config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_e2llm.E2LLMForConditionalGeneration"
    assert config["auto_map"]["AutoConfig"] == "modeling_e2llm.E2LLMConfig"
    assert processor["auto_map"]["AutoProcessor"] == "processing_e2llm.E2LLMProcessor"


def test_published_card_carries_the_evaluation_results(published):
    _, out = published
    card = ModelCard.load(out / "README.md")
    figures = {(r.dataset_split, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert figures[("test_ied", "balanced_accuracy")] == 50.0
    assert figures[("test_multi", "accuracy")] == 100.0
    assert figures[("test_esr", "accuracy")] == 0.0
    assert "| e2llm-tiny | 100.00 | – | – | – | – | 0.00 | – | 50.00 |" in card.text


def test_published_processor_reads_seed_vii_as_the_58_training_electrodes(published):
    """SEED-VII's 62-channel layout reaches the model as exactly the trained 58, referenced over those 58;
    a bare feature extractor would keep PO5 and PO6 as well."""
    import numpy as np
    from transformers import AutoProcessor

    from processing_e2llm import CHANNEL_INDEX, EEGPT_58_CHANNELS, E2LLMFeatureExtractor, preprocess_continuous
    from train.data.seed_vii import SEED_VII_CHANNELS

    _, out = published
    # As users load it (README); transformers 5.25 loads a processor's feature extractor through
    # AutoFeatureExtractor, which asks for trust_remote_code even from E2LLMProcessor itself.
    processor = AutoProcessor.from_pretrained(out, trust_remote_code=True)
    assert processor.feature_extractor.channels == list(EEGPT_58_CHANNELS)
    eeg = np.random.default_rng(0).normal(0.0, 20.0, (len(SEED_VII_CHANNELS), 8000))  # 8 s in uV at 1000 Hz
    with pytest.warns(RuntimeWarning, match="longer than the recording"):
        inputs = processor(text="<eeg><eeg>", eeg=eeg, sampling_rate=1000, channel_names=SEED_VII_CHANNELS)
        expected, _ = preprocess_continuous(eeg, 1000, SEED_VII_CHANNELS, channels=EEGPT_58_CHANNELS)
        bare = E2LLMFeatureExtractor()(eeg, sampling_rate=1000, channel_names=SEED_VII_CHANNELS)
    trained_ids = [CHANNEL_INDEX[name] for name in EEGPT_58_CHANNELS]
    assert inputs["eeg_channel_ids"].tolist() == [trained_ids, trained_ids]
    np.testing.assert_allclose(inputs["eeg_values"][1], expected[:, 1024:2048], rtol=1e-5, atol=1e-7)
    assert bare["eeg_channel_ids"].shape == (2, 60)
    assert {"PO5", "PO6"} <= {name for name, index in CHANNEL_INDEX.items() if index in bare["eeg_channel_ids"][0]}


def test_published_folder_loads_and_generates_in_a_fresh_offline_process(published):
    _, out = published
    report = publishing.verify_folder(out)
    assert report["model_class"].startswith("transformers_modules.")
    assert report["model_class"].endswith("modeling_e2llm.E2LLMForConditionalGeneration")
    assert report["processor_class"].endswith("processing_e2llm.E2LLMProcessor")
    assert report["eeg_windows"] == 2
    assert report["new_tokens"] == 4


def test_upload_creates_the_repository_and_uploads_exactly_the_folder(published, monkeypatch):
    _, out = published
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    api = create_autospec(HfApi, instance=True)
    publishing.upload(out, "my-org/e2llm-tiny", private=True, api=api)
    api.create_repo.assert_called_once_with("my-org/e2llm-tiny", private=True, repo_type="model", exist_ok=True)
    api.upload_folder.assert_called_once()
    call = api.upload_folder.call_args.kwargs
    assert call["repo_id"] == "my-org/e2llm-tiny"
    assert call.get("allow_patterns") is None and call.get("ignore_patterns") is None
    assert _files(Path(call["folder_path"])) == MERGED_FILES


def test_upload_without_a_token_names_the_way_to_log_in(published, no_token):
    _, out = published
    api = create_autospec(HfApi, instance=True)
    with pytest.raises(publishing.UploadError, match="no Hugging Face token: log in with `hf auth login`"):
        publishing.upload(out, "my-org/e2llm-tiny", api=api)
    api.create_repo.assert_not_called()


def test_upload_without_network_says_the_folder_is_complete(published, monkeypatch):
    _, out = published
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    api = create_autospec(HfApi, instance=True)
    api.create_repo.side_effect = ConnectionError("Name or service not known")
    with pytest.raises(publishing.UploadError, match=f"The folder {out} is complete"):
        publishing.upload(out, "my-org/e2llm-tiny", api=api)
    api.upload_folder.assert_not_called()


def test_publish_refuses_to_overwrite_a_folder(published, model_folder):
    _, out = published
    with pytest.raises(ValueError, match="exists and is not empty; choose a new folder or pass --overwrite"):
        publishing.publish(model_folder, out, verify=False)


def test_publish_adapter_only_ships_the_adapter_that_loads_onto_its_base(model_folder, tmp_path):
    from modeling_e2llm import E2LLMForConditionalGeneration
    from peft import LoraConfig, PeftModel, get_peft_model

    model = E2LLMForConditionalGeneration.from_pretrained(model_folder)
    lora = LoraConfig(
        r=4, lora_alpha=8, target_modules=r".*language_model.*\.(q_proj|k_proj)", modules_to_save=["projector"]
    )
    trained = get_peft_model(model, lora)
    with torch.no_grad():
        trained.base_model.model.model.projector.modules_to_save["default"].linear_1.bias.fill_(0.5)
    stage3 = tmp_path / "stage3"
    trained.save_pretrained(stage3)

    out = publishing.publish(
        stage3, tmp_path / "adapter", adapter_only=True, adapter_base="my-org/e2llm-stage2", verify=False
    )
    assert _files(out) == ADAPTER_FILES
    loaded = PeftModel.from_pretrained(E2LLMForConditionalGeneration.from_pretrained(model_folder), out)
    assert torch.all(loaded.base_model.model.model.projector.modules_to_save["default"].linear_1.bias == 0.5)
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == "my-org/e2llm-stage2"
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "peft"
    assert 'PeftModel.from_pretrained(model, "' in card.text


def test_a_model_on_the_demo_tokenizer_publishes_and_loads_and_generates_offline(demo_tokenizer, tmp_path):
    from transformers import AutoTokenizer, Qwen3ForCausalLM

    from modeling_e2llm import EEGPTConfig, EEGPTModel
    from processing_e2llm import E2LLMFeatureExtractor, E2LLMProcessor
    from train.stages.parts import build_e2llm
    from train.stages.tiny import tiny_qwen3_config

    torch.manual_seed(0)
    language_model = Qwen3ForCausalLM(tiny_qwen3_config(demo_tokenizer))
    model = build_e2llm(EEGPTModel(EEGPTConfig.from_preset("tiny")), language_model, demo_tokenizer)
    model.save_pretrained(tmp_path / "model")
    E2LLMProcessor(E2LLMFeatureExtractor(), demo_tokenizer).save_pretrained(tmp_path / "model")

    out = publishing.publish(tmp_path / "model", tmp_path / "hub")  # verifies: loads and generates offline
    assert _files(out) == MERGED_FILES
    config = json.loads((out / "config.json").read_text())
    assert config["text_config"]["vocab_size"] == len(demo_tokenizer)
    assert config["eeg_token_id"] == demo_tokenizer.convert_tokens_to_ids("<eeg>") == len(demo_tokenizer) - 3
    assert AutoTokenizer.from_pretrained(out).get_vocab() == demo_tokenizer.get_vocab()
