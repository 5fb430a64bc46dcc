"""No code runs from a folder the user did not ask to trust, and a crafted config is refused.

A crafted model folder ships `evil.py`, which writes a marker file when imported, and points every
`auto_map` it has (config, tokenizer, processor, feature extractor) at it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from modeling_e2llm import E2LLMConfig, E2LLMForConditionalGeneration, EEGPTConfig, EEGPTForEmotionClassification, EEGPTModel

REPO = Path(__file__).resolve().parents[1]
QUIET = ["--report_to", "none", "--gradient_checkpointing", "false", "--disable_tqdm", "true"]

EVIL = """
from pathlib import Path
Path({marker!r}).write_text("code from the folder ran")
from transformers import PreTrainedTokenizerFast, Qwen3ForCausalLM
class EvilTokenizer(PreTrainedTokenizerFast):
    pass
class EvilModel(Qwen3ForCausalLM):
    pass
"""


def plant(folder: Path, marker: Path) -> None:
    """Add `evil.py` to `folder` and point each auto_map of its JSON files at it."""
    (folder / "evil.py").write_text(EVIL.format(marker=str(marker)))
    entries = {
        "config.json": {"AutoModel": "evil.EvilModel", "AutoModelForCausalLM": "evil.EvilModel"},
        "tokenizer_config.json": {"AutoTokenizer": ["evil.EvilTokenizer", "evil.EvilTokenizer"]},
        "processor_config.json": {"AutoProcessor": "evil.EvilTokenizer"},
    }
    for name, auto_map in entries.items():
        path = folder / name
        if path.exists():
            settings = json.loads(path.read_text())
            settings["auto_map"] = {**settings.get("auto_map", {}), **auto_map}
            if "feature_extractor" in settings:
                settings["feature_extractor"]["auto_map"] = {"AutoFeatureExtractor": "evil.EvilTokenizer"}
            path.write_text(json.dumps(settings))


def mentions_evil(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.is_file() and (p.name == "evil.py" or (
        p.suffix == ".json" and "evil." in p.read_text()))]  # fmt: skip


def trusting_load(code: str, folder: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    """Run `code` (with `folder` as `f`) in a fresh process, its remote-code cache in `tmp_path`."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    return subprocess.run([sys.executable, "-c", f"f = {str(folder)!r}\n" + code], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=300)  # fmt: skip


@pytest.fixture(scope="module")
def data(make_prepared) -> Path:
    return make_prepared("security-data", 8, 4, 3, 3)


@pytest.fixture
def crafted(tiny_e2llm_folder, tmp_path) -> tuple[Path, Path]:
    """(a stage-2 folder with evil.py planted, the marker its code would write)."""
    import shutil

    folder, marker = tmp_path / "crafted-stage2", tmp_path / "marker"
    shutil.copytree(tiny_e2llm_folder, folder)
    plant(folder, marker)
    return folder, marker


