"""The real path at reduced width: the Qwen3-4B recipes on a bfloat16 Qwen3, stage 2 -> stage 3 -> publish.

The language model is a tiny Qwen3 saved in bfloat16 (as Qwen3 checkpoints ship) with the real
tokenizer, the encoder random EEGPT weights in the official checkpoint format (the "without stage 1"
path), the data one synthetic subject. Stages 2 and 3 run the Qwen3-4B recipe files with only the
data, the paths, the steps, the sample counts and the shard size changed on the command line: on
this CPU the recipes' `bf16: true` falls back with a warning. Checked: the dtype policy (every
tensor of stage 2's output, stage 3's `merged/` and the Hub folder in bfloat16, config.json's
`dtype` saying so, the adapter in float32), sharding, checkpoints without frozen weights, resume
from one, the merge check, and a fresh-process `AutoModel` load of the Hub folder.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "train" / "recipes" / "qwen3-4b"
SHARD = "5MB"  # the tiny model's 19 MB embedding alone is over it: several files
PROJECTOR = {f"model.projector.{name}" for name in ("linear_1.weight", "linear_1.bias", "linear_2.weight", "linear_2.bias")}
DEPRECATIONS = ("`gradient_checkpointing` is deprecated", "`is_gradient_checkpointing` is deprecated")


def tensors(folder: Path) -> dict[str, str]:
    """Every tensor's dtype (safetensors' name: BF16, F32) over the folder's safetensors files."""
    dtypes = {}
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(path, "pt") as file:
            dtypes.update({key: file.get_slice(key).get_dtype() for key in file.keys()})
    return dtypes


@pytest.fixture(scope="module")
def data(make_prepared) -> Path:
    return make_prepared("real-path-data", 16, 12, 4, 2)


@pytest.fixture(scope="module")
def parts(make_parts) -> tuple[Path, Path]:
    """(official-format EEGPT checkpoint, bfloat16 Qwen3 folder with the offline tokenizer)."""
    return make_parts("real-path-parts", "qwen3", torch.bfloat16)


def stage2_argv(data: Path, parts, out: Path, *extra: str) -> list[str]:
    encoder, llm = parts
    return [
        "--config", str(RECIPES / "stage2.yaml"), "--data", str(data), "--encoder", str(encoder),
        "--encoder_preset", "tiny", "--llm", str(llm), "--output_dir", str(out), "--max_steps", "4",
        "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1", "--max_train_samples", "8",
        "--save_steps", "2", "--train_crop", "center", "--dataloader_num_workers", "0", "--learning_rate", "1e-2",
        "--max_shard_size", SHARD, "--disable_tqdm", "true", *extra,
    ]  # fmt: skip


def run_recording_warnings(main, argv) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(argv) == 0
    return [str(warning.message) for warning in caught]


@pytest.fixture(scope="module")
def stage2_run(data, parts, tmp_path_factory) -> tuple[Path, list[str]]:
    from train.stages import stage2

    out = tmp_path_factory.mktemp("real-stage2")
    return out, run_recording_warnings(stage2.main, stage2_argv(data, parts, out))


@pytest.fixture(scope="module")
def stage3_run(data, stage2_run, tmp_path_factory) -> tuple[Path, list[str]]:
    from train.stages import stage3

    out = tmp_path_factory.mktemp("real-stage3")
    argv = [
        "--config", str(RECIPES / "stage3.yaml"), "--data", str(data), "--model", str(stage2_run[0]),
        "--output_dir", str(out), "--max_steps", "4", "--per_device_train_batch_size", "2",
        "--gradient_accumulation_steps", "1", "--max_train_samples", "8", "--save_steps", "2",
        "--dataloader_num_workers", "0", "--learning_rate", "1e-2", "--max_shard_size", SHARD,
        "--merge_check_samples", "2", "--merge_check_new_tokens", "8", "--disable_tqdm", "true",
    ]  # fmt: skip
    return out, run_recording_warnings(stage3.main, argv)


