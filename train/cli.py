"""The `e2llm` command: one subcommand per step of the pipeline.

    e2llm synthesize --out data/ --subjects 3
    e2llm prepare --dataset seed-vii --root data/ --out prepared/
    e2llm stage1 --config train/recipes/qwen3-8b/stage1.yaml
    e2llm evaluate --model stage3/ --data prepared/ --out eval/
    e2llm ablations --size 8b --run
    e2llm demo

Each subcommand is a module of `train` with a `main(argv)` that parses its own arguments,
so `e2llm stage2 --help` shows that stage's full set of options.
"""

from __future__ import annotations

import importlib
import sys

from train.children import end_with_parent_if_asked

COMMANDS = {
    "synthesize": ("train.data.synthesize", "write synthetic recordings in SEED-VII's layout"),
    "prepare": ("train.data.prepare", "SEED-VII or your recordings -> segments and QA sets"),
    "lm-warmup": ("train.stages.lm_warmup", "demo only: teach a tiny random Qwen3 the task texts"),
    "stage1": ("train.stages.stage1", "stage 1: the EEGPT encoder learns emotions"),
    "stage2": ("train.stages.stage2", "stage 2: the projector learns to speak to the LLM"),
    "stage3": ("train.stages.stage3", "stage 3: projector + LoRA, chain-of-thought answers"),
    "evaluate": ("train.evaluation.evaluate", "the paper's metrics on the test QA sets"),
    "ablations": ("train.evaluation.ablations", "Table 4 for one size: the ablations' stages, evaluations, comparison"),
    "attribute": ("train.evaluation.attribution", "the electrodes an answer came from, as a scalp map"),
    "publish": ("train.evaluation.publish", "a complete Hub folder with its model card; optionally upload"),
    "demo": ("train.demo", "the whole pipeline end to end on synthetic data, on the CPU"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: e2llm COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    lines += ["", "`e2llm COMMAND --help` lists a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    # A step `e2llm demo` started as a child ends with the demo (`train.children`).
    end_with_parent_if_asked()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print(_usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"e2llm: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    result = importlib.import_module(COMMANDS[command][0]).main(rest)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
