"""`e2llm demo`: the whole of E2LLM, end to end, on the CPU, on synthetic EEG.

    e2llm demo                      # into ./e2llm-demo, about 15 minutes on two idle cores (README, Measured)
    e2llm demo --out /tmp/demo --size smoke   # a minute or two: every step, tiny sizes

Steps, each into its own folder under `--out`:

1. `data/`      `e2llm synthesize`: synthetic recordings in SEED-VII's layout (labelled
                synthetic: no real person's EEG is involved)
2. `prepared/`  `e2llm prepare`: 10 s segments and the five QA task sets
3. `stage1/`    `e2llm stage1`: a tiny EEGPT learns the seven emotions
4. `lm-warmup/` `e2llm lm-warmup`: demo only, a tiny random Qwen3 learns to read the task
                texts, since no pretrained Qwen3 can be downloaded here; its tokenizer, a
                small byte-level BPE, is trained on those texts
5. `stage2/`    `e2llm stage2`: the projector learns to speak to the language model
6. `stage3/`    `e2llm stage3`: projector + LoRA on chain-of-thought answers
7. `eval/`      `e2llm evaluate`: results.json, tables.md, predictions.jsonl, confusion matrix;
                `e2llm attribute`: attribution.png, the electrodes one test answer came from
8. `hub/`       `e2llm publish`: the publishable folder with its model card
9. the `hub/` folder is loaded in a fresh Python process with `AutoModel`/`AutoProcessor`
   (`trust_remote_code=True`, offline), and one EEG's generated analysis is printed beside
   its true emotion.

Every step runs the same code a user runs on SEED-VII and a real Qwen3, with the recipes in
`train/recipes/demo/`. A finished step is recorded in `--out/demo_state.json`; running the
demo again continues after the last finished step (`--restart` starts over).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path

from train.io import output_lock

RECIPES = Path(__file__).resolve().parent / "recipes" / "demo"


@dataclass(frozen=True)
class DemoSize:
    """How much synthetic data and training the demo uses."""

    subjects: int
    clip_seconds: int
    qa: dict[str, int]
    # Extra command-line settings per step, on top of the step's demo recipe.
    overrides: dict[str, list[str]] = field(default_factory=dict)
    max_eval: int | None = None
    # The longest gold answer, EIM's with its three EEGs' measured features, is about 320 tokens.
    max_new_tokens: int = 352
    # Answers generated together: on the CPU a tiny model's steps cost little more for 32 rows
    # than for 8 (the default demo's evaluation step took 46 s instead of 77, the same answers).
    eval_batch_size: int = 8


SIZES = {
    # The demo a newcomer runs: every step at a size that trains the tiny models for real.
    "default": DemoSize(
        subjects=3,
        clip_seconds=30,
        # 100 questions a multi-EEG task and every IED test segment (73): one standard error about 5 points.
        qa={"--qa-train": 2400, "--qa-stage3": 400, "--qa-test-multi": 300, "--qa-test-esr": 30},
        max_eval=100,
        eval_batch_size=32,
    ),
    # Every step at the smallest size that still exercises it: for the test suite.
    "smoke": DemoSize(
        subjects=1,
        clip_seconds=20,
        qa={"--qa-train": 24, "--qa-stage3": 12, "--qa-test-multi": 6, "--qa-test-esr": 3},
        overrides={
            "stage1": ["--num_train_epochs", "1"],
            "lm-warmup": ["--max_steps", "2"],
            "stage2": ["--max_steps", "2"],
            "stage3": ["--max_steps", "2"],
        },
        max_eval=6,
        max_new_tokens=16,
    ),
}

STEPS = ("data", "prepared", "stage1", "lm-warmup", "stage2", "stage3", "eval", "attribution", "hub", "explain")


class DemoState:
    """The steps finished so far, kept in `out/demo_state.json` (rewritten atomically)."""

    def __init__(self, out: Path, restart: bool):
        self.path = out / "demo_state.json"
        self.done: dict[str, float] = {}
        if self.path.is_file() and not restart:
            self.done = json.loads(self.path.read_text())["done"]

    def finish(self, step: str, seconds: float) -> None:
        self.done[step] = round(seconds, 1)
        staging = self.path.with_suffix(".json.tmp")
        staging.write_text(json.dumps({"done": self.done}, indent=2))
        os.replace(staging, self.path)


def _run(module: str, argv: list[str]) -> None:
    """Run one `e2llm` command in this process, failing loudly."""
    print(f"\n$ e2llm {module.rsplit('.', 1)[-1].replace('_', '-')} {' '.join(argv)}", flush=True)
    code = import_module(module).main(argv)
    if code:
        raise SystemExit(f"e2llm demo: step {module} failed with exit status {code}")


def cpu_bf16_arguments() -> list[str]:
    """Stage 1's arguments for bfloat16 autocast where it pays: on a machine without a GPU whose CPU
    has bfloat16 units (AVX512-BF16 or AMX). Without them, bfloat16 runs slower than float32 there."""
    import torch

    if torch.cuda.is_available() or not torch.cpu._is_avx512_bf16_supported():
        return []
    return ["--bf16", "true", "--use_cpu", "true"]


def _steps(out: Path, size: DemoSize, seed: int) -> dict[str, tuple[str, list[str]]]:
    o = {name: str(out / name) for name in STEPS}
    qa = [item for pair in size.qa.items() for item in map(str, pair)]
    limits = ["--limit", str(size.max_eval)] if size.max_eval else []
    return {
        "data": ("train.data.synthesize", ["--out", o["data"], "--subjects", str(size.subjects),
                                      "--clip-seconds", str(size.clip_seconds), "--seed", str(seed)]),
        "prepared": ("train.data.prepare", ["--dataset", "seed-vii", "--root", o["data"], "--out", o["prepared"],
                                       "--seed", str(seed), *qa]),
        "stage1": ("train.stages.stage1", ["--config", str(RECIPES / "stage1.yaml"), "--data", o["prepared"],
                                    "--output_dir", o["stage1"], "--seed", str(seed), *cpu_bf16_arguments()]),
        "lm-warmup": ("train.stages.lm_warmup", ["--config", str(RECIPES / "lm_warmup.yaml"), "--data", o["prepared"],
                                          "--output_dir", o["lm-warmup"], "--seed", str(seed)]),
        "stage2": ("train.stages.stage2", ["--config", str(RECIPES / "stage2.yaml"), "--data", o["prepared"],
                                    "--encoder", o["stage1"], "--llm", o["lm-warmup"],
                                    "--output_dir", o["stage2"], "--seed", str(seed)]),
        "stage3": ("train.stages.stage3", ["--config", str(RECIPES / "stage3.yaml"), "--data", o["prepared"],
                                    "--model", o["stage2"], "--output_dir", o["stage3"], "--seed", str(seed)]),
        "eval": ("train.evaluation.evaluate", ["--model", str(out / "stage3" / "merged"), "--data", o["prepared"],
                                      "--out", o["eval"], "--max-new-tokens", str(size.max_new_tokens),
                                      "--batch-size", str(size.eval_batch_size), *limits]),
        "attribution": ("train.evaluation.attribution", ["--model", str(out / "stage3" / "merged"),
                                                         "--data", o["prepared"], "--out",
                                                         str(out / "eval" / "attribution.png"),
                                                         "--max-new-tokens", str(size.max_new_tokens)]),
        # The next step (explain) loads the published folder in a fresh offline process and generates, which is
        # the check `e2llm publish` would otherwise run itself.
        "hub": ("train.evaluation.publish", ["--model", o["stage3"], "--results", str(out / "eval" / "results.json"),
                                  "--out", o["hub"], "--base-model", "tiny Qwen3 (demo, random start)",
                                  "--no-verify"]),
    }


# Runs in a fresh interpreter, as a user's notebook would: only transformers, datasets and
# numpy, the model and processor code coming from the published folder itself.
_EXPLAIN = r"""
import json, sys
import numpy as np
from datasets import load_from_disk
from transformers import AutoModel, AutoProcessor