@pytest.fixture(scope="module")
def hub(stage3_run, tmp_path_factory) -> Path:
    from train.evaluation import publish

    out = tmp_path_factory.mktemp("real-hub") / "e2llm-qwen3-4b"
    assert publish.main(["--model", str(stage3_run[0]), "--out", str(out), "--max-shard-size", SHARD, "--no-verify"]) == 0
    return out


# The recipes on a machine without bf16


def test_the_4b_recipe_falls_back_from_bf16_autocast_with_a_warning_naming_the_override(stage2_run):
    _, caught = stage2_run
    assert any("`bf16: true`" in message and "--bf16 false" in message for message in caught)


def test_asking_for_bf16_on_the_command_line_without_a_bf16_gpu_names_the_override(data, parts, tmp_path):
    from train.stages import stage2

    with pytest.raises(ValueError, match=r"--bf16 true asks for bfloat16 autocast.*`--bf16 false`.*`--use_cpu true`"):
        stage2.main(stage2_argv(data, parts, tmp_path, "--bf16", "true"))


def test_the_recipes_raise_no_checkpointing_deprecation(stage2_run, stage3_run):
    for _, caught in (stage2_run, stage3_run):
        assert not [message for message in caught if message.startswith(DEPRECATIONS)]


# Stage 2


def test_stage2_saves_every_tensor_in_bfloat16_as_its_config_says(stage2_run):
    out, _ = stage2_run
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    dtypes = tensors(out)
    assert PROJECTOR <= dtypes.keys() and any(key.startswith("model.eeg_encoder.") for key in dtypes)
    assert set(dtypes.values()) == {"BF16"}


def test_stage2_output_is_sharded_at_the_size_asked(stage2_run):
    out, _ = stage2_run
    shards = sorted(out.glob("model-*.safetensors"))
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(shards) > 1 and not (out / "model.safetensors").exists()
    assert set(index["weight_map"].values()) == {path.name for path in shards}
    embedding = 151936 * 64 * 2
    assert sorted(path.stat().st_size for path in shards)[-2] < 5e6 < embedding


def test_stage2_config_carries_the_tokenizers_special_token_ids(stage2_run):
    out, caught = stage2_run
    text_config = json.loads((out / "config.json").read_text())["text_config"]
    generation = json.loads((out / "generation_config.json").read_text())
    assert text_config["pad_token_id"] == generation["pad_token_id"] == 151643
    assert text_config["eos_token_id"] == 151645 and generation["eos_token_id"][0] == 151645


def test_stage2_checkpoints_hold_the_projector_in_float32_and_no_frozen_weight(stage2_run):
    from train.stages.trainer import TRAINABLE_WEIGHTS

    out, _ = stage2_run
    checkpoints = sorted(out.glob("checkpoint-*"))
    assert [path.name for path in checkpoints] == ["checkpoint-2", "checkpoint-4"]
    for checkpoint in checkpoints:
        weights = load_file(checkpoint / TRAINABLE_WEIGHTS)
        assert set(weights) == PROJECTOR and {value.dtype for value in weights.values()} == {torch.float32}
        assert not list(checkpoint.glob("model*.safetensors")) and (checkpoint / "optimizer.pt").is_file()
        total = sum(path.stat().st_size for path in checkpoint.iterdir())
        assert total < sum(path.stat().st_size for path in out.glob("model-*.safetensors")) / 2


