"""`e2llm ablations`: the paper's Table 4 for one model size, every step from one command.

    e2llm ablations --size 8b            # the plan: each command in order, done or to do
    e2llm ablations --size 8b --run      # run what is not done yet, then write Table 4
    e2llm ablations --size 14b --run --data prepared --runs runs/qwen3-14b --eval eval/qwen3-14b

The paper's ablations (section 4.3) and how each is made here, from the size's recipes in
`train/recipes/qwen3-SIZE/` (`--recipes` for a copy of them):

- the full model: stage 1, stage 2 (`stage2.yaml`), stage 3 (`stage3.yaml`);
- "w/o Stage 1": stages 2 and 3 on the pretrained EEGPT as is (`ablations/stage2-without-stage1.yaml`,
  `ablations/stage3-without-stage1.yaml`);
- "w/o Stage 2": stage 3 straight after stage 1, the projector new (`ablations/stage3-without-stage2.yaml`);
- "w/o Stage 3": the stage-2 model of the full run, evaluated as it is;
- "w/o CoT format": QA sets with direct answers, built from the same segments (so the same
  split) into `DATA-without-cot/`, then stages 2 and 3 on them (`ablations/stage2-without-cot.yaml`,
  `ablations/stage3-without-cot.yaml`), evaluated on their own direct-answer test sets.

Each variant is evaluated with `e2llm evaluate` into `EVAL/<variant>/`, and
`e2llm evaluate --compare` puts them side by side in `EVAL/comparison.md` (Table 4, with each
run's split and leakage). Paths given here override the recipes' `data`, `output_dir`, `encoder`
and `model`, so every step reads what the step before it wrote. Stages run as the recipes say:
`e2llm stageN` for Qwen3-4B, `accelerate launch` with the DDP (8B) or FSDP (14B, stages 2 and 3)
configuration for the others; `--single-process` runs every stage as `e2llm stageN`.

A step whose output is complete is skipped (what the step writes last: the `config.json` of
stages 1 and 2, stage 3's `merged/config.json`, an evaluation's `results.json`), every
stage runs with `--resume true` and every evaluation resumes its predictions, so running the
command again after an interruption continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
ACCELERATE = RECIPES / "accelerate"
SIZES = ("4b", "8b", "14b")
# The accelerate configuration each size's recipes are launched with (None: one process), per stage.
LAUNCH = {
    "4b": {1: None, 2: None, 3: None},
    "8b": {1: "ddp-2gpu.yaml", 2: "ddp-2gpu.yaml", 3: "ddp-2gpu.yaml"},
    "14b": {1: "ddp-2gpu.yaml", 2: "fsdp-2gpu.yaml", 3: "fsdp-2gpu.yaml"},
}
# Table 4's rows in the paper's order: (folder under EVAL, name in the table).
VARIANTS = (
    ("full", "E2LLM (all stages, CoT)"),
    ("without-stage1", "w/o Stage 1"),
    ("without-stage2", "w/o Stage 2"),
    ("without-stage3", "w/o Stage 3"),
    ("without-cot", "w/o CoT format"),
)
MERGED = "merged"
# What a size's recipe folder must hold.
RECIPE_FILES = (
    "stage1.yaml", "stage2.yaml", "stage3.yaml", "ablations/stage2-without-stage1.yaml",
    "ablations/stage3-without-stage1.yaml", "ablations/stage3-without-stage2.yaml",
    "ablations/stage2-without-cot.yaml", "ablations/stage3-without-cot.yaml",
)  # fmt: skip


@dataclass
class Step:
    """One step of the plan: an `e2llm` or `accelerate launch` command, or an action in this process.

    `done` is the file whose presence means the step finished; None: always run (the comparison).
    """

    name: str
    command: list[str] = field(default_factory=list)
    done: Path | None = None
    action: Callable[[], None] | None = None
    describe: str = ""

    def is_done(self) -> bool:
        return self.done is not None and self.done.exists()

    def shell(self) -> str:
        return self.describe or shlex.join(self.command)


def _shown(path: Path) -> str:
    """`path` relative to the working directory when it lies under it (shorter commands), else as is."""
    path = Path(path).resolve()
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def stage_command(size: str, stage: int, recipe: Path, single_process: bool) -> list[str]:
    """The command that launches `e2llm stageN --config recipe` as the size's recipes say."""
    config = None if single_process else LAUNCH[size][stage]
    if config is None:
        return ["e2llm", f"stage{stage}", "--config", _shown(recipe)]
    return ["accelerate", "launch", "--config_file", _shown(ACCELERATE / config), "-m", f"train.stages.stage{stage}",
            "--config", _shown(recipe)]  # fmt: skip