def test_the_crafted_folder_runs_its_code_when_trusted(crafted, tmp_path):
    folder, marker = crafted
    result = trusting_load("from transformers import AutoTokenizer\nAutoTokenizer.from_pretrained(f, trust_remote_code=True)",
                           folder, tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert marker.read_text() == "code from the folder ran"


def test_stage3_runs_no_code_from_its_stage2_folder_and_passes_none_on(crafted, data, tmp_path):
    from train.stages import stage3

    folder, marker = crafted
    out = tmp_path / "stage3"
    argv = [
        "--config", str(REPO / "train" / "recipes" / "demo" / "stage3.yaml"), "--data", str(data), "--model",
        str(folder), "--output_dir", str(out), "--max_steps", "1", "--per_device_train_batch_size", "2",
        "--max_train_samples", "2", "--lora_r", "2", "--lora_alpha", "4", *QUIET,
    ]  # fmt: skip
    assert stage3.main(argv) == 0
    assert not marker.exists()
    assert (out / "merged" / "model.safetensors").is_file()
    assert mentions_evil(out) == []
    # What stage 3 wrote loads as a user loads it, with this package's code only.
    code = "from transformers import AutoModel, AutoProcessor\nAutoProcessor.from_pretrained(f, trust_remote_code=True)\n" \
           "print(type(AutoModel.from_pretrained(f, trust_remote_code=True)).__name__)"  # fmt: skip
    result = trusting_load(code, out / "merged", tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-1] == "E2LLMForConditionalGeneration" and not marker.exists()


def test_evaluation_loads_a_crafted_folder_without_running_its_code(crafted):
    from train.evaluation.evaluate import load_for_evaluation

    folder, marker = crafted
    model, processor = load_for_evaluation(folder, "cpu", "float32")
    assert type(model).__module__ == "modeling_e2llm" and type(processor).__module__ == "processing_e2llm"
    assert type(processor.tokenizer).__module__.startswith("transformers.")
    assert not marker.exists()


def test_a_saved_config_keeps_only_auto_map_entries_into_this_package(crafted):
    folder, _ = crafted
    config = E2LLMConfig.from_pretrained(folder)
    assert config.auto_map["AutoModel"] == "modeling_e2llm.E2LLMForConditionalGeneration"
    assert all(value.split("--")[-1].startswith("modeling_e2llm.") for value in config.auto_map.values())
    hub = E2LLMConfig(auto_map={"AutoModel": "org/e2llm--modeling_e2llm.E2LLMForConditionalGeneration"})
    assert hub.auto_map["AutoModel"] == "org/e2llm--modeling_e2llm.E2LLMForConditionalGeneration"


@pytest.fixture
def crafted_llm(tmp_path) -> tuple[Path, Path]:
    """A tiny Qwen3 folder whose config and tokenizer point at evil.py."""
    from transformers import Qwen3ForCausalLM

    from train.stages.tiny import tiny_qwen3_config
    from train.tokenizer import build_qwen3_tokenizer

    folder, marker = tmp_path / "llm", tmp_path / "marker"
    Qwen3ForCausalLM(tiny_qwen3_config()).save_pretrained(folder)
    build_qwen3_tokenizer().save_pretrained(folder)
    plant(folder, marker)
    return folder, marker


def test_the_language_model_runs_code_it_ships_only_with_trust_remote_code(crafted_llm, tmp_path):
    from train.stages.parts import load_language_model
    from train.stages.stage2 import parse_arguments

    folder, marker = crafted_llm
    model, _ = load_language_model(str(folder))
    assert type(model).__name__ == "Qwen3ForCausalLM" and not marker.exists()
    _, training_args, _ = parse_arguments(["--data", "d", "--output_dir", str(tmp_path), "--trust-remote-code"])
    assert training_args.trust_remote_code is True
    assert parse_arguments(["--data", "d", "--output_dir", str(tmp_path)])[1].trust_remote_code is False
    code = "from train.stages.parts import load_language_model\n" \
           "print(type(load_language_model(f, trust_remote_code=True)[0]).__name__)"  # fmt: skip
    result = trusting_load(code, folder, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-1] == "EvilModel" and marker.exists()


# Configuration values


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("depth", 100000, "EEGPTConfig.depth must be from 1 to 256, got 100000"),
        ("depth", -3, "EEGPTConfig.depth must be from 1 to 256, got -3"),
        ("num_heads", 0, "EEGPTConfig.num_heads must be from 1 to 1024, got 0"),
        ("embed_dim", "64", "EEGPTConfig.embed_dim must be an integer, got '64' \\(str\\)"),
        ("embed_num", 2.0, "EEGPTConfig.embed_num must be an integer, got 2.0"),
        ("patch_size", True, "EEGPTConfig.patch_size must be an integer, got True"),
        ("mlp_ratio", float("nan"), "EEGPTConfig.mlp_ratio must be above 0"),
        ("layer_norm_eps", 0, "EEGPTConfig.layer_norm_eps must be above 0"),
        ("input_scale", -1.0, "EEGPTConfig.input_scale must be above 0"),
        ("qkv_bias", "yes", "EEGPTConfig.qkv_bias must be true or false"),
        ("channel_names", ["FP1", "FP1"], "EEGPTConfig.channel_names must name at least one electrode, each once"),
        ("channel_names", "FP1", "EEGPTConfig.channel_names must be a list of electrode names"),
    ],
)
def test_eegpt_config_refuses_a_value_of_the_wrong_type_or_range_naming_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        EEGPTConfig.from_preset("tiny", **{field: value})


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("eeg_token_id", -1, "E2LLMConfig.eeg_token_id must be from 0 to 151935, got -1"),
        ("eeg_start_token_id", 151936, "E2LLMConfig.eeg_start_token_id must be from 0 to 151935"),
        ("eeg_end_token_id", "151671", "E2LLMConfig.eeg_end_token_id must be an integer"),
        ("eeg_end_token_id", 151669, "eeg_token_id, eeg_start_token_id and eeg_end_token_id must differ"),
        ("projector_hidden_act", "gelu2", "E2LLMConfig.projector_hidden_act must be one of .*'gelu'"),
        ("projector_bias", 1, "E2LLMConfig.projector_bias must be true or false"),
    ],
)
def test_e2llm_config_refuses_a_value_of_the_wrong_type_or_range_naming_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        E2LLMConfig(**{field: value})


def test_a_crafted_config_json_is_refused_before_any_model_is_built(tmp_path):
    torch.manual_seed(0)
    EEGPTForEmotionClassification(EEGPTConfig.from_preset("tiny", num_labels=7)).save_pretrained(tmp_path)
    settings = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**settings, "depth": 100000}))
    with pytest.raises(ValueError, match="EEGPTConfig.depth must be from 1 to 256, got 100000"):
        EEGPTForEmotionClassification.from_pretrained(tmp_path)
    model = E2LLMForConditionalGeneration.from_parts(EEGPTModel(EEGPTConfig.from_preset("tiny")), _tiny_qwen3())
    model.save_pretrained(tmp_path / "e2llm")
    settings = json.loads((tmp_path / "e2llm" / "config.json").read_text())
    settings["eeg_config"]["num_heads"] = 0
    (tmp_path / "e2llm" / "config.json").write_text(json.dumps(settings))
    with pytest.raises(ValueError, match="EEGPTConfig.num_heads must be from 1 to 1024, got 0"):
        E2LLMForConditionalGeneration.from_pretrained(tmp_path / "e2llm")


def _tiny_qwen3():
    from transformers import Qwen3ForCausalLM

    from train.stages.tiny import tiny_qwen3_config

    return Qwen3ForCausalLM(tiny_qwen3_config())