def test_stage2_resumes_from_a_light_checkpoint_and_matches_the_uninterrupted_run(data, parts, stage2_run, tmp_path, monkeypatch):
    from train.stages import stage2
    from train.stages.trainer import AnswerLossSFTTrainer

    real_compute_loss = AnswerLossSFTTrainer.compute_loss

    def interrupted(self, *args, **kwargs):
        if self.state.global_step == 3:
            raise KeyboardInterrupt
        return real_compute_loss(self, *args, **kwargs)

    monkeypatch.setattr(AnswerLossSFTTrainer, "compute_loss", interrupted)
    with pytest.raises(KeyboardInterrupt):
        stage2.main(stage2_argv(data, parts, tmp_path))
    monkeypatch.setattr(AnswerLossSFTTrainer, "compute_loss", real_compute_loss)
    assert [path.name for path in tmp_path.glob("checkpoint-*")] == ["checkpoint-2"]
    assert stage2.main(stage2_argv(data, parts, tmp_path, "--resume", "true")) == 0

    straight = load_file(stage2_run[0] / "checkpoint-4" / "trainable_parameters.safetensors")
    resumed = load_file(tmp_path / "checkpoint-4" / "trainable_parameters.safetensors")
    for key in PROJECTOR:
        torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=1e-6)


def test_a_checkpoint_of_other_trainable_weights_is_refused(data, parts, stage2_run, tmp_path):
    import shutil

    from safetensors.torch import save_file

    from train.stages import stage2

    shutil.copytree(stage2_run[0] / "checkpoint-2", tmp_path / "checkpoint-2")
    save_file({"model.projector.linear_1.weight": torch.zeros(1)}, tmp_path / "checkpoint-2" / "trainable_parameters.safetensors")
    with pytest.raises(ValueError, match="lacks .*model.projector.linear_1.bias.*resume with the recipe"):
        stage2.main(stage2_argv(data, parts, tmp_path, "--resume", "true"))


def test_the_stage_folders_card_loads_the_model_with_eeg_not_a_text_pipeline(stage2_run):
    readme = (stage2_run[0] / "README.md").read_text()
    assert "[None]" not in readme and "pipeline(" not in readme
    assert "AutoProcessor.from_pretrained" in readme and '{"type": "eeg"}' in readme


# Stage 3


def test_stage3_adapter_and_its_checkpoints_hold_float32_lora_and_projector_only(stage3_run):
    out, _ = stage3_run
    for folder in (out, *sorted(out.glob("checkpoint-*"))):
        weights = load_file(folder / "adapter_model.safetensors")
        assert {value.dtype for value in weights.values()} == {torch.float32}
        assert all(".lora_" in key or ".projector." in key for key in weights)
        assert not list(folder.glob("model*.safetensors"))
    assert len(list(out.glob("checkpoint-*"))) == 2


def test_stage3_merges_into_a_bfloat16_model_sharded_as_asked(stage3_run):
    merged = stage3_run[0] / "merged"
    assert json.loads((merged / "config.json").read_text())["dtype"] == "bfloat16"
    assert set(tensors(merged).values()) == {"BF16"}
    assert len(list(merged.glob("model-*.safetensors"))) > 1


def test_stage3_records_the_merge_check_within_its_threshold(stage3_run):
    out, _ = stage3_run
    report = json.loads((out / "merge_check.json").read_text())
    assert report == json.loads((out / "merged" / "merge_check.json").read_text())
    assert report["passed"] and report["logit_error"] <= report["max_error"] == 0.1
    assert report["stage3_max_abs_logit_change"] > 10 * report["max_abs_logit_difference"] > 0
    assert report["argmax_agreement"] >= 0.9 and report["answer_positions"] > 20
    assert 0 < report["weight_update_error"] < 0.5
    assert report["samples"] == 2 and len(report["greedy_answers"]) == 2 and report["merged_dtype"] == "bfloat16"


def test_the_merged_weights_are_the_float32_sum_rounded_once(stage3_run, stage2_run):
    out, _ = stage3_run
    merged, before = load_file_all(out / "merged"), load_file_all(stage2_run[0])
    adapter = load_file(out / "adapter_model.safetensors")
    config = json.loads((out / "adapter_config.json").read_text())
    scale = config["lora_alpha"] / config["r"]
    key = "model.language_model.layers.0.self_attn.q_proj"
    a, b = adapter[f"base_model.model.{key}.lora_A.weight"], adapter[f"base_model.model.{key}.lora_B.weight"]
    exact = before[f"{key}.weight"].float() + scale * (b @ a)
    assert torch.equal(merged[f"{key}.weight"], exact.to(torch.bfloat16))