def without_cot_data(data: Path, out: Path) -> None:
    """`out`: the segments of `data` (linked, so the split is the same) and QA sets without CoT.

    The QA sizes and seed are those `data` was prepared with (its prepare.json).
    """
    from train.data.prepare import build_qa

    manifest = data / "prepare.json"
    if not manifest.is_file() or not (data / "segments").is_dir():
        raise ValueError(f"{data} holds no prepare.json and segments/: prepare it with `e2llm prepare` first")
    settings = json.loads(manifest.read_text())
    out.mkdir(parents=True, exist_ok=True)
    link = out / "segments"
    if not link.exists():
        link.symlink_to((data / "segments").resolve(), target_is_directory=True)
    build_qa(out, settings.get("sizes") or {}, cot=False, seed=settings.get("seed", 0))
    # Written last: its presence marks the folder complete.
    staging = out / ".prepare.json.tmp"
    staging.write_text(json.dumps({**settings, "cot": False, "segments_from": str(data.resolve())}, indent=1))
    os.replace(staging, out / "prepare.json")


def plan(size: str, *, data: str | Path = "prepared", runs: str | Path | None = None,
         evaluation: str | Path | None = None, recipes: str | Path | None = None, eegpt: str | None = None,
         single_process: bool = False, evaluate_args: list[str] | None = None) -> list[Step]:  # fmt: skip
    """The steps that make Table 4 for `size` ("4b", "8b" or "14b"), in order.

    `data`: the prepared folder; `runs`: where models go (default runs/qwen3-SIZE); `evaluation`:
    where evaluations and comparison.md go (default eval/qwen3-SIZE); `recipes`: the folder with
    stage1-3.yaml and ablations/ (default train/recipes/qwen3-SIZE); `eegpt`: the pretrained EEGPT
    checkpoint (default: the recipes'); `evaluate_args`: extra `e2llm evaluate` options.
    """
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    data, runs = Path(data), Path(runs or f"runs/qwen3-{size}")
    evaluation = Path(evaluation or f"eval/qwen3-{size}")
    recipes = Path(recipes or RECIPES / f"qwen3-{size}")
    missing = [name for name in RECIPE_FILES if not (recipes / name).is_file()]
    if missing:
        raise ValueError(f"{recipes} lacks the recipe(s) {missing}; expected a folder like train/recipes/qwen3-{size}")
    no_cot = data.with_name(data.name + "-without-cot")
    encoder = ["--encoder", eegpt] if eegpt else []

    def stage(name: str, number: int, recipe: str, output: Path, *args: str, done: str = "config.json") -> Step:
        command = stage_command(size, number, recipes / recipe, single_process)
        return Step(name, [*command, *args, "--output_dir", str(output), "--resume", "true"], output / done)

    # What each stage writes last: stages 1 and 2 the model (their checkpoints go to subfolders),
    # stage 3 the merged model.
    merged = f"{MERGED}/config.json"
    steps = [
        stage("stage1", 1, "stage1.yaml", runs / "stage1", "--data", str(data), *encoder),
        stage("stage2", 2, "stage2.yaml", runs / "stage2", "--data", str(data), "--encoder", str(runs / "stage1")),
        stage("stage3", 3, "stage3.yaml", runs / "stage3", "--data", str(data), "--model", str(runs / "stage2"),
              done=merged),
        stage("without-stage1/stage2", 2, "ablations/stage2-without-stage1.yaml", runs / "without-stage1" / "stage2",
              "--data", str(data), *encoder),
        stage("without-stage1/stage3", 3, "ablations/stage3-without-stage1.yaml", runs / "without-stage1" / "stage3",
              "--data", str(data), "--model", str(runs / "without-stage1" / "stage2"), done=merged),
        stage("without-stage2/stage3", 3, "ablations/stage3-without-stage2.yaml", runs / "without-stage2" / "stage3",
              "--data", str(data), "--encoder", str(runs / "stage1"), done=merged),
        Step("without-cot/data", done=no_cot / "prepare.json", action=lambda: without_cot_data(data, no_cot),
             describe=f"link {data}/segments into {no_cot}/ and build its QA sets without CoT (same sizes and seed)"),
        stage("without-cot/stage2", 2, "ablations/stage2-without-cot.yaml", runs / "without-cot" / "stage2",
              "--data", str(no_cot), "--encoder", str(runs / "stage1")),
        stage("without-cot/stage3", 3, "ablations/stage3-without-cot.yaml", runs / "without-cot" / "stage3",
              "--data", str(no_cot), "--model", str(runs / "without-cot" / "stage2"), done=merged),
    ]  # fmt: skip
    models = {
        "full": (runs / "stage3" / MERGED, data),
        "without-stage1": (runs / "without-stage1" / "stage3" / MERGED, data),
        "without-stage2": (runs / "without-stage2" / "stage3" / MERGED, data),
        "without-stage3": (runs / "stage2", data),
        "without-cot": (runs / "without-cot" / "stage3" / MERGED, no_cot),
    }
    for variant, name in VARIANTS:
        model, variant_data = models[variant]
        out = evaluation / variant
        steps.append(Step(f"evaluate {variant}", ["e2llm", "evaluate", "--model", str(model), "--data",
                                                   str(variant_data), "--out", str(out), "--name", name,
                                                   *(evaluate_args or [])], out / "results.json"))  # fmt: skip
    steps.append(Step("Table 4", ["e2llm", "evaluate", "--compare", *(str(evaluation / v) for v, _ in VARIANTS),
                                  "--out", str(evaluation)]))  # fmt: skip
    return steps