hub, prepared, max_new_tokens = sys.argv[1], sys.argv[2], int(sys.argv[3])
processor = AutoProcessor.from_pretrained(hub, trust_remote_code=True)
model = AutoModel.from_pretrained(hub, trust_remote_code=True).eval()
sample = load_from_disk(prepared + "/qa")["test_ied"][0]
segments = load_from_disk(prepared + "/segments")["test"]
segment = segments[segments["id"].index(sample["segment_ids"][0])]
# The prepared segment is already filtered, in mV, at 256 Hz, in EEGPT's 58-channel order: the
# processor only takes its centred 4 s window.
names = sys.modules[type(processor.feature_extractor).__module__].EEGPT_58_CHANNELS
eeg = np.asarray(segment["eeg"], dtype=np.float32)
turns = sample["messages"]
messages = turns[: next(i for i, m in enumerate(turns) if m["role"] == "assistant")]
text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
inputs = processor(text=text, eeg=eeg, sampling_rate=256, channel_names=names, units="mV",
                   windowing="center", apply_filters=False, return_tensors="pt")
output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
answer = processor.batch_decode(output[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)[0]
print(json.dumps({"segment": segment["id"], "true_emotion": segment["emotion"], "analysis": answer.strip()}))
"""


def explain(hub: Path, prepared: Path, max_new_tokens: int = DemoSize.max_new_tokens) -> dict:
    """Load the published folder in a fresh offline process and explain one test EEG."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    result = subprocess.run(
        [sys.executable, "-c", _EXPLAIN, str(hub), str(prepared), str(max_new_tokens)],
        capture_output=True, text=True, env=env, cwd=str(hub.parent),
    )
    if result.returncode != 0:
        raise SystemExit(f"e2llm demo: loading {hub} in a fresh process failed:\n{result.stderr[-4000:]}")
    explanation = json.loads(result.stdout.strip().splitlines()[-1])
    explanation["claims"] = check_claims(explanation, prepared)
    return explanation


