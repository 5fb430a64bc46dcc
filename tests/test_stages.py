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

import pytest
import torch
import yaml
from safetensors.torch import load_file

from modeling_e2llm import E2LLMForConditionalGeneration, EEGPTConfig, EEGPTForEmotionClassification, EEGPTModel

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "train" / "recipes"
QUIET = ["--report_to", "none", "--gradient_checkpointing", "false", "--disable_tqdm", "true"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from train.data import prepare, synthesize

    root = tmp_path_factory.mktemp("training-data")
    synthesize.main(["--out", str(root / "seed-vii"), "--subjects", "1", "--clip-seconds", "10"])
    prepare.main([
        "--root", str(root / "seed-vii"), "--out", str(root / "prepared"), "--num-workers", "1",
        "--qa-train", "24", "--qa-stage3", "12", "--qa-test-multi", "6", "--qa-test-esr", "3",
    ])  # fmt: skip
    return root / "prepared"


def stage1_args(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--config", str(RECIPES / "demo" / "stage1.yaml"), "--data", str(data), "--output_dir", str(out),
        "--num_train_epochs", "2", "--max_train_segments", "32", "--batch_size", "16",
        "--eval_batch_size", "32", "--validation_fraction", "0.2", *extra,
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
        "--max_train_samples", "4", *QUIET, *extra,
    ]  # fmt: skip


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


def test_stage1_saves_the_best_encoder_with_its_labels_and_history(stage1_dir):
    model = EEGPTForEmotionClassification.from_pretrained(stage1_dir)
    assert (stage1_dir / "model.safetensors").is_file()
    assert model.config.id2label[0] == "happy" and model.config.num_labels == 7
    history = json.loads((stage1_dir / "history.json").read_text())
    assert [record["epoch"] for record in history] == [1, 2]
    best = json.loads((stage1_dir / "metrics.json").read_text())
    scores = [record["validation_balanced_accuracy"] for record in history]
    assert best["validation_balanced_accuracy"] == max(scores)
    assert all(0.0 <= score <= 1.0 for score in scores)


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


def test_stage1_resumes_after_an_interruption_and_matches_an_uninterrupted_run(data, tmp_path, monkeypatch):
    from train.stages import stage1

    assert stage1.main(stage1_args(data, tmp_path / "straight", "--num_train_epochs", "3")) == 0

    real_evaluate, calls = stage1.evaluate, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(stage1, "evaluate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        stage1.main(stage1_args(data, tmp_path / "resumed", "--num_train_epochs", "3"))
    monkeypatch.setattr(stage1, "evaluate", real_evaluate)
    state = json.loads((tmp_path / "resumed" / "checkpoint" / "training_state.json").read_text())
    assert state["epoch"] == 0  # the first epoch was saved, the second interrupted
    assert stage1.main(stage1_args(data, tmp_path / "resumed", "--num_train_epochs", "3", "--resume", "true")) == 0

    straight = weights(tmp_path / "straight" / "checkpoint")
    resumed = weights(tmp_path / "resumed" / "checkpoint")
    assert straight.keys() == resumed.keys()
    assert all(torch.allclose(straight[key], resumed[key], atol=1e-6) for key in straight)
    assert len(json.loads((tmp_path / "resumed" / "history.json").read_text())) == 3


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
        "print(type(m).__name__, type(p).__name__, p.num_eeg_tokens)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=stage2_dir,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["E2LLMForConditionalGeneration", "E2LLMProcessor", "16"]


def test_stage2_loss_falls_when_overfitting_a_handful_of_samples(data, stage1_dir, llm_dir, tmp_path):
    from train.stages import stage2

    argv = stage2_args(data, stage1_dir, llm_dir, tmp_path, "--max_steps", "10", "--max_train_samples", "2",
                       "--learning_rate", "1e-2", "--lr_scheduler_type", "constant", "--train_crop", "center",
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


def test_lm_warmup_writes_each_eeg_span_as_its_segments_emotion(data, qwen3_tokenizer):
    from datasets import load_from_disk

    from processing_e2llm import E2LLMFeatureExtractor, E2LLMProcessor
    from train.stages.lm_warmup import chat_texts

    processor = E2LLMProcessor(E2LLMFeatureExtractor(), qwen3_tokenizer)
    qa = load_from_disk(str(data / "qa"))["train"].select(range(8))
    segments = load_from_disk(str(data / "segments"))["train"]
    emotions = dict(zip(segments["id"], segments["emotion"]))
    texts = chat_texts(qa, processor, emotions)
    for row, text in zip(qa, texts):
        spans = re.findall(r"<eeg_start>(.*?)<eeg_end>", text["prompt"])
        assert spans == [f" {emotions[segment]}" * 16 for segment in row["segment_ids"]]
        assert "<eeg>" not in text["prompt"]
        assert text["completion"].endswith(f"Answer: {row['answer']}<|im_end|>")
    bare = chat_texts(qa, processor)
    assert all(t["prompt"].count("<eeg>") == 16 * len(r["segment_ids"]) for r, t in zip(qa, bare))


# Several processes


def accelerate_launch(module: str, argv: list[str]) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--cpu", "-m", module, *argv]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)


def test_accelerate_launch_runs_stage1_of_the_demo_recipe_on_two_processes(data, tmp_path):
    result = accelerate_launch("train.stages.stage1", stage1_args(data, tmp_path, "--num_train_epochs", "1"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "model.safetensors").is_file()
    assert len(json.loads((tmp_path / "history.json").read_text())) == 1


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
    from trl import TrlParser

    from train.stages.config import Stage1Arguments

    for size in ("qwen3-4b", "qwen3-8b", "qwen3-14b"):
        (args,) = TrlParser((Stage1Arguments,)).parse_args_and_config(["--config", str(RECIPES / size / "stage1.yaml")])
        assert (args.learning_rate, args.weight_decay, args.batch_size, args.num_train_epochs) == (1e-4, 0.01, 64, 50)


def test_every_recipe_parses_with_its_stage(tmp_path):
    from trl import SFTConfig, TrlParser

    from train.stages.config import LMWarmupArguments, Stage1Arguments
    from train.stages.stage2 import parse_arguments

    recipes = sorted(RECIPES.glob("*/**/*.yaml"))
    for recipe in recipes:
        if recipe.parent.name == "accelerate":
            continue
        argv = ["--config", str(recipe), "--bf16", "false"]
        if recipe.name == "stage1.yaml":
            TrlParser((Stage1Arguments,)).parse_args_and_config(argv[:2])
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
