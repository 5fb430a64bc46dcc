"""Training stages 1-3 and the demo's LM warm-up, run end to end at a tiny size on synthetic data.

One synthetic subject (10 s clips) is prepared once for the module; every stage runs its real
`main(argv)` on it, with the demo recipes where a run stands for the demo.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from modeling_e2llm import E2LLMForConditionalGeneration, EEGPTConfig, EEGPTForEmotionClassification, EEGPTModel

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "train" / "recipes"
QUIET = ["--report_to", "none", "--activation_checkpointing", "false", "--disable_tqdm", "true"]


@pytest.fixture(scope="module")
def data(make_prepared) -> Path:
    return make_prepared("training-data", 24, 12, 6, 3)


def stage1_args(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--config", str(RECIPES / "demo" / "stage1.yaml"), "--data", str(data), "--output_dir", str(out),
        "--num_train_epochs", "2", "--max_train_segments", "32", "--per_device_train_batch_size", "16",
        "--per_device_eval_batch_size", "32", "--validation_fraction", "0.2", "--disable_tqdm", "true", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def stage1_dir(data, tmp_path_factory) -> Path:
    from train.stages import stage1

    out = tmp_path_factory.mktemp("stage1")
    with pytest.warns(UserWarning, match="random weights"):
        assert stage1.main(stage1_args(data, out)) == 0
    return out


@pytest.fixture(scope="module")
def llm_dir(tmp_path_factory) -> Path:
    """A tiny random Qwen3 saved as a local folder, as `--llm` takes it.

    Initialised with a large spread so that its outputs depend on its inputs strongly enough for
    the projector alone to steer them (at Qwen3's 0.02 every next-token distribution is flat).
    """
    from transformers import Qwen3ForCausalLM

    from train.stages.tiny import tiny_qwen3_config
    from train.tokenizer import build_qwen3_tokenizer

    out = tmp_path_factory.mktemp("llm")
    torch.manual_seed(0)
    Qwen3ForCausalLM(tiny_qwen3_config(initializer_range=0.5)).save_pretrained(out)
    build_qwen3_tokenizer().save_pretrained(out)
    return out


def stage2_args(data, encoder, llm, out, *extra: str) -> list[str]:
    return [
        "--config", str(RECIPES / "demo" / "stage2.yaml"), "--data", str(data), "--encoder", str(encoder),
        "--llm", str(llm), "--output_dir", str(out), "--max_steps", "2", "--per_device_train_batch_size", "2",
        "--max_train_samples", "4", "--span_code_weight", "0", *QUIET, *extra,
    ]  # fmt: skip  (llm_dir is no warm-up: no span codes to pull the projector towards)


@pytest.fixture(scope="module")
def stage2_dir(data, stage1_dir, llm_dir, tmp_path_factory) -> Path:
    from train.stages import stage2

    out = tmp_path_factory.mktemp("stage2")
    assert stage2.main(stage2_args(data, stage1_dir, llm_dir, out)) == 0
    return out


@pytest.fixture(scope="module")
def stage3_dir(data, stage2_dir, tmp_path_factory) -> Path:
    from train.stages import stage3

    out = tmp_path_factory.mktemp("stage3")
    argv = [
        "--config", str(RECIPES / "demo" / "stage3.yaml"), "--data", str(data), "--model", str(stage2_dir),
        "--output_dir", str(out), "--max_steps", "2", "--per_device_train_batch_size", "2",
        "--max_train_samples", "4", "--lora_r", "4", "--lora_alpha", "8", *QUIET,
    ]  # fmt: skip
    assert stage3.main(argv) == 0
    return out


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def log_losses(output_dir: Path) -> list[float]:
    (state,) = output_dir.glob("checkpoint-*/trainer_state.json")
    return [entry["loss"] for entry in json.loads(state.read_text())["log_history"] if "loss" in entry]


# Stage 1


def epoch_records(output_dir: Path) -> list[dict]:
    state = json.loads((output_dir / "trainer_state.json").read_text())
    return [entry for entry in state["log_history"] if "eval_balanced_accuracy" in entry]


def last_checkpoint_dir(output_dir: Path) -> Path:
    return max(output_dir.glob("checkpoint-*"), key=lambda path: int(path.name.split("-")[1]))


def test_stage1_saves_the_best_encoder_with_its_labels_and_history(stage1_dir):
    model = EEGPTForEmotionClassification.from_pretrained(stage1_dir)
    assert (stage1_dir / "model.safetensors").is_file()
    assert model.config.id2label[0] == "happy" and model.config.num_labels == 7
    records = epoch_records(stage1_dir)
    assert [record["epoch"] for record in records] == [1, 2]
    scores = [record["eval_balanced_accuracy"] for record in records]
    assert all(0.0 <= score <= 1.0 for score in scores)
    state = json.loads((stage1_dir / "trainer_state.json").read_text())
    assert state["best_metric"] == max(scores)
    # The saved encoder is the best epoch's: scored again, it gives the best epoch's figure.
    assert json.loads((stage1_dir / "eval_results.json").read_text())["eval_balanced_accuracy"] == max(scores)


def test_stage1_trains_with_adamw_and_a_full_one_cycle_schedule(data, tmp_path):
    from train.stages import stage1

    args, training_args = stage1.parse_arguments(stage1_args(data, tmp_path, "--num_train_epochs", "3"))
    train_rows, _, _ = stage1.build_datasets(args, training_args.seed)
    model = stage1.build_classifier(args)
    optimizer, scheduler = stage1.build_optimizers(model, args, training_args, len(train_rows))
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["weight_decay"] == 0.01
    # 32 training segments (besides the held-out fifth) in batches of 16: 2 steps an epoch.
    assert len(train_rows) == 32 and scheduler.total_steps == 6
    assert training_args.load_best_model_at_end and training_args.metric_for_best_model == "balanced_accuracy"
    assert stage1.main(stage1_args(data, tmp_path, "--num_train_epochs", "3")) == 0
    state = json.loads((tmp_path / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    rates = [entry["learning_rate"] for entry in state["log_history"] if "learning_rate" in entry]
    assert rates[-1] < 1e-3 * 2e-3  # annealed to the end of the cycle, not stopped half-way


def test_stage1_computes_attention_as_the_recipe_names_it(data, tmp_path):
    from train.stages import stage1

    args, _ = stage1.parse_arguments(stage1_args(data, tmp_path, "--attn_implementation", "eager"))
    model = stage1.build_classifier(args)
    assert model.config._attn_implementation == "eager" == model.eegpt.config._attn_implementation
    args.attn_implementation = None  # the field's default
    assert stage1.build_classifier(args).config._attn_implementation == "sdpa"  # transformers' choice


def test_stage1_recipes_fall_back_from_bf16_autocast_with_a_warning_where_it_is_not_available(data, tmp_path):
    from train.stages import stage1
    from train.stages.stage2 import bf16_autocast_available

    if bf16_autocast_available():
        pytest.skip("this machine has a bf16-capable GPU: the recipe's bf16 stands")
    argv = ["--config", str(RECIPES / "qwen3-4b" / "stage1.yaml"), "--data", str(data), "--output_dir", str(tmp_path)]
    with pytest.warns(UserWarning, match=r"`bf16: true`.*--bf16 false"):
        _, training_args = stage1.parse_arguments(argv)
    assert training_args.bf16 is False
    _, training_args = stage1.parse_arguments([*argv, "--bf16", "true", "--use_cpu", "true"])
    assert training_args.bf16 is True and training_args.use_cpu


def test_stage1_stops_at_max_steps(data, tmp_path):
    from train.stages import stage1

    assert stage1.main(stage1_args(data, tmp_path, "--max_steps", "3")) == 0
    state = json.loads((tmp_path / "trainer_state.json").read_text())
    assert state["global_step"] == 3 and (tmp_path / "model.safetensors").is_file()


def test_stage1_can_also_learn_the_measured_features_and_saves_the_encoder_without_their_head(data, tmp_path):
    from train.data.claims import CLAIMABLE
    from train.stages import stage1
    from train.stages.parts import load_segments

    segments = load_segments(data)["train"]
    targets = stage1.segment_feature_targets(segments)
    assert len(targets) == len(segments)
    for row in (0, len(segments) - 1):
        expected = [segments[row][name] for name in CLAIMABLE]
        np.testing.assert_allclose(targets[segments[row]["id"]], expected, rtol=1e-6)
    with pytest.raises(ValueError, match="measured feature columns"):
        stage1.segment_feature_targets(segments.remove_columns(list(CLAIMABLE[:2])))

    argv = stage1_args(data, tmp_path, "--feature_loss_weight", "2.0", "--per_device_eval_batch_size", "1000")
    assert stage1.main(argv) == 0
    assert not any(key.startswith("feature_head") for key in load_file(tmp_path / "model.safetensors"))
    history = json.loads((tmp_path / "trainer_state.json").read_text())["log_history"]
    assert sum("feature_mse" in record for record in history) == 2  # logged every epoch, as the loss is
    assert sum("eval_feature_mse" in record for record in history) >= 2
    # The loss is the emotions' cross-entropy plus the weighted feature error: the saved model
    # (without the feature head) gives the cross-entropy of the reported evaluation loss.
    results = json.loads((tmp_path / "eval_results.json").read_text())
    args, training_args = stage1.parse_arguments(argv)
    _, validation, store = stage1.build_datasets(args, training_args.seed)
    model = EEGPTForEmotionClassification.from_pretrained(tmp_path).eval()
    batch = stage1.EmotionWindowCollator(store, crop="center")(list(validation))
    with torch.no_grad():
        cross_entropy = model(**batch).loss.item()
    assert results["eval_feature_mse"] > 0.05
    assert results["eval_loss"] == pytest.approx(cross_entropy + 2.0 * results["eval_feature_mse"], abs=2e-3)


def test_stage1_eval_rows_take_the_centred_crop_and_training_rows_a_random_one(data):
    from train.stages import stage1

    args, training_args = stage1.parse_arguments(stage1_args(data, Path("unused")))
    train_rows, validation_rows, store = stage1.build_datasets(args, training_args.seed)
    collator = stage1.EmotionWindowCollator(store)
    rows = [validation_rows[0], train_rows[0]]
    segments = store.segments_of([row["id"] for row in rows])
    torch.manual_seed(0)
    first = collator(rows)
    second = collator(rows)
    middle = (segments.shape[-1] - 1024) // 2
    assert first["eeg_values"].shape == (2, 58, 1024) and first["channel_ids"].shape == (2, 58)
    assert first["labels"].tolist() == [rows[0]["label"], rows[1]["label"]]
    assert np.array_equal(first["eeg_values"][0].numpy(), segments[0][:, middle : middle + 1024])
    assert torch.equal(first["eeg_values"][0], second["eeg_values"][0])
    assert not torch.equal(first["eeg_values"][1], second["eeg_values"][1])
    torch.manual_seed(0)
    assert torch.equal(collator(rows)["eeg_values"], first["eeg_values"])  # crops follow torch's generator


def test_stage1_loads_an_official_eegpt_checkpoint(data, tmp_path):
    from train.stages import stage1

    torch.manual_seed(1)
    encoder = EEGPTModel(EEGPTConfig.from_preset("tiny"))
    lightning = {"state_dict": {f"target_encoder.{k}": v for k, v in encoder.state_dict().items()}}
    lightning["state_dict"]["predictor.mask_token"] = torch.zeros(1)
    torch.save(lightning, tmp_path / "eegpt.ckpt")
    argv = stage1_args(data, tmp_path / "out", "--encoder", str(tmp_path / "eegpt.ckpt"), "--learning_rate", "0")
    argv += ["--num_train_epochs", "1"]
    assert stage1.main(argv) == 0
    trained = EEGPTForEmotionClassification.from_pretrained(tmp_path / "out").eegpt.state_dict()
    assert all(torch.equal(trained[key], value) for key, value in encoder.state_dict().items())


def interrupt_at_second_evaluation(monkeypatch):
    """Make `Trainer.evaluate` raise at its second call: the first epoch's checkpoint is written, the second's not."""
    from transformers import Trainer

    real_evaluate, calls = Trainer.evaluate, []

    def interrupted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_evaluate(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "evaluate", interrupted)
    return lambda: monkeypatch.setattr(Trainer, "evaluate", real_evaluate)


def test_stage1_resumes_after_an_interruption_and_matches_an_uninterrupted_run(data, tmp_path, monkeypatch):
    from train.stages import stage1

    def argv(out: str, *extra: str) -> list[str]:  # the last checkpoint is kept beside the best to compare it
        return stage1_args(data, tmp_path / out, "--num_train_epochs", "3", "--save_total_limit", "2", *extra)

    assert stage1.main(argv("straight")) == 0
    restore = interrupt_at_second_evaluation(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        stage1.main(argv("resumed"))
    restore()
    assert [path.name for path in (tmp_path / "resumed").glob("checkpoint-*")] == ["checkpoint-2"]
    assert stage1.main(argv("resumed", "--resume", "true")) == 0

    assert last_checkpoint_dir(tmp_path / "resumed").name == "checkpoint-6"
    straight = weights(last_checkpoint_dir(tmp_path / "straight"))
    resumed = weights(last_checkpoint_dir(tmp_path / "resumed"))
    assert straight.keys() == resumed.keys()
    assert all(torch.allclose(straight[key], resumed[key], atol=1e-6) for key in straight)
    losses = [[record["eval_loss"] for record in epoch_records(tmp_path / run)] for run in ("straight", "resumed")]
    assert len(losses[1]) == 3
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)


class _WritesMarker:
    """Unpickled, creates the file at `path`: what a crafted checkpoint file would do."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_stage1_resume_never_unpickles_code_from_the_checkpoint(data, tmp_path, monkeypatch):
    """Trainer's resume reads safetensors, JSON and `torch.load(weights_only=True)`: a crafted pickle in
    any of the checkpoint's torch files is refused (or never read), and the code in it never runs."""
    import pickle
    import shutil

    from train.stages import stage1

    marker = tmp_path / "pwned"
    torch.save(_WritesMarker(marker), tmp_path / "crafted.pt")
    torch.load(tmp_path / "crafted.pt", weights_only=False)  # the crafted file does run code when unpickled
    assert marker.exists()
    marker.unlink()

    out = tmp_path / "out"
    restore = interrupt_at_second_evaluation(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        stage1.main(stage1_args(data, out, "--num_train_epochs", "2"))
    restore()
    checkpoint = last_checkpoint_dir(out)
    genuine = tmp_path / "genuine"
    shutil.copytree(checkpoint, genuine)
    torch_files = ["optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin", "pytorch_model.bin"]
    assert {"optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin"} <= {p.name for p in checkpoint.iterdir()}
    for name in torch_files:
        shutil.copy(tmp_path / "crafted.pt", checkpoint / name)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        stage1.main(stage1_args(data, out, "--num_train_epochs", "2", "--resume", "true"))
    assert not marker.exists()

    # Restored, the files resume reads let it finish; the crafted ones it does not read stay unread.
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
        shutil.copy(genuine / name, checkpoint / name)
    assert stage1.main(stage1_args(data, out, "--num_train_epochs", "2", "--resume", "true")) == 0
    assert not marker.exists()
    assert len(epoch_records(out)) == 2


def test_a_random_encoder_takes_the_initial_weight_spread_it_is_given():
    from train.stages.parts import load_eeg_encoder

    with pytest.warns(UserWarning, match="random weights"):
        default = load_eeg_encoder(None, "tiny", 100.0)
        wide = load_eeg_encoder(None, "tiny", 100.0, initializer_range=0.1)
    assert default.config.initializer_range == 0.02 and wide.config.initializer_range == 0.1
    for model, std in ((default, 0.02), (wide, 0.1)):
        for weight in (model.patch_embed.proj.weight, model.blocks[0].attn.qkv.weight, model.chan_embed.weight):
            assert abs(float(weight.std()) - std) < 0.15 * std
    assert wide.config.input_scale == 100.0


def test_stage1_refuses_a_missing_data_folder(tmp_path):
    from train.stages import stage1

    with pytest.raises(ValueError, match="No prepared segments at"):
        stage1.main(stage1_args(tmp_path / "nowhere", tmp_path / "out"))


def test_stage1_refuses_a_checkpoint_of_another_size(data, tmp_path):
    from train.stages import stage1

    torch.save({"state_dict": {f"target_encoder.{k}": v for k, v in EEGPTModel(EEGPTConfig.from_preset("tiny")).state_dict().items()}}, tmp_path / "tiny.ckpt")  # fmt: skip
    with pytest.raises(ValueError, match="encoder_preset 'little'.*shape mismatches"):
        stage1.main(stage1_args(data, tmp_path / "out", "--encoder", str(tmp_path / "tiny.ckpt"), "--encoder_preset", "little"))


# Stage 2


def test_stage2_changes_only_the_projector(stage2_dir, stage1_dir, llm_dir):
    trained = weights(stage2_dir)
    encoder = weights(stage1_dir)
    language_model = weights(llm_dir)
    for key, value in trained.items():
        if key.startswith("model.eeg_encoder."):
            assert torch.equal(value, encoder["eegpt." + key.removeprefix("model.eeg_encoder.")]), key
        elif key.startswith("model.language_model."):
            assert torch.equal(value, language_model["model." + key.removeprefix("model.language_model.")]), key
        else:
            assert key.startswith("model.projector."), key
    assert {k.removeprefix("model.projector.") for k in trained if k.startswith("model.projector.")} == {
        "linear_1.weight", "linear_1.bias", "linear_2.weight", "linear_2.bias",
    }  # fmt: skip


def test_stage2_projector_moves_away_from_its_initialisation(data, stage2_dir, stage1_dir, llm_dir):
    from transformers import set_seed
    from trl import ModelConfig

    from train.stages.config import E2LLMScriptArguments
    from train.stages.stage2 import build_model_and_processor

    set_seed(0)  # the demo recipe's seed: the same draw as the run's projector
    script_args = E2LLMScriptArguments(data=str(data), encoder=str(stage1_dir), llm=str(llm_dir))
    initial, _ = build_model_and_processor(script_args, ModelConfig())
    trained = weights(stage2_dir)
    for name, value in initial.model.projector.state_dict().items():
        assert not torch.equal(trained["model.projector." + name], value), name


def test_stage2_output_loads_with_automodel_and_its_processor(stage2_dir):
    code = (
        "from transformers import AutoModel, AutoProcessor;"
        f"m = AutoModel.from_pretrained({str(stage2_dir)!r}, trust_remote_code=True);"
        f"p = AutoProcessor.from_pretrained({str(stage2_dir)!r}, trust_remote_code=True);"
        "print(type(m).__name__, type(p).__name__, p.num_eeg_tokens, len(p.feature_extractor.channels))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=stage2_dir,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    # The processor keeps the 58 electrodes the model was trained on.
    assert result.stdout.split() == ["E2LLMForConditionalGeneration", "E2LLMProcessor", "16", "58"]


def test_stage2_loss_falls_when_overfitting_a_handful_of_samples(data, stage1_dir, llm_dir, tmp_path):
    from train.stages import stage2

    argv = stage2_args(data, stage1_dir, llm_dir, tmp_path, "--max_steps", "10", "--max_train_samples", "2",
                       "--learning_rate", "3e-2", "--lr_scheduler_type", "constant", "--train_crop", "center",
                       "--logging_steps", "1", "--save_strategy", "steps", "--save_steps", "10")  # fmt: skip
    assert stage2.main(argv) == 0
    losses = log_losses(tmp_path)
    assert len(losses) == 10
    assert sum(losses[-2:]) / 2 < 0.93 * sum(losses[:2]) / 2


def test_stage2_resumes_after_an_interruption_and_matches_an_uninterrupted_run(data, stage1_dir, llm_dir, tmp_path, monkeypatch):
    from train.stages import stage2
    from train.stages.trainer import AnswerLossSFTTrainer

    def argv(out, *extra):
        return stage2_args(data, stage1_dir, llm_dir, out, "--max_steps", "4", "--save_strategy", "steps",
                           "--save_steps", "2", "--train_crop", "center", *extra)  # fmt: skip

    assert stage2.main(argv(tmp_path / "straight")) == 0
    real_compute_loss = AnswerLossSFTTrainer.compute_loss

    def interrupted(self, *args, **kwargs):
        if self.state.global_step == 3:
            raise KeyboardInterrupt
        return real_compute_loss(self, *args, **kwargs)

    monkeypatch.setattr(AnswerLossSFTTrainer, "compute_loss", interrupted)
    with pytest.raises(KeyboardInterrupt):
        stage2.main(argv(tmp_path / "resumed"))
    monkeypatch.setattr(AnswerLossSFTTrainer, "compute_loss", real_compute_loss)
    assert [p.name for p in (tmp_path / "resumed").glob("checkpoint-*")] == ["checkpoint-2"]
    assert stage2.main(argv(tmp_path / "resumed", "--resume", "true")) == 0

    straight, resumed = weights(tmp_path / "straight"), weights(tmp_path / "resumed")
    for key in (k for k in straight if k.startswith("model.projector.")):
        assert torch.allclose(straight[key], resumed[key], atol=1e-6), key


def test_stage2_refuses_qa_sets_from_another_preparation(data, stage1_dir, llm_dir, tmp_path):
    from datasets import load_from_disk

    from train.stages import stage2

    other = tmp_path / "prepared"
    load_from_disk(str(data / "segments")).map(lambda row: {"id": "x" + row["id"]}).save_to_disk(str(other / "segments"))
    load_from_disk(str(data / "qa")).save_to_disk(str(other / "qa"))
    with pytest.raises(ValueError, match="segment\\(s\\) not in .*same `e2llm prepare` run"):
        stage2.main(stage2_args(other, stage1_dir, llm_dir, tmp_path / "out"))


def test_stage2_refuses_a_missing_language_model_folder(data, stage1_dir, tmp_path):
    from train.stages import stage2

    with pytest.raises(ValueError, match="Language model folder not found"):
        stage2.main(stage2_args(data, stage1_dir, tmp_path / "no-such-llm", tmp_path / "out"))


def _qwen3_snapshot(folder: Path, tied: bool) -> dict[str, torch.Tensor]:
    """A tiny Qwen3 saved with a tokenizer that, like a Qwen3 snapshot's, has no EEG tokens; returns its weights."""
    from transformers import Qwen3ForCausalLM

    from train.stages.tiny import tiny_qwen3_config
    from train.tokenizer import EEG_TOKENS, build_qwen3_tokenizer

    torch.manual_seed(0)
    Qwen3ForCausalLM(tiny_qwen3_config(tie_word_embeddings=tied)).save_pretrained(folder)
    build_qwen3_tokenizer().save_pretrained(folder)
    backend = json.loads((folder / "tokenizer.json").read_text())
    backend["added_tokens"] = [t for t in backend["added_tokens"] if t["content"] not in EEG_TOKENS]
    (folder / "tokenizer.json").write_text(json.dumps(backend))
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("extra_special_tokens", None)
    decoder = config.get("added_tokens_decoder", {})
    config["added_tokens_decoder"] = {k: v for k, v in decoder.items() if v["content"] not in EEG_TOKENS}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return weights(folder)


@pytest.mark.parametrize("tied", [True, False])
def test_a_qwen3_without_eeg_tokens_gets_them_with_the_mean_embedding_as_new_tokens(tmp_path, tied):
    """<eeg_start>/<eeg_end> start as transformers starts new tokens: the mean of the trained rows (those
    below the new ids), in the input embedding and in an untied head; nothing else moves."""
    from train.stages.parts import load_language_model
    from train.tokenizer import EEG_END_TOKEN_ID, EEG_START_TOKEN_ID, EEG_TOKEN_ID, EEG_TOKENS

    saved = _qwen3_snapshot(tmp_path, tied)
    model, tokenizer = load_language_model(str(tmp_path))
    assert tokenizer.convert_tokens_to_ids(list(EEG_TOKENS)) == [EEG_TOKEN_ID, EEG_START_TOKEN_ID, EEG_END_TOKEN_ID]
    delimiters = [EEG_START_TOKEN_ID, EEG_END_TOKEN_ID]
    untouched = torch.ones(model.config.vocab_size, dtype=torch.bool)
    untouched[delimiters] = False
    layers = {"model.embed_tokens.weight": model.get_input_embeddings().weight}
    if not tied:
        layers["lm_head.weight"] = model.get_output_embeddings().weight
    for name, weight in layers.items():
        before = saved[name]
        mean = before[:EEG_TOKEN_ID].mean(0)
        torch.testing.assert_close(weight[delimiters], mean.expand(2, -1))
        assert torch.equal(weight[untouched], before[untouched])
        assert not torch.allclose(before[EEG_START_TOKEN_ID], mean)


def test_a_language_model_whose_tokenizer_has_the_eeg_tokens_keeps_its_rows(llm_dir):
    """The demo's warmed-up Qwen3 learned its delimiter rows: loading it changes nothing."""
    from train.stages.parts import load_language_model

    model, _ = load_language_model(str(llm_dir))
    assert torch.equal(model.get_input_embeddings().weight, weights(llm_dir)["model.embed_tokens.weight"])


def test_a_tokenizer_whose_eeg_tokens_fall_outside_the_embedding_is_refused(qwen3_tokenizer):
    from train.stages.parts import build_processor

    with pytest.raises(ValueError, match="fall outside the language model's 151669 embedding rows"):
        build_processor(qwen3_tokenizer, vocab_size=151669)


def test_data_with_channels_outside_the_encoder_vocabulary_is_refused():
    from train.data.segments import SEGMENT_CHANNEL_IDS
    from train.stages.parts import check_channels

    with pytest.raises(ValueError, match="the encoder knows 32 channels"):
        check_channels(EEGPTConfig.from_preset("tiny", channel_names=[f"C{i}" for i in range(32)]), SEGMENT_CHANNEL_IDS)


# Stage 3


def test_stage3_adapter_config_is_the_papers_lora_on_the_language_models_q_and_k(stage3_dir):
    config = json.loads((stage3_dir / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["lora_dropout"]) == (4, 8, 0.05)
    assert config["target_modules"] == r"model\.language_model\.layers\.\d+\.self_attn\.(q_proj|k_proj)"
    assert config["modules_to_save"] == ["projector"]


def test_stage3_adapter_holds_only_lora_and_projector_weights(stage3_dir):
    keys = load_file(stage3_dir / "adapter_model.safetensors").keys()
    lora = {k for k in keys if ".lora_" in k}
    assert lora and all(".language_model.layers." in k and (".q_proj." in k or ".k_proj." in k) for k in lora)
    assert {k for k in keys - lora} == {
        f"base_model.model.model.projector.{name}"
        for name in ("linear_1.weight", "linear_1.bias", "linear_2.weight", "linear_2.bias")
    }


def test_stage3_merged_model_differs_from_stage2_only_in_q_k_and_projector(stage3_dir, stage2_dir):
    merged, before = weights(stage3_dir / "merged"), weights(stage2_dir)
    assert merged.keys() == before.keys()
    changed = {key for key in merged if not torch.equal(merged[key], before[key])}
    adapted = {k for k in merged if k.endswith(("q_proj.weight", "k_proj.weight")) and ".language_model." in k}
    projector = {k for k in merged if k.startswith("model.projector.")}
    assert changed <= adapted | projector
    assert adapted <= changed and projector & changed


def test_stage3_merged_model_loads_offline_with_automodel_and_generates(stage3_dir):
    merged = stage3_dir / "merged"
    code = f"""
import torch
from transformers import AutoModel, AutoProcessor
model = AutoModel.from_pretrained({str(merged)!r}, trust_remote_code=True)
processor = AutoProcessor.from_pretrained({str(merged)!r}, trust_remote_code=True)
messages = [{{"role": "user", "content": [{{"type": "eeg"}}, {{"type": "text", "text": "Which emotion?"}}]}}]
text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
eeg = {{"eeg_values": torch.zeros(1, 58, 1024), "eeg_channel_ids": torch.arange(58)}}
inputs = processor(text=text, eeg=eeg, return_tensors="pt")
out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
print(type(model).__name__, out.shape[1] - inputs["input_ids"].shape[1])
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=merged,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["E2LLMForConditionalGeneration", "3"]


def test_stage3_refuses_both_a_stage2_model_and_parts(data, stage2_dir, llm_dir, tmp_path):
    from train.stages import stage3

    argv = ["--data", str(data), "--model", str(stage2_dir), "--llm", str(llm_dir), "--output_dir", str(tmp_path), *QUIET]
    with pytest.raises(ValueError, match="either `model`.*or `encoder` and `llm`"):
        stage3.main(argv)


def test_stage3_lora_pattern_matches_only_the_language_models_q_and_k():
    import re

    from transformers import Qwen3ForCausalLM

    from train.stages.stage3 import LANGUAGE_MODEL_QK
    from train.stages.tiny import tiny_qwen3_config

    model = E2LLMForConditionalGeneration.from_parts(
        EEGPTModel(EEGPTConfig.from_preset("tiny")), Qwen3ForCausalLM(tiny_qwen3_config())
    )
    matched = [name for name, _ in model.named_modules() if re.fullmatch(LANGUAGE_MODEL_QK, name)]
    assert matched == [f"model.language_model.layers.{i}.self_attn.{p}" for i in range(2) for p in ("q_proj", "k_proj")]


def test_span_code_distance_is_zero_at_the_codes_and_relative_to_their_norm():
    from train.stages.lm_warmup import span_code_distance

    table = torch.randn(5, 8)
    codes = torch.tensor([[1.0, 0.0, 0.5, 0.0, -2.0], [0.0, 1.0, 0.0, 0.0, 0.0]])
    targets = codes @ table
    tokens = targets[:, None].expand(2, 3, 8).clone()
    assert span_code_distance(tokens, codes, table).item() == pytest.approx(0.0, abs=1e-6)
    shifted = tokens + torch.tensor([1.0] + [0.0] * 7)
    expected = 1.0 / targets.pow(2).sum(-1).mean()
    assert span_code_distance(shifted, codes, table).item() == pytest.approx(expected.item(), rel=1e-5)


def test_stage2_of_the_demo_pulls_the_projector_towards_the_warm_ups_span_codes(data, stage1_dir, llm_dir, tmp_path):
    from train.stages import lm_warmup, stage2

    warm = tmp_path / "lm-warmup"
    assert lm_warmup.main([
        "--config", str(RECIPES / "demo" / "lm_warmup.yaml"), "--data", str(data), "--output_dir", str(warm),
        "--max_steps", "2", "--warmup_steps", "0", "--max_train_samples", "16", *QUIET,
    ]) == 0  # fmt: skip
    table, features, scores = lm_warmup.load_span_codes(warm)
    recipe = yaml.safe_load((RECIPES / "demo" / "lm_warmup.yaml").read_text())
    assert (features, scores) == (recipe["eeg_span_features"], recipe["eeg_span_scores"])
    assert table.shape[0] == lm_warmup.span_code_count(scores)

    argv = stage2_args(data, stage1_dir, warm, tmp_path / "stage2", "--max_steps", "12", "--span_code_weight", "1",
                       "--learning_rate", "3e-2", "--lr_scheduler_type", "constant", "--logging_steps", "1",
                       "--train_crop", "center", "--save_strategy", "steps", "--save_steps", "12")  # fmt: skip
    assert stage2.main(argv) == 0
    history = json.loads(next((tmp_path / "stage2").glob("checkpoint-*/trainer_state.json")).read_text())["log_history"]
    distances = [record["span_code_distance"] for record in history if "span_code_distance" in record]
    assert len(distances) == 12
    assert sum(distances[-3:]) < 0.5 * sum(distances[:3])  # the projector learns to write the codes
    # Without a warm-up's codes the option says what it needs.
    with pytest.raises(ValueError, match="span_codes.safetensors"):
        stage2.main(stage2_args(data, stage1_dir, llm_dir, tmp_path / "none", "--span_code_weight", "1"))


# Demo LM warm-up


def test_lm_warmup_trains_a_tiny_qwen3_on_the_task_texts(data, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from train.stages import lm_warmup

    argv = [
        "--config", str(RECIPES / "demo" / "lm_warmup.yaml"), "--data", str(data), "--output_dir", str(tmp_path),
        "--max_steps", "8", "--learning_rate", "1e-2", "--warmup_steps", "0",
        "--logging_steps", "1", "--save_strategy", "steps", "--save_steps", "8", *QUIET,
    ]  # fmt: skip
    assert lm_warmup.main(argv) == 0
    losses = log_losses(tmp_path)
    assert sum(losses[-2:]) / 2 < 0.9 * sum(losses[:2]) / 2
    model = AutoModelForCausalLM.from_pretrained(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    recipe = yaml.safe_load((RECIPES / "demo" / "lm_warmup.yaml").read_text())
    assert type(model).__name__ == "Qwen3ForCausalLM" and model.config.hidden_size == recipe["hidden_size"]
    assert "demo-only" in (tmp_path / "README.md").read_text()
    # Its own vocabulary, learned from the texts: their words are single tokens, the EEG tokens come last.
    assert model.config.vocab_size == len(tokenizer) <= recipe["vocab_size"]
    size = len(tokenizer)
    assert tokenizer.convert_tokens_to_ids(["<eeg>", "<eeg_start>", "<eeg_end>"]) == [size - 3, size - 2, size - 1]
    assert tokenizer.tokenize("\nAnswer:") == ["Ċ", "Answer", ":"]
    assert (model.config.eos_token_id, model.config.pad_token_id) == (tokenizer.eos_token_id, tokenizer.pad_token_id)
    assert model.config.use_cache  # generates with its KV cache, as a pretrained Qwen3 does
    # The recipe's span codes were trained with it and are kept beside it, not in it.
    from safetensors import safe_open

    with safe_open(tmp_path / lm_warmup.SPAN_CODES_FILE, "pt") as codes:
        count = lm_warmup.span_code_count(recipe["eeg_span_scores"])
        assert codes.get_tensor("weight").shape == (count, recipe["hidden_size"])
        assert codes.metadata() == {"eeg_span_features": "true", "eeg_span_scores": str(recipe["eeg_span_scores"]).lower()}
    with safe_open(tmp_path / "model.safetensors", "pt") as weights:
        assert not [key for key in weights.keys() if "span" in key]
    # Its check verdicts on the held-out questions, teacher-forced, are measured and kept.
    checks = json.loads((tmp_path / lm_warmup.CHECKS_FILE).read_text())
    assert checks["checks"] > 0 and 0 <= checks["right"] <= checks["checks"]
    assert checks["accuracy"] == round(100 * checks["right"] / checks["checks"], 1)


def test_lm_warmup_takes_logits_at_the_answer_positions_only(data, tmp_path, monkeypatch):
    """The warm-up trains through the stages' trainer: the LM head scores only the positions whose
    next token is part of the answer, never the whole padded batch."""
    from transformers import Qwen3ForCausalLM

    from train.stages import lm_warmup

    calls, forward = [], Qwen3ForCausalLM.forward

    def spy(self, *args, **kwargs):
        output = forward(self, *args, **kwargs)
        if torch.is_grad_enabled():  # training steps, not the held-out check verdicts read after them
            calls.append((kwargs.get("logits_to_keep"), kwargs["attention_mask"], output.logits.shape))
        return output

    monkeypatch.setattr(Qwen3ForCausalLM, "forward", spy)
    argv = [
        "--config", str(RECIPES / "demo" / "lm_warmup.yaml"), "--data", str(data), "--output_dir", str(tmp_path),
        "--max_steps", "2", "--warmup_steps", "0", *QUIET,
    ]  # fmt: skip
    assert lm_warmup.main(argv) == 0
    assert calls
    for keep, attention_mask, shape in calls:
        assert keep.dtype == torch.bool and keep.shape == attention_mask.shape
        assert 0 < keep.sum() < attention_mask.sum()  # the prompts carry no loss
        assert shape[:-1].numel() == keep.sum()


def test_lm_warmup_reads_the_tasks_it_is_told_to_repeat_that_many_times():
    from datasets import Dataset

    from train.stages.lm_warmup import parse_task_repeats, repeat_tasks

    qa = Dataset.from_dict({"id": ["a", "b", "c", "d"], "task": ["IED", "EIM", "ESS", "EIM"]})
    assert parse_task_repeats(None) == parse_task_repeats("") == {}
    assert parse_task_repeats(" EIM=2, ESS=3 ") == {"EIM": 2, "ESS": 3}
    assert repeat_tasks(qa, {"EIM": 2, "ESS": 3})["id"] == ["a", "b", "b", "c", "c", "c", "d", "d"]
    assert repeat_tasks(qa, {}) is qa
    with pytest.raises(ValueError, match="unknown task 'EMI'.*IED, EPC, ESS, EIM, ESR"):
        parse_task_repeats("EMI=2")
    for bad in ("EIM", "EIM=0", "EIM=two"):
        with pytest.raises(ValueError, match="TASK=N"):
            parse_task_repeats(bad)


def test_lm_warmup_steps_are_random_draws_whose_micro_batches_are_sorted_by_length():
    from train.stages.lm_warmup import StepSortedSampler

    lengths = [int(n) for n in torch.randint(10, 400, (50,), generator=torch.Generator().manual_seed(1))]
    sampler = StepSortedSampler(lengths, step_size=8, seed=3)
    first = list(sampler)
    assert sorted(first) == list(range(50)) and len(sampler) == 50
    steps = [first[i : i + 8] for i in range(0, 50, 8)]
    assert all([lengths[i] for i in step] == sorted(lengths[i] for i in step) for step in steps)
    shuffled = torch.randperm(50, generator=torch.Generator().manual_seed(3)).tolist()
    assert [set(step) for step in steps] == [set(shuffled[i : i + 8]) for i in range(0, 50, 8)]
    assert list(StepSortedSampler(lengths, step_size=8, seed=3)) == first
    sampler.set_epoch(1)
    assert list(sampler) != first
    with pytest.raises(ValueError, match="step_size"):
        StepSortedSampler(lengths, step_size=0)


def test_lm_warmup_check_verdicts_read_the_model_at_every_verdict_of_the_gold_answers(data, qwen3_tokenizer):
    from datasets import load_from_disk
    from types import SimpleNamespace

    from processing_e2llm import E2LLMFeatureExtractor, E2LLMProcessor
    from train.stages.lm_warmup import chat_texts, check_verdicts

    processor = E2LLMProcessor(E2LLMFeatureExtractor(), qwen3_tokenizer)
    qa = load_from_disk(str(data / "qa"))["train"].filter(lambda task: task != "IED", input_columns="task")
    texts = chat_texts(qa, processor)
    completions = "".join(texts["completion"])
    fits, does_not = completions.count("so it fits"), completions.count("so it does not fit")
    assert fits and does_not

    class Always(torch.nn.Module):
        """Next-token logits that always favour one word's first token."""

        def __init__(self, word):
            super().__init__()
            self.embed = torch.nn.Embedding(len(qwen3_tokenizer), 4)
            self.favoured = qwen3_tokenizer.encode(word, add_special_tokens=False)[0]

        def get_input_embeddings(self):
            return self.embed

        def forward(self, inputs_embeds):
            logits = torch.zeros(*inputs_embeds.shape[:2], len(qwen3_tokenizer))
            logits[..., self.favoured] = 1.0
            return SimpleNamespace(logits=logits)

    says_fits = check_verdicts(Always(" fits"), qwen3_tokenizer, texts)
    assert (says_fits["checks"], says_fits["right"], says_fits["fits_checks"]) == (fits + does_not, fits, fits)
    assert (says_fits["fits_accuracy"], says_fits["does_not_fit_accuracy"]) == (100.0, 0.0)
    assert says_fits["accuracy"] == round(100 * fits / (fits + does_not), 1)
    says_does = check_verdicts(Always(" does"), qwen3_tokenizer, texts)
    assert says_does["right"] == does_not and says_does["does_not_fit_accuracy"] == 100.0
    # The restated EIM scenarios: "fits" starts none of them; a model that knows each next token
    # starts every one rightly.
    restated = sum(len(re.findall(r"(?:^|\n)[ABC]\. \S", completion)) for completion in texts["completion"])
    assert restated >= 3 and restated % 3 == 0
    assert (says_fits["restated"], says_fits["restated_right"], says_fits["restated_accuracy"]) == (restated, 0, 0.0)

    class Oracle(torch.nn.Module):
        """Next-token logits that favour the token that does come next (the ids ride in the embeddings)."""

        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding.from_pretrained(torch.arange(len(qwen3_tokenizer), dtype=torch.float32)[:, None])

        def get_input_embeddings(self):
            return self.embed

        def forward(self, inputs_embeds):
            ids = inputs_embeds[..., 0].round().long()
            logits = torch.zeros(*ids.shape, len(qwen3_tokenizer))
            logits[:, :-1].scatter_(2, ids[:, 1:, None], 1.0)
            return SimpleNamespace(logits=logits)

    knows = check_verdicts(Oracle(), qwen3_tokenizer, texts)
    assert (knows["restated"], knows["restated_right"], knows["restated_accuracy"]) == (restated, restated, 100.0)
    assert knows["accuracy"] == 100.0


def test_lm_warmup_writes_each_eeg_span_as_its_segments_emotion(data, qwen3_tokenizer):
    from datasets import load_from_disk

    from processing_e2llm import E2LLMFeatureExtractor, E2LLMProcessor
    from train.stages.lm_warmup import chat_texts, segment_span_words

    processor = E2LLMProcessor(E2LLMFeatureExtractor(), qwen3_tokenizer)
    qa = load_from_disk(str(data / "qa"))["train"].select(range(8))
    segments = load_from_disk(str(data / "segments"))["train"]
    emotions = dict(zip(segments["id"], segments["emotion"]))
    texts = chat_texts(qa, processor, segment_span_words(segments, features=False))
    for row, text in zip(qa, texts):
        spans = re.findall(r"<eeg_start>(.*?)<eeg_end>", text["prompt"])
        assert spans == [f" {emotions[segment]}" * 16 for segment in row["segment_ids"]]
        assert "<eeg>" not in text["prompt"]
        assert text["completion"].endswith(f"Answer: {row['answer']}<|im_end|>")
    bare = chat_texts(qa, processor)
    assert all(t["prompt"].count("<eeg>") == 16 * len(r["segment_ids"]) for r, t in zip(qa, bare))


def test_lm_warmup_spans_can_carry_the_salient_measured_features_the_explanations_state(data, qwen3_tokenizer):
    from datasets import load_from_disk

    from processing_e2llm import E2LLMFeatureExtractor, E2LLMProcessor
    from train.data.claims import claim_words, read_explanation, salient_claims
    from train.data.features import FEATURE_NAMES
    from train.stages.lm_warmup import chat_texts, segment_span_words

    processor = E2LLMProcessor(E2LLMFeatureExtractor(), qwen3_tokenizer)
    qa = load_from_disk(str(data / "qa"))["train"].select(range(8))
    segments = load_from_disk(str(data / "segments"))["train"]
    words = segment_span_words(segments, features=True)
    columns = segments.select_columns(["id", "emotion", *FEATURE_NAMES]).to_dict()
    row_of = {segment: row for row, segment in enumerate(columns["id"])}
    stated = 0
    for row, text in zip(qa, chat_texts(qa, processor, words)):
        spans = re.findall(r"<eeg_start>(.*?)<eeg_end>", text["prompt"])
        stated_claims = read_explanation(text["completion"])
        for number, (segment, span) in enumerate(zip(row["segment_ids"], spans), start=1):
            claims = salient_claims({name: columns[name][row_of[segment]] for name in FEATURE_NAMES})
            assert sorted(stated_claims.get(number, []), key=str) == sorted(claims, key=str)
            expected = [columns["emotion"][row_of[segment]], *claim_words(claims)]
            assert span.split() == [expected[i % len(expected)] for i in range(16)]
            stated += len(claims)
    assert stated > 0


def test_lm_warmup_span_codes_fill_every_slot_of_an_eeg_item_with_the_sum_of_its_codes(data, qwen3_tokenizer):
    from datasets import load_from_disk

    from processing_e2llm import EEG_TOKEN, E2LLMFeatureExtractor, E2LLMProcessor
    from train.data.claims import CLAIMABLE, salient_claims
    from train.data.features import FEATURE_NAMES
    from train.data.qa import EMOTIONS
    from train.stages.lm_warmup import SpanCodeCollator, chat_texts, fill_span_codes, segment_span_codes, span_code_count

    processor = E2LLMProcessor(E2LLMFeatureExtractor(), qwen3_tokenizer)
    qa = load_from_disk(str(data / "qa"))["train"].select(range(6))
    segments = load_from_disk(str(data / "segments"))["train"]
    codes = segment_span_codes(segments, features=True)
    columns = segments.select_columns(["id", "emotion", *FEATURE_NAMES]).to_dict()
    scored = segment_span_codes(segments, features=True, scores=True)
    emotion_only = segment_span_codes(segments, features=False)
    for row, segment in enumerate(columns["id"][:20]):
        claims = salient_claims({name: columns[name][row] for name in FEATURE_NAMES})
        expected = [EMOTIONS.index(columns["emotion"][row])]
        expected += [len(EMOTIONS) + 2 * CLAIMABLE.index(c.feature) + (c.direction > 0) for c in claims]
        assert len(codes[segment]) == span_code_count()
        assert [i for i, weight in enumerate(codes[segment]) if weight] == sorted(expected)
        assert {codes[segment][i] for i in expected} == {1.0}
        assert [i for i, weight in enumerate(emotion_only[segment]) if weight] == expected[:1]
        # With scores: the emotion's code, then every claimable feature weighted by its z-score (clipped).
        assert len(scored[segment]) == span_code_count(scores=True) == len(EMOTIONS) + len(CLAIMABLE)
        assert scored[segment][: len(EMOTIONS)] == emotion_only[segment][: len(EMOTIONS)]
        z = np.clip([columns[name][row] for name in CLAIMABLE], -3, 3)
        np.testing.assert_allclose(scored[segment][len(EMOTIONS) :], z, rtol=1e-6)
    texts = chat_texts(qa, processor, segment_codes=codes)
    assert [t["eeg_codes"] for t in texts] == [[codes[s] for s in r["segment_ids"]] for r in qa]
    with pytest.raises(ValueError, match="either in words or as codes"):
        chat_texts(qa, processor, {s: ["sad"] for s in codes}, codes)

    def pad(examples):
        ids = [e["input_ids"] for e in examples]
        width = max(map(len, ids))
        return {"input_ids": torch.tensor([i + [0] * (width - len(i)) for i in ids])}

    eeg = qwen3_tokenizer.convert_tokens_to_ids(EEG_TOKEN)
    examples = [{"input_ids": processor.tokenizer(t["prompt"])["input_ids"], "eeg_codes": t["eeg_codes"]} for t in texts]
    batch = SpanCodeCollator(pad)(examples)
    assert batch["eeg_codes"].shape[:2] == (6, max(len(r["segment_ids"]) for r in qa))
    table = torch.nn.Embedding(span_code_count(), 8)
    embeds = torch.zeros(*batch["input_ids"].shape, 8)
    filled = fill_span_codes(embeds, batch["input_ids"], batch["eeg_codes"], table, eeg, 16)
    assert batch["eeg_codes"].dtype == torch.float32
    for b, text in enumerate(texts):
        slots = (batch["input_ids"][b] == eeg).nonzero().flatten()
        assert len(slots) == 16 * len(text["eeg_codes"])
        for item, weights in enumerate(text["eeg_codes"]):
            expected = (torch.tensor(weights)[:, None] * table.weight).sum(0)
            assert torch.allclose(filled[b, slots[16 * item : 16 * (item + 1)]], expected.expand(16, 8))
        others = torch.ones(batch["input_ids"].shape[1], dtype=torch.bool)
        others[slots] = False
        assert filled[b, others].abs().sum() == 0
    filled.sum().backward()
    assert table.weight.grad.abs().sum() > 0
    noisy = fill_span_codes(embeds, batch["input_ids"], batch["eeg_codes"], table, eeg, 16, noise=0.5)
    assert not torch.allclose(noisy, filled)
    with pytest.raises(ValueError, match="<eeg> slots"):
        fill_span_codes(embeds, batch["input_ids"], batch["eeg_codes"][:, :1], table, eeg, 16)


# Several processes


def accelerate_launch(module: str, argv: list[str]) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--cpu", "-m", module, *argv]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)


def test_accelerate_launch_runs_stage1_of_the_demo_recipe_on_two_processes(data, tmp_path):
    result = accelerate_launch("train.stages.stage1", stage1_args(data, tmp_path, "--num_train_epochs", "1"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "model.safetensors").is_file()
    assert len(epoch_records(tmp_path)) == 1


def test_accelerate_launch_runs_stage2_of_the_demo_recipe_on_two_processes(data, stage1_dir, llm_dir, tmp_path):
    result = accelerate_launch("train.stages.stage2", stage2_args(data, stage1_dir, llm_dir, tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Stage 2 done" in result.stdout
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "processor_config.json").is_file()


# Recipes


@pytest.mark.parametrize("size", ["qwen3-4b", "qwen3-8b", "qwen3-14b"])
def test_paper_recipes_give_an_effective_batch_of_16_and_the_papers_optimiser(size):
    from train.stages.stage2 import parse_arguments

    processes = {"qwen3-4b": 1, "qwen3-8b": 2, "qwen3-14b": 2}[size]
    for stage, lr in (("stage2", 2e-4), ("stage3", 2e-4)):
        _, training_args, model_args = parse_arguments(["--config", str(RECIPES / size / f"{stage}.yaml"), "--bf16", "false"])
        assert training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps * processes == 16
        assert (training_args.learning_rate, training_args.weight_decay) == (lr, 0.0)
        assert training_args.lr_scheduler_type == "cosine"
    assert (model_args.lora_r, model_args.lora_alpha, model_args.lora_dropout) == (128, 256, 0.05)
    assert model_args.lora_modules_to_save == ["projector"]


def test_stage1_recipes_are_the_papers():
    from train.stages.stage1 import parse_arguments

    processes = {"qwen3-4b": 1, "qwen3-8b": 2, "qwen3-14b": 2}
    for size in ("qwen3-4b", "qwen3-8b", "qwen3-14b"):
        _, args = parse_arguments(["--config", str(RECIPES / size / "stage1.yaml"), "--bf16", "false"])
        batch = args.per_device_train_batch_size * args.gradient_accumulation_steps * processes[size]
        assert (args.learning_rate, args.weight_decay, batch, args.num_train_epochs) == (1e-4, 0.01, 64, 50)


def test_every_recipe_parses_with_its_stage(tmp_path):
    from trl import SFTConfig, TrlParser

    from train.stages.config import LMWarmupArguments
    from train.stages.stage1 import parse_arguments as parse_stage1_arguments
    from train.stages.stage2 import parse_arguments

    recipes = sorted(RECIPES.glob("*/**/*.yaml"))
    for recipe in recipes:
        if recipe.parent.name == "accelerate":
            continue
        argv = ["--config", str(recipe), "--bf16", "false"]
        if recipe.name == "stage1.yaml":
            parse_stage1_arguments(argv)
        elif recipe.name == "lm_warmup.yaml":
            TrlParser((LMWarmupArguments, SFTConfig)).parse_args_and_config(argv)
        else:
            parse_arguments(argv)
    assert len(recipes) >= 20


def test_accelerate_configs_name_two_processes():
    for config in (RECIPES / "accelerate").glob("*.yaml"):
        settings = yaml.safe_load(config.read_text())
        assert settings["num_processes"] == 2, config.name
    fsdp = yaml.safe_load((RECIPES / "accelerate" / "fsdp-2gpu.yaml").read_text())
    assert fsdp["distributed_type"] == "FSDP" and "Qwen3DecoderLayer" in fsdp["fsdp_config"]["fsdp_transformer_layer_cls_to_wrap"]