def check_claims(explanation: dict, prepared: Path) -> list[dict]:
    """The feature claims of `explanation["analysis"]`, each checked against the measured features of
    the segment it describes (`train.evaluation.evaluate.judge_claims`)."""
    from datasets import load_from_disk

    from train.evaluation.evaluate import judge_claims, segment_scores

    segments = load_from_disk(str(Path(prepared) / "segments"))["test"]
    segments = segments.filter(lambda segment_id: segment_id == explanation["segment"], input_columns="id")
    row = {"text": explanation["analysis"], "segment_ids": [explanation["segment"]]}
    return judge_claims(row, segment_scores(segments) or {})


def _claim_lines(claims: list[dict]) -> list[str]:
    from train.data.claims import Claim, claim_words

    if not claims:
        return ["    (no feature claims)"]
    lines = []
    for claim in claims:
        words = " ".join(claim_words([Claim(claim["feature"], claim["direction"])]))
        z = "no value" if claim["z"] is None else f"z {claim['z']:+.2f}"
        lines.append(f"    [{'true ' if claim['true'] else 'false'}] {words} ({z})")
    return lines


def _warmup_line(out: Path) -> list[str]:
    """What the warm-up's check verdicts showed (`train.stages.lm_warmup.check_verdicts`), when measured."""
    from train.stages.lm_warmup import CHECKS_FILE

    path = out / "lm-warmup" / CHECKS_FILE
    if not path.is_file():
        return []
    checks = json.loads(path.read_text())
    return [
        "",
        f"The warm-up model, teacher-forced on the gold test answers, gave {checks['accuracy']} % of their "
        f"{checks['checks']} check verdicts right: EPC, ESS and EIM rest on that comparison.",
        *([f"It began {checks['restated_accuracy']} % of the {checks['restated']} scenarios EIM answers restate "
           "with the scenario's first word: EIM's answers copy them from the question."]
          if checks.get("restated") else []),
    ]


def _summary(out: Path, state: DemoState, explanation: dict) -> str:
    tables = (out / "eval" / "tables.md").read_text()
    lines = [
        "",
        "=" * 78,
        "E2LLM demo: finished (synthetic EEG, tiny models; figures are not the paper's)",
        "=" * 78,
        tables.strip(),
        "",
        f"One test EEG ({explanation['segment']}), true emotion: {explanation['true_emotion']}",
        "The model, loaded from hub/ in a fresh process, says:",
        *("    " + line for line in explanation["analysis"].splitlines()),
        "Its feature claims, checked against the segment's measured features (z-scores against the person's "
        "session; true from 0.5 in the stated direction):",
        *_claim_lines(explanation.get("claims", [])),
        *_warmup_line(out),
        "",
        "Where things are:",
    ]
    where = {
        "data": "synthetic recordings in SEED-VII's layout",
        "prepared": "segments/ and qa/ (datasets.load_from_disk)",
        "stage1": "the emotion-trained EEGPT encoder",
        "stage2": "encoder + projector + language model",
        "stage3": "LoRA adapter, and merged/ the full model",
        "eval": "results.json, tables.md, predictions.jsonl, confusion_matrix.png, attribution.png",
        "hub": "the publishable folder: AutoModel.from_pretrained(it, trust_remote_code=True)",
    }
    lines += [f"  {out / name}/  {what}" for name, what in where.items()]
    lines += [f"Step times (s): {json.dumps(state.done)}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="e2llm demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="e2llm-demo", help="output folder (default ./e2llm-demo)")
    parser.add_argument("--size", choices=sorted(SIZES), default="default",
                        help="default: the full demo; smoke: every step at the smallest size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--restart", action="store_true", help="run every step again")
    args = parser.parse_args(argv)
    with output_lock(Path(args.out).resolve(), "e2llm demo"):
        return run(args)


def run(args: argparse.Namespace) -> int:
    """The demo with parsed arguments; the caller holds `args.out` (`train.io.output_lock`)."""
    out = Path(args.out).resolve()
    size = SIZES[args.size]
    state = DemoState(out, args.restart)
    steps = {step: (module, argv + size.overrides.get(step, [])) for step, (module, argv) in _steps(out, size, args.seed).items()}
    for step, (module, step_argv) in steps.items():
        if step in state.done:
            print(f"e2llm demo: {step}/ already done, skipped", flush=True)
            continue
        started = time.perf_counter()
        _run(module, step_argv)
        state.finish(step, time.perf_counter() - started)

    started = time.perf_counter()
    explanation = explain(out / "hub", out / "prepared", size.max_new_tokens)
    (out / "explanation.json").write_text(json.dumps(explanation, indent=2))
    state.finish("explain", time.perf_counter() - started)
    print(_summary(out, state, explanation))
    return 0


if __name__ == "__main__":
    sys.exit(main())