def run_step(step: Step) -> None:
    """Run one step: an action or an `e2llm` command in this process, anything else in a subprocess."""
    print(f"\n$ {step.shell()}", flush=True)
    if step.action is not None:
        step.action()
        return
    if step.command[0] == "e2llm":
        from train.cli import COMMANDS

        module = __import__(COMMANDS[step.command[1]][0], fromlist=["main"])
        code = module.main(step.command[2:])
    else:
        code = subprocess.run(step.command, check=False).returncode
    if code:
        raise SystemExit(f"e2llm ablations: step {step.name!r} failed with exit status {code}")


def format_plan(size: str, steps: list[Step]) -> str:
    done = sum(step.is_done() for step in steps)
    lines = [f"Table 4 for Qwen3-{size.upper()}: {len(steps)} steps, {done} done"]
    lines += [f"  [{'done' if step.is_done() else 'todo'}] {step.name}: {step.shell()}" for step in steps]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="e2llm ablations", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--size", required=True, choices=SIZES, help="the Qwen3 size whose Table 4 to make")
    parser.add_argument("--run", action="store_true", help="run the steps not done yet (default: print the plan)")
    parser.add_argument("--data", default="prepared", help="prepared data folder (default ./prepared)")
    parser.add_argument("--runs", help="where the models go (default runs/qwen3-SIZE)")
    parser.add_argument("--eval", dest="evaluation",
                        help="where evaluations and comparison.md go (default eval/qwen3-SIZE)")
    parser.add_argument("--recipes", help="folder with stage1-3.yaml and ablations/ (default train/recipes/qwen3-SIZE)")
    parser.add_argument("--eegpt", help="the pretrained EEGPT checkpoint (default: the recipes')")
    parser.add_argument("--single-process", action="store_true",
                        help="run every stage as `e2llm stageN`, not with accelerate")
    parser.add_argument("--evaluate-args", default="", help="extra `e2llm evaluate` options, e.g. '--batch-size 16'")
    return parser  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    steps = plan(args.size, data=args.data, runs=args.runs, evaluation=args.evaluation, recipes=args.recipes,
                 eegpt=args.eegpt, single_process=args.single_process,
                 evaluate_args=shlex.split(args.evaluate_args))  # fmt: skip
    print(format_plan(args.size, steps))
    if not args.run:
        print("\nRun them with --run.")
        return 0
    for step in steps:
        if step.is_done():
            print(f"e2llm ablations: {step.name} already done, skipped", flush=True)
            continue
        run_step(step)
    return 0


if __name__ == "__main__":
    sys.exit(main())
