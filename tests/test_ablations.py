"""`e2llm ablations`: the plan that makes Table 4 for a size, and the whole plan run at a tiny size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from train.evaluation import ablations

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "train" / "recipes"
ABLATION_RECIPES = (
    "stage2-without-stage1", "stage3-without-stage1", "stage3-without-stage2", "stage2-without-cot", "stage3-without-cot",
)  # fmt: skip


@pytest.mark.parametrize("size", ablations.SIZES)
def test_every_size_has_the_papers_ablation_recipes_chained_to_its_own_runs(size):
    folder = RECIPES / f"qwen3-{size}" / "ablations"
    recipes = {name: yaml.safe_load((folder / f"{name}.yaml").read_text()) for name in ABLATION_RECIPES}
    runs = f"runs/qwen3-{size}"
    llm = f"Qwen/Qwen3-{size.upper()}"
    assert recipes["stage2-without-stage1"]["encoder"] == "eegpt_mcae_58chs_4s_large4E.ckpt"
    assert recipes["stage2-without-stage1"]["llm"] == recipes["stage2-without-cot"]["llm"] == llm
    assert recipes["stage3-without-stage1"]["model"] == f"{runs}/without-stage1/stage2"
    assert (recipes["stage3-without-stage2"]["model"], recipes["stage3-without-stage2"]["encoder"]) == (None, f"{runs}/stage1")
    assert recipes["stage3-without-stage2"]["llm"] == llm
    assert recipes["stage2-without-cot"]["data"] == recipes["stage3-without-cot"]["data"] == "prepared-without-cot"
    assert recipes["stage3-without-cot"]["model"] == f"{runs}/without-cot/stage2"
    # Each ablation changes only what makes it an ablation: the training settings are the size's own.
    for name, recipe in recipes.items():
        own = yaml.safe_load((RECIPES / f"qwen3-{size}" / f"{name[:6]}.yaml").read_text())
        changed = {key for key in own.keys() | recipe.keys() if own.get(key) != recipe.get(key)}
        assert changed <= {"data", "encoder", "model", "llm", "output_dir"}, (name, changed)


@pytest.mark.parametrize(
    ("size", "stage_2_3_launch"),
    [("4b", ["e2llm"]), ("8b", ["accelerate", "launch", "--config_file", "train/recipes/accelerate/ddp-2gpu.yaml"]),
     ("14b", ["accelerate", "launch", "--config_file", "train/recipes/accelerate/fsdp-2gpu.yaml"])],
)  # fmt: skip
def test_the_plan_runs_each_variant_from_the_steps_before_it_then_compares_them(size, stage_2_3_launch, monkeypatch):
    monkeypatch.chdir(REPO)
    steps = {step.name: step for step in ablations.plan(size)}
    assert list(steps) == [
        "stage1", "stage2", "stage3", "without-stage1/stage2", "without-stage1/stage3", "without-stage2/stage3",
        "without-cot/data", "without-cot/stage2", "without-cot/stage3", "evaluate full", "evaluate without-stage1",
        "evaluate without-stage2", "evaluate without-stage3", "evaluate without-cot", "Table 4",
    ]  # fmt: skip
    runs, recipes = f"runs/qwen3-{size}", f"train/recipes/qwen3-{size}"

    def options(name):
        command = steps[name].command
        return dict(zip(command[command.index("--config"):][::2], command[command.index("--config"):][1::2]))

    assert steps["stage2"].command[: len(stage_2_3_launch)] == stage_2_3_launch
    assert options("stage2") == {"--config": f"{recipes}/stage2.yaml", "--data": "prepared", "--encoder": f"{runs}/stage1",
                                 "--output_dir": f"{runs}/stage2", "--resume": "true"}  # fmt: skip
    assert options("without-stage1/stage3")["--model"] == f"{runs}/without-stage1/stage2"
    assert options("without-stage2/stage3")["--encoder"] == f"{runs}/stage1"
    assert options("without-cot/stage2")["--data"] == options("without-cot/stage3")["--data"] == "prepared-without-cot"
    evaluated = {name: steps[name].command for name in steps if name.startswith("evaluate")}
    assert evaluated["evaluate without-stage3"][3] == f"{runs}/stage2"
    assert evaluated["evaluate without-cot"][5] == "prepared-without-cot"
    assert evaluated["evaluate full"][-2:] == ["--name", "E2LLM (all stages, CoT)"]
    assert steps["Table 4"].command == ["e2llm", "evaluate", "--compare", *(
        f"eval/qwen3-{size}/{v}" for v, _ in ablations.VARIANTS), "--out", f"eval/qwen3-{size}"]  # fmt: skip


def test_the_command_prints_the_plan_without_running_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert ablations.main(["--size", "8b"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("Table 4 for Qwen3-8B: 15 steps, 0 done")
    assert "[todo] without-stage2/stage3: accelerate launch" in printed and "Run them with --run." in printed
    assert not (tmp_path / "runs").exists()


def test_a_missing_recipe_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"lacks the recipe\(s\) \['stage1.yaml'"):
        ablations.plan("8b", recipes=tmp_path)


# ----------------------------------------------------------------------------- the whole plan, tiny


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    """Prepared synthetic data, a tiny Qwen3 folder, a tiny EEGPT checkpoint and tiny recipes for every step."""
    from transformers import Qwen3ForCausalLM

    from modeling_e2llm import EEGPTConfig, EEGPTModel
    from train.data import prepare, synthesize
    from train.stages.tiny import tiny_qwen3_config
    from train.tokenizer import build_qwen3_tokenizer

    root = tmp_path_factory.mktemp("ablations")
    synthesize.main(["--out", str(root / "seed-vii"), "--subjects", "1", "--clip-seconds", "10"])
    prepare.main(["--root", str(root / "seed-vii"), "--out", str(root / "prepared"), "--num-workers", "1",
                  "--qa-train", "8", "--qa-stage3", "4", "--qa-test-multi", "3", "--qa-test-esr", "1"])  # fmt: skip
    torch.manual_seed(0)
    Qwen3ForCausalLM(tiny_qwen3_config()).save_pretrained(root / "llm")
    build_qwen3_tokenizer().save_pretrained(root / "llm")
    torch.save(EEGPTModel(EEGPTConfig.from_preset("tiny")).state_dict(), root / "eegpt-tiny.pt")

    demo = {stage: yaml.safe_load((RECIPES / "demo" / f"{stage}.yaml").read_text()) for stage in ("stage1", "stage2", "stage3")}
    quiet = {"disable_tqdm": True, "max_steps": 1, "per_device_train_batch_size": 2, "max_train_samples": 2}
    stage1 = {**demo["stage1"], "num_train_epochs": 1, "max_train_segments": 16, "per_device_train_batch_size": 8,
              "validation_fraction": 0.2, "disable_tqdm": True}  # fmt: skip
    # The tiny LM is no warm-up: it has no span codes for the demo's stage-2 code target.
    stage2 = {**demo["stage2"], **quiet, "llm": str(root / "llm"), "encoder_preset": "tiny", "span_code_weight": 0.0}
    stage3 = {**demo["stage3"], **quiet, "lora_r": 2, "lora_alpha": 4, "encoder_preset": "tiny"}
    recipes = {
        "stage1.yaml": stage1, "stage2.yaml": stage2, "stage3.yaml": stage3,
        "ablations/stage2-without-stage1.yaml": {**stage2, "encoder": str(root / "eegpt-tiny.pt")},
        "ablations/stage3-without-stage1.yaml": stage3,
        "ablations/stage3-without-stage2.yaml": {**stage3, "model": None, "llm": str(root / "llm")},
        "ablations/stage2-without-cot.yaml": stage2, "ablations/stage3-without-cot.yaml": stage3,
    }  # fmt: skip
    for name, recipe in recipes.items():
        (root / "recipes" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "recipes" / name).write_text(yaml.safe_dump(recipe))
    return root


def test_the_whole_plan_runs_at_a_tiny_size_into_table_4_and_a_rerun_skips_it(tiny_setup, capsys):
    root = tiny_setup
    argv = ["--size", "4b", "--run", "--data", str(root / "prepared"), "--runs", str(root / "runs"),
            "--eval", str(root / "eval"), "--recipes", str(root / "recipes"),
            "--evaluate-args", "--limit 1 --max-new-tokens 2 --batch-size 4"]  # fmt: skip
    with pytest.warns(UserWarning, match="random weights"):
        assert ablations.main(argv) == 0
    table = (root / "eval" / "comparison.md").read_text()
    for _, name in ablations.VARIANTS:
        assert f"| {name} |" in table
    # The direct-answer variant reads QA sets built without CoT from the very same segments.
    no_cot = root / "prepared-without-cot"
    assert (no_cot / "segments").resolve() == (root / "prepared" / "segments").resolve()
    assert json.loads((no_cot / "prepare.json").read_text())["cot"] is False
    results = json.loads((root / "eval" / "without-cot" / "results.json").read_text())
    assert results["settings"]["data"] == str(no_cot.resolve())
    assert results["split"]["name"] == "paper"
    capsys.readouterr()
    assert ablations.main(argv) == 0
    rerun = capsys.readouterr().out
    assert "15 steps, 14 done" in rerun and rerun.count("already done, skipped") == 14