def load_file_all(folder: Path) -> dict[str, torch.Tensor]:
    weights = {}
    for path in folder.glob("*.safetensors"):
        weights.update(load_file(path))
    return weights


def test_evaluation_of_the_stage3_folder_loads_the_checked_merge_as_stored(stage3_run):
    from train.evaluation.evaluate import load_for_evaluation

    model, processor = load_for_evaluation(stage3_run[0], "cpu", "auto")
    assert type(model).__name__ == "E2LLMForConditionalGeneration" and processor is not None
    assert {parameter.dtype for parameter in model.parameters()} == {torch.bfloat16}


# Publish


def test_the_hub_folder_is_bfloat16_sharded_and_says_so(hub):
    config = json.loads((hub / "config.json").read_text())
    assert config["dtype"] == "bfloat16"
    assert set(tensors(hub).values()) == {"BF16"}
    assert len(list(hub.glob("model-*.safetensors"))) > 1 and (hub / "model.safetensors.index.json").is_file()
    card = (hub / "README.md").read_text()
    assert "Stored in bfloat16" in card and "safetensors files" in card
    assert "compared with base + adapter on 2 samples" in card and "within the threshold 0.1" in card


def test_the_hub_folder_loads_in_a_fresh_process_in_bfloat16_and_generates(hub):
    from train.evaluation.publish import verify_folder

    report = verify_folder(hub)
    assert report["model_class"].endswith("modeling_e2llm.E2LLMForConditionalGeneration")
    assert report["dtypes"] == ["bfloat16"] and report["new_tokens"] == 4


def test_a_merge_that_fails_its_check_publishes_the_adapter_instead(stage3_run, tmp_path, capsys):
    import shutil

    from train.evaluation import publish

    stage3 = tmp_path / "stage3"
    shutil.copytree(stage3_run[0], stage3, ignore=shutil.ignore_patterns("checkpoint-*"))
    report = json.loads((stage3 / "merged" / "merge_check.json").read_text())
    (stage3 / "merged" / "merge_check.json").write_text(json.dumps({**report, "max_error": 1e-6, "passed": False}))
    out = publish.publish(stage3, tmp_path / "hub", adapter_base="my-org/e2llm-stage2", verify=False)
    assert "publishing the adapter instead" in capsys.readouterr().err
    assert (out / "adapter_model.safetensors").is_file() and not list(out.glob("model*.safetensors"))
    assert "holds the adapter instead" in (out / "README.md").read_text()


# The merge check itself


def test_the_merge_check_fails_an_update_below_bfloat16s_rounding_step(stage2_run, data):
    from peft import LoraConfig, get_peft_model
    from transformers import set_seed
    from trl import ModelConfig

    from train.stages.config import E2LLMScriptArguments
    from train.stages.merge import check_merge, peft_wrapping
    from train.stages.stage2 import build_datasets
    from train.stages.stage3 import LANGUAGE_MODEL_QK, load_starting_point

    set_seed(0)
    script_args = E2LLMScriptArguments(data=str(data), model=str(stage2_run[0]))
    base, processor = load_starting_point(script_args, ModelConfig(dtype="bfloat16"))
    with peft_wrapping():
        adapted = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=LANGUAGE_MODEL_QK, modules_to_save=["projector"]))
    with torch.no_grad():
        for name, parameter in adapted.named_parameters():
            if "lora_B" in name:
                parameter.fill_(1e-4)  # updates of about 1e-4, where bfloat16 steps by 2e-3 near weights of 0.5
    qa, _, collator = build_datasets(script_args, processor, base, 0)
    merged, report = check_merge(adapted, processor, collator, [qa[0]], max_new_tokens=4, max_error=0.1)
    assert not report["passed"] and report["logit_error"] > 0.1
    assert {parameter.dtype for parameter in merged.parameters()} == {torch.bfloat16}
