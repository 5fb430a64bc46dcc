"""`e2llm evaluate`: the paper's metrics on the test QA sets (Tables 2, 3 and 4).

    e2llm evaluate --model runs/stage3/merged --data prepared/ --out eval/stage3
    e2llm evaluate --model runs/stage1 --data prepared/ --out eval/stage1
    e2llm evaluate --compare eval/full eval/no-stage1 eval/no-stage2 --out eval/

An E2LLM model answers every sample of `test_ied`, `test_multi` (EPC, ESS, EIM) and
`test_esr` by batched greedy generation (left padding). Each sample's EEG goes in as the
centred 4 s crop of its 10 s segments, fed to the processor as model-ready windows. ESR runs
in its two turns: the model's own first answer is appended before the second question. The
final answer is read with `train.data.qa.parse_answer`; an answer it cannot read is scored wrong
and counted against the task's valid-answer rate, never mapped to a class.

A stage-1 folder (`EEGPTForEmotionClassification`) is evaluated directly on the centred crops
of the test segments, with the IED metrics.

`--out` receives:
- `predictions.jsonl`: one line per sample: `id`, `task`, `segment_ids`, `gold`, `predicted` (null
  when the answer was unreadable), the generated `text` (ESR: the second turn; its first is
  `first_turn`) and `claims`: every feature claim of the explanation, read back by
  `train.data.claims.read_explanation`, with the EEG it describes, its segment, the segment's
  measured z-score and whether the claim is `true` (see Faithfulness).
  It is written batch by batch, and a run started again with the same `--out` resumes after the
  last complete batch.
- `results.json`: every figure in percent (kappa x 100, as the paper prints it), per task, with
  `n`, `valid_rate` and `random_baseline`; `dataset` (SEED-VII, synthetic data or own
  recordings, from the prepared folder's `prepare.json`), the run's `settings`, and `split`:
  the split's name (`paper`, `cross-subject`, `cross-clip`) and its leakage, the test subjects,
  clips and videos that also have training segments (`train.data.prepare.split_leakage`). The
  tables and the model card state it too: under the paper's split nearly every test segment
  has neighbouring seconds of its own clip in training.
- `run.json`: the settings, with SHA-256 digests of the model's files and of the prepared test
  data; a run with another model, data or `--max-new-tokens` refuses to append to the same
  `predictions.jsonl`, and one whose model or data files changed at the same paths (a retrained
  model) answers every sample again.
- `tables.md`: Table 2 (IED) and Table 3 (EPC, ESS, EIM, ESR, average) in the paper's layout, and
  the faithfulness of the explanations per task.
- `confusion_matrix.png`: IED, rows the true emotion, columns the answer (and "unreadable").
`--compare DIR...` reads the `results.json` of several runs and writes `comparison.md` in the
layout of Table 4 (one row per run).

Faithfulness (`results.json`: each task's `faithfulness`). The explanations state measured
features of each EEG in words this project defines (`train.data.claims`), so every claim is read
back exactly and checked against the described segment's own measured z-scores (true when the
feature lies at least half a standard deviation of the person's session in the claimed
direction). Per task: `claims_per_explanation`, `claim_precision` (true claims / claims),
`all_true` (explanations making at least one claim, all of them true), and the same two for the
same-emotion baseline: each described EEG takes the claims the model made for another test
segment of the same (true) emotion, the next one in the run's order, and they are scored
against this EEG's features: what explanations that follow only the emotion would score. `gap`
is the model's precision minus the baseline's: how much the claims read this EEG beyond its
label. That baseline copies one EEG's claims, noise included; an explanation could follow the
label more cleverly and state what the label's EEGs show on average. So a second baseline, the
**typical features** of the emotion: each described EEG takes, as many as the model made for it,
the claims of the features whose mean z-score over the training segments of its true emotion
is largest (`typical_claims`), scored against its own features (`typical_claim_precision`,
`typical_all_true`, `typical_gap`); it is present when the prepared data has training segments.
A model that reads the EEG beyond its label beats both. It says nothing about whether the emotion reading is right, whether the salient
features are the ones that drove the answer (see `train.evaluation.attribution`), or what an
explanation phrased outside the project's wording claims.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from train.data.qa import TASKS
from train.io import content_digest, output_lock, write_atomic

CHOICE_TASKS = tuple(task for task in TASKS if task != "IED")
QA_SPLITS = ("test_ied", "test_multi", "test_esr")
# Chance level of each task in percent: 1/7 emotions, 1/3 options, 1/3! matchings.
RANDOM_BASELINES = {"IED": 100 / 7, "EPC": 100 / 3, "ESS": 100 / 3, "EIM": 100 / 6, "ESR": 100 / 3}
# The best figures of the paper (percent), for reference beside a run's own.
PAPER_BEST = {
    "balanced_accuracy": (61.73, "Qwen3-8B"),
    "cohen_kappa": (55.14, "Qwen3-14B"),
    "ESR": (53.89, "Qwen3-14B"),
}
UNREADABLE = "unreadable"


# ----------------------------------------------------------------------------- outputs


def read_predictions(path: str | os.PathLike) -> list[dict]:
    """The complete lines of a `predictions.jsonl` (a line cut short by an interrupted run is dropped)."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


# ----------------------------------------------------------------------------- scoring


def judge_claims(row: dict, scores: dict[str, dict[str, float]]) -> list[dict]:
    """Every feature claim of a prediction row's explanation, checked against its segments' z-scores.

    Reads `first_turn` (ESR's descriptions) and `text`; EEG n is the row's n-th segment. A claim
    about an EEG the sample does not have is false. A claim an EEG's description repeats is
    scored once: saying it again adds nothing to what the explanation claims.
    """
    from train.data.claims import read_explanation

    text = "\n".join(part for part in (row.get("first_turn"), row.get("text")) if part)
    judged = []
    for number, claims in sorted(read_explanation(text).items()):
        segment = row["segment_ids"][number - 1] if 0 < number <= len(row["segment_ids"]) else None
        own = scores.get(segment, {}) if segment is not None else {}
        for claim in dict.fromkeys(claims):  # in order, each once
            value = own.get(claim.feature)
            judged.append({
                "eeg": number, "segment": segment, "feature": claim.feature, "direction": claim.direction,
                "z": None if value is None or math.isnan(value) else round(float(value), 3),
                "true": claim.holds(own),
            })  # fmt: skip
    return judged


def _precision_and_all_true(explanations: list[list[bool]]) -> tuple[float | None, float | None]:
    claims = [verdict for verdicts in explanations for verdict in verdicts]
    stated = [verdicts for verdicts in explanations if verdicts]
    precision = 100 * float(np.mean(claims)) if claims else None
    all_true = 100 * float(np.mean([all(verdicts) for verdicts in stated])) if stated else None
    return precision, all_true


def typical_claims(scores: dict[str, dict[str, float]], emotion_of: dict[str, str]) -> dict[str, list]:
    """Emotion -> the claims of its typical features, most typical first: every claimable feature,
    ranked by the absolute mean z-score over the segments of that emotion (`scores`, `emotion_of`:
    segment id -> z-scores, emotion; the training segments), in the direction of that mean."""
    from train.data.claims import CLAIMABLE, Claim

    typical = {}
    for emotion in sorted(set(emotion_of.values())):
        members = [scores[segment] for segment, each in emotion_of.items() if each == emotion and segment in scores]
        means = {}
        for name in CLAIMABLE:
            values = [member[name] for member in members if not math.isnan(member.get(name, math.nan))]
            if values:
                means[name] = float(np.mean(values))
        ranked = sorted(means, key=lambda name: -abs(means[name]))
        typical[emotion] = [Claim(name, 1 if means[name] > 0 else -1) for name in ranked]
    return typical


def score_faithfulness(rows: Sequence[dict], scores: dict[str, dict[str, float]], emotion_of: dict[str, str],
                       typical: dict[str, list] | None = None) -> dict:  # fmt: skip
    """Per task, how true the explanations' claims are, beside the same-emotion baseline and, with
    `typical` (`typical_claims` of the training segments), the typical-features baseline (see the
    module docstring).

    `rows` are prediction rows with `claims` (from `judge_claims`) and `segment_ids`; `scores`
    maps segment ids to their feature z-scores, `emotion_of` to their true emotion. Tasks whose
    rows have no text (a stage-1 classifier) are left out.
    """
    from train.data.claims import Claim

    by_task: dict[str, list[dict]] = {}
    for row in rows:
        if row.get("text") is not None and "claims" in row:
            by_task.setdefault(row["task"], []).append(row)
    results = {}
    for task, task_rows in by_task.items():
        described = []  # (row index, EEG number, segment, claims as Claim)
        for index, row in enumerate(task_rows):
            for number, segment in enumerate(row["segment_ids"], start=1):
                claims = [Claim(c["feature"], c["direction"]) for c in row["claims"] if c["eeg"] == number]
                described.append((index, number, segment, claims))
        baseline: list[list[bool]] = [[] for _ in task_rows]
        compared = 0
        for position, (index, _, segment, _) in enumerate(described):
            emotion = emotion_of.get(segment)
            donor = next(
                (described[(position + step) % len(described)] for step in range(1, len(described))
                 if described[(position + step) % len(described)][2] != segment
                 and emotion_of.get(described[(position + step) % len(described)][2]) == emotion),
                None,
            )  # fmt: skip
            if donor is None or emotion is None:
                continue
            compared += 1
            baseline[index] += [claim.holds(scores.get(segment, {})) for claim in donor[3]]
        model = [[c["true"] for c in row["claims"]] for row in task_rows]
        precision, all_true = _precision_and_all_true(model)
        baseline_precision, baseline_all_true = _precision_and_all_true(baseline)
        typical_figures = {}
        if typical is not None:
            label_only: list[list[bool]] = [[] for _ in task_rows]
            for index, _, segment, claims in described:
                stated = typical.get(emotion_of.get(segment), [])[: len(set(claims))]
                label_only[index] += [claim.holds(scores.get(segment, {})) for claim in stated]
            typical_precision, typical_all_true = _precision_and_all_true(label_only)
            typical_figures = {
                "typical_claim_precision": typical_precision,
                "typical_all_true": typical_all_true,
                "typical_gap": None if precision is None or typical_precision is None else precision - typical_precision,
            }
        results[task] = {
            "explanations": len(task_rows),
            "described_eegs": len(described),
            "baseline_eegs": compared,
            "claims_per_explanation": float(np.mean([len(claims) for claims in model])),
            "claim_precision": precision,
            "all_true": all_true,
            "baseline_claim_precision": baseline_precision,
            "baseline_all_true": baseline_all_true,
            "gap": None if precision is None or baseline_precision is None else precision - baseline_precision,
            **typical_figures,
        }
    return results


def score_predictions(rows: Iterable[dict], emotions: Sequence[str]) -> dict:
    """Per-task figures in percent from prediction rows (`task`, `gold`, `predicted` or None).

    IED: accuracy, balanced_accuracy, cohen_kappa (x 100), weighted_f1, per_class_accuracy (by
    emotion name), valid_rate, confusion_matrix (counts; the last column is "unreadable").
    EPC/ESS/EIM/ESR: accuracy and valid_rate. Each task has `n` and `random_baseline`;
    `average` is the mean accuracy of the choice tasks evaluated (Table 3).
    """
    from train.evaluation.metrics import load_metric

    by_task: dict[str, list[dict]] = {}
    for row in rows:
        if row["task"] not in TASKS:
            raise ValueError(f"unknown task {row['task']!r} in predictions; expected one of {', '.join(TASKS)}")
        by_task.setdefault(row["task"], []).append(row)

    results: dict = {}
    if "IED" in by_task:
        label = {name: index for index, name in enumerate(emotions)}
        ied = by_task["IED"]
        unknown = sorted({row["gold"] for row in ied} - set(label))
        if unknown:
            raise ValueError(f"IED gold answers {unknown} are not emotions; expected one of {list(emotions)}")
        figures = load_metric("e2llm_ied").compute(
            predictions=[label.get(row["predicted"], -1) if row["predicted"] is not None else -1 for row in ied],
            references=[label[row["gold"]] for row in ied],
            num_labels=len(emotions),
        )
        results["IED"] = {
            "n": len(ied),
            **{key: 100 * figures[key] for key in ("accuracy", "balanced_accuracy", "cohen_kappa", "weighted_f1")},
            "per_class_accuracy": {
                name: None if math.isnan(value) else 100 * value
                for name, value in zip(emotions, figures["per_class_accuracy"])
            },
            "valid_rate": 100 * figures["valid_rate"],
            "random_baseline": RANDOM_BASELINES["IED"],
            "confusion_matrix": figures["confusion_matrix"],
        }
    choice = [task for task in CHOICE_TASKS if task in by_task]
    if choice:
        metric = load_metric("e2llm_choice")
        for task in choice:
            figures = metric.compute(
                predictions=[row["predicted"] or "" for row in by_task[task]],
                references=[row["gold"] for row in by_task[task]],
            )
            results[task] = {
                "n": len(by_task[task]),
                "accuracy": 100 * figures["accuracy"],
                "valid_rate": 100 * figures["valid_rate"],
                "random_baseline": RANDOM_BASELINES[task],
            }
        results["average"] = float(np.mean([results[task]["accuracy"] for task in choice]))
    return results


# ----------------------------------------------------------------------------- tables


def _cell(value) -> str:
    return "–" if value is None else f"{value:.2f}"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def format_split(split: dict) -> str:
    """One paragraph: the split evaluated on and what its test set shares with training."""
    text = f"Split: {split['name']}"
    if split.get("description"):
        text += f" ({split['description']})"
    text += (
        f". Shared with training: {split['subjects_shared']} of {split['test_subjects']} test subjects, "
        f"{split['clips_shared']} of {split['test_clips']} test clips (one subject's recording of one video), "
        f"{split['videos_shared']} of {split['test_videos']} videos; {split['test_segments_in_shared_clips']:.1f} % "
        "of the test segments come from a clip with training segments."
    )
    if split["clips_shared"]:
        text += (
            " Those figures measure recognition of seen subjects and clips; `--split cross-subject` gives the "
            "leak-free protocol."
        )
    return text


def format_tables(results: dict, name: str, emotions: Sequence[str]) -> str:
    """Markdown Tables 2 and 3 of the paper for one run (percent, two decimals), the random baseline, the split."""
    parts = [format_split(results["split"])] if "split" in results else []
    if "IED" in results:
        ied = results["IED"]
        header = ["Model", *[e.capitalize() for e in emotions], "Balanced acc.", "Kappa", "Weighted F1", "Valid answers"]
        per_class = [_cell(ied["per_class_accuracy"].get(e)) for e in emotions]
        rows = [
            [name, *per_class, _cell(ied["balanced_accuracy"]), _cell(ied["cohen_kappa"]),
             _cell(ied["weighted_f1"]), _cell(ied["valid_rate"])],
            ["Random", *[_cell(RANDOM_BASELINES["IED"])] * len(emotions), _cell(RANDOM_BASELINES["IED"]),
             _cell(0.0), "–", "–"],
        ]  # fmt: skip
        parts.append(
            f"Table 2: emotion identification (IED), accuracy per class and overall, % (n = {ied['n']})\n\n"
            + _table(header, rows)
        )
    choice = [task for task in CHOICE_TASKS if task in results]
    if choice:
        header = ["Model", *choice, "Average"]
        chance = [RANDOM_BASELINES[task] for task in choice]
        rows = [
            [name, *[_cell(results[task]["accuracy"]) for task in choice], _cell(results["average"])],
            ["Valid answers", *[_cell(results[task]["valid_rate"]) for task in choice], "–"],
            ["Random", *map(_cell, chance), _cell(float(np.mean(chance)))],
        ]
        counts = ", ".join(f"{task} {results[task]['n']}" for task in choice)
        parts.append(f"Table 3: multi-EEG reasoning, accuracy % (n: {counts})\n\n" + _table(header, rows))
    faithful = [task for task in TASKS if "faithfulness" in results.get(task, {})]
    if faithful:
        typical = any("typical_claim_precision" in results[task]["faithfulness"] for task in faithful)
        header = ["Task", "Explanations", "Claims per explanation", "Claim precision", "All claims true",
                  "Same-emotion baseline: precision", "Baseline: all true", "Gap",
                  *(["Typical features: precision", "Gap to typical"] if typical else [])]  # fmt: skip
        rows = []
        for task in faithful:
            f = results[task]["faithfulness"]
            rows.append([task, str(f["explanations"]), f"{f['claims_per_explanation']:.2f}",
                         *map(_cell, (f["claim_precision"], f["all_true"], f["baseline_claim_precision"],
                                      f["baseline_all_true"], f["gap"])),
                         *(map(_cell, (f.get("typical_claim_precision"), f.get("typical_gap"))) if typical else ())])  # fmt: skip
        parts.append(
            "Faithfulness of the explanations, %: each feature claim checked against the described EEG's measured "
            "features; the baseline copies the claims made for another EEG of the same emotion"
            + ("; the typical features are those of the EEG's emotion on average over the training segments" if typical else "")
            + "\n\n" + _table(header, rows)
        )
    return "\n\n".join(parts) + "\n"


def format_comparison(runs: Sequence[tuple[str, dict]]) -> str:
    """Markdown Table 4 (ablations): one row per run, IED's three summary figures and the choice tasks."""
    header = ["Variant", "Balanced acc.", "Kappa", "Weighted F1", *CHOICE_TASKS, "Average",
              "Split (test segments from trained clips)"]  # fmt: skip
    rows = []
    for name, results in runs:
        ied = results.get("IED", {})
        split = results.get("split")
        rows.append(
            [name, *[_cell(ied.get(key)) for key in ("balanced_accuracy", "cohen_kappa", "weighted_f1")],
             *[_cell(results.get(task, {}).get("accuracy")) for task in CHOICE_TASKS], _cell(results.get("average")),
             f"{split['name']} ({split['test_segments_in_shared_clips']:.1f} %)" if split else "–"]
        )  # fmt: skip
    rows.append(["Random", _cell(RANDOM_BASELINES["IED"]), _cell(0.0), "–",
                 *[_cell(RANDOM_BASELINES[t]) for t in CHOICE_TASKS],
                 _cell(float(np.mean([RANDOM_BASELINES[t] for t in CHOICE_TASKS]))), "–"])  # fmt: skip
    return "Table 4: variants compared, %\n\n" + _table(header, rows) + "\n"


def plot_confusion_matrix(ied: dict, emotions: Sequence[str], path: str | os.PathLike) -> None:
    """Save IED's confusion matrix as a PNG: rows normalised to the share of each true emotion."""
    from matplotlib.figure import Figure

    counts = np.asarray(ied["confusion_matrix"], dtype=np.float64)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    columns = [*emotions, UNREADABLE]
    figure = Figure(figsize=(1.1 * len(columns) + 1.5, 0.9 * len(emotions) + 1.5), layout="constrained")
    axes = figure.subplots()
    image = axes.imshow(shares, vmin=0, vmax=1, cmap="Blues")
    axes.set_xticks(range(len(columns)), columns, rotation=45, ha="right")
    axes.set_yticks(range(len(emotions)), emotions)
    axes.set_xlabel("answer")
    axes.set_ylabel("true emotion")
    axes.set_title(f"IED, balanced accuracy {ied['balanced_accuracy']:.2f} % (n = {ied['n']})")
    for (row, column), value in np.ndenumerate(counts):
        color = "white" if shares[row, column] > 0.5 else "black"
        axes.text(column, row, f"{int(value)}", ha="center", va="center", color=color, fontsize=8)
    figure.colorbar(image, ax=axes, label="share of the true emotion")
    path = Path(path)
    staging = path.with_name(f".{path.name}.partial")
    figure.savefig(staging, format="png", dpi=120)
    os.replace(staging, path)


def write_report(out: str | os.PathLike, results: dict, name: str, emotions: Sequence[str], extra: dict) -> None:
    """results.json, tables.md and (with IED) confusion_matrix.png in `out`."""
    out = Path(out)
    write_atomic(out / "results.json", json.dumps({"name": name, **extra, **results}, indent=2) + "\n")
    write_atomic(out / "tables.md", format_tables(results, name, emotions))
    if "IED" in results:
        plot_confusion_matrix(results["IED"], emotions, out / "confusion_matrix.png")


# ----------------------------------------------------------------------------- generation


def _batches(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _count_eeg(messages: Sequence[dict]) -> int:
    return sum(
        1 for message in messages if not isinstance(message["content"], str)
        for item in message["content"] if item["type"] == "eeg"
    )  # fmt: skip


def _eeg_inputs(store, segment_ids: Sequence[str]) -> dict:
    """Model-ready EEG for the processor: the centred 4 s crop of each segment, in order."""
    from train.data.segments import SEGMENT_CHANNEL_IDS

    windows = store.windows(list(segment_ids), crop="center")
    return {"eeg_values": windows, "eeg_channel_ids": np.broadcast_to(SEGMENT_CHANNEL_IDS, windows.shape[:2])}


def _generate(model, processor, prompts: list[list[dict]], windows: list[dict], max_new_tokens: int) -> list[str]:
    """Greedy answers to a batch of chat prompts (each ending with a user turn)."""
    import torch

    texts = [processor.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    eeg = {
        "eeg_values": np.concatenate([w["eeg_values"] for w in windows]),
        "eeg_channel_ids": np.concatenate([w["eeg_channel_ids"] for w in windows]),
    }
    inputs = processor(text=texts, eeg=eeg, return_tensors="pt", padding=True).to(model.device)
    inputs["eeg_values"] = inputs["eeg_values"].to(model.dtype)
    tokenizer = processor.tokenizer
    with torch.inference_mode():
        output = model.generate(
            **inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
    return tokenizer.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


def answer_batch(model, processor, store, samples: Sequence[dict], max_new_tokens: int) -> list[list[str]]:
    """Generate every assistant turn of each sample, feeding the model its own earlier turns.

    A sample's gold `messages` hold its system/user turns and the gold assistant turns; each
    assistant turn is replaced by what the model generates from everything before it. Returns
    the generated turns per sample (one for IED/EPC/ESS/EIM, two for ESR).
    """
    conversations = [[] for _ in samples]
    generated: list[list[str]] = [[] for _ in samples]
    turns = [[i for i, m in enumerate(s["messages"]) if m["role"] == "assistant"] for s in samples]
    for turn in range(max(map(len, turns))):
        active = [k for k, t in enumerate(turns) if turn < len(t)]
        prompts, windows = [], []
        for k in active:
            start = turns[k][turn - 1] + 1 if turn else 0
            conversations[k].extend(samples[k]["messages"][start : turns[k][turn]])
            needed = _count_eeg(conversations[k])
            if needed > len(samples[k]["segment_ids"]):
                raise ValueError(
                    f"sample {samples[k]['id']!r} has {needed} EEG items but {len(samples[k]['segment_ids'])} segment ids"
                )
            prompts.append(conversations[k])
            windows.append(_eeg_inputs(store, samples[k]["segment_ids"][:needed]))
        for k, text in zip(active, _generate(model, processor, prompts, windows, max_new_tokens)):
            generated[k].append(text)
            conversations[k].append({"role": "assistant", "content": [{"type": "text", "text": text}]})
    return generated


def prediction_row(sample: dict, turns: Sequence[str], scores: dict[str, dict[str, float]] | None = None) -> dict:
    """The predictions.jsonl line of one generated sample; with `scores` (segment id -> feature
    z-scores) its explanation's claims, judged."""
    from train.data.qa import parse_answer

    row = {
        "id": sample["id"],
        "task": sample["task"],
        "segment_ids": list(sample.get("segment_ids", [])),
        "gold": sample["answer"],
        "predicted": parse_answer(sample["task"], turns[-1]),
        "text": turns[-1],
    }
    if len(turns) > 1:
        row["first_turn"] = turns[0]
    if scores is not None:
        row["claims"] = judge_claims(row, scores)
    return row


def select_samples(qa, limit: int | None) -> list[dict]:
    """The test samples of `QA_SPLITS`, at most `limit` per task (the first ones, in split order)."""
    missing = [split for split in QA_SPLITS if split not in qa]
    if missing:
        raise ValueError(f"the QA data lacks the splits {missing}; expected {list(QA_SPLITS)} (from `e2llm prepare`)")
    samples, counts = [], {}
    for split in QA_SPLITS:
        for sample in qa[split]:
            if limit is None or counts.get(sample["task"], 0) < limit:
                counts[sample["task"]] = counts.get(sample["task"], 0) + 1
                samples.append(sample)
    return samples


def evaluate_generation(model, processor, store, samples: Sequence[dict], predictions_path: Path,
                        batch_size: int, max_new_tokens: int,
                        scores: dict[str, dict[str, float]] | None = None) -> list[dict]:  # fmt: skip
    """Answer `samples` batch by batch, appending to `predictions_path`; samples already there are skipped."""
    from tqdm.auto import tqdm

    done = read_predictions(predictions_path)
    finished = {(row["task"], row["id"]) for row in done}
    pending = [s for s in samples if (s["task"], s["id"]) not in finished]
    # Rewrite the kept lines so a line cut short by an interruption disappears before appending.
    write_atomic(predictions_path, "".join(json.dumps(row) + "\n" for row in done))
    with open(predictions_path, "a", encoding="utf-8") as file, tqdm(
        total=len(samples), initial=len(samples) - len(pending), desc="evaluate", unit="sample"
    ) as progress:
        for batch in _batches(pending, batch_size):
            for sample, turns in zip(batch, answer_batch(model, processor, store, batch, max_new_tokens)):
                row = prediction_row(sample, turns, scores)
                done.append(row)
                file.write(json.dumps(row) + "\n")
            file.flush()
            progress.update(len(batch))
    wanted = {(s["task"], s["id"]) for s in samples}
    return [row for row in done if (row["task"], row["id"]) in wanted]


def evaluate_classifier(model, store, segments, predictions_path: Path, batch_size: int,
                        limit: int | None) -> list[dict]:  # fmt: skip
    """IED predictions of a stage-1 classifier on the centred crop of each test segment."""
    import torch
    from tqdm.auto import tqdm

    from train.data.segments import SEGMENT_CHANNEL_IDS

    ids = list(segments["id"])[:limit]
    emotions = list(segments["emotion"])[:limit]
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    channel_ids = torch.as_tensor(SEGMENT_CHANNEL_IDS, device=model.device)
    rows = []
    for batch in tqdm(list(_batches(range(len(ids)), batch_size)), desc="evaluate", unit="batch"):
        windows = torch.as_tensor(store.windows([ids[i] for i in batch], crop="center"), device=model.device)
        with torch.inference_mode():
            logits = model(eeg_values=windows.to(model.dtype), channel_ids=channel_ids).logits
        for i, label in zip(batch, logits.argmax(-1).tolist()):
            rows.append({"id": ids[i], "task": "IED", "gold": emotions[i], "predicted": names[label], "text": None})
    write_atomic(predictions_path, "".join(json.dumps(row) + "\n" for row in rows))
    return rows


def segment_scores(segments) -> dict[str, dict[str, float]] | None:
    """Segment id -> its measured feature z-scores, from a segments split; None for data
    prepared without the feature columns."""
    from train.data.features import FEATURE_NAMES

    if not set(FEATURE_NAMES) <= set(segments.column_names):
        return None
    columns = segments.select_columns(["id", *FEATURE_NAMES]).to_dict()
    return {
        segment: {name: math.nan if columns[name][row] is None else columns[name][row] for name in FEATURE_NAMES}
        for row, segment in enumerate(columns["id"])
    }


def load_processor(path: str | os.PathLike):
    """The `E2LLMProcessor` saved in `path`, built from this package's classes.

    `E2LLMProcessor.from_pretrained` resolves the feature extractor through the folder's
    `auto_map`, and `AutoTokenizer` reads the model's `config.json`; both ask for
    `trust_remote_code` and would mix the folder's copy of the code with this package's. The
    parts are loaded directly instead, so no code from the folder ever runs, and an `auto_map`
    in its tokenizer_config.json is not carried into the folders saved from this processor.
    """
    from transformers import PreTrainedTokenizerFast

    from processing_e2llm import E2LLMFeatureExtractor, E2LLMProcessor

    path = Path(path)
    for name in ("processor_config.json", "tokenizer.json"):
        if not (path / name).exists():
            raise ValueError(f"{path} holds no {name}; expected a folder saved by stage 2 or 3")
    settings = json.loads((path / "processor_config.json").read_text())
    template = path / "chat_template.jinja"
    tokenizer = PreTrainedTokenizerFast.from_pretrained(path)
    tokenizer.init_kwargs.pop("auto_map", None)
    return E2LLMProcessor(
        feature_extractor=E2LLMFeatureExtractor.from_pretrained(path),
        tokenizer=tokenizer,
        chat_template=template.read_text() if template.exists() else None,
        num_eeg_tokens=settings.get("num_eeg_tokens", 16),
    )


def load_for_evaluation(path: str | os.PathLike, device: str, dtype: str):
    """(model, processor or None) from a model folder, in the dtype it was saved in (`dtype="auto"`).

    An E2LLM folder (stage 2, stage 3's `merged/`, or a published folder) gives the model and
    its processor. A stage-3 folder gives its `merged/`, the model `e2llm publish` publishes, when
    the merge passed its check (`merge_check.json`); otherwise its adapter applied with PEFT onto
    its base model, unmerged, as it trained. A stage-1 folder gives the
    `EEGPTForEmotionClassification` and no processor.
    """
    import torch

    from modeling_e2llm import E2LLMConfig, E2LLMForConditionalGeneration, EEGPTForEmotionClassification
    from train.stages.merge import describe_merge_check, peft_wrapping, read_merge_check

    path = Path(path)
    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
    if (path / "adapter_config.json").exists():
        from peft import PeftModel

        check = read_merge_check(path / "merged")
        if check is not None and check["passed"]:
            print(f"Evaluating {path / 'merged'}: {describe_merge_check(check)}", file=sys.stderr)
            return load_for_evaluation(path / "merged", device, dtype)
        base = json.loads((path / "adapter_config.json").read_text())["base_model_name_or_path"]
        model = E2LLMForConditionalGeneration.from_pretrained(base, dtype=torch_dtype)
        with peft_wrapping():
            model = PeftModel.from_pretrained(model, path)
        processor = load_processor(path if (path / "processor_config.json").exists() else base)
    elif not (path / "config.json").exists():
        raise ValueError(f"{path} holds no config.json; expected a model folder saved by stage 1, 2 or 3")
    else:
        config = json.loads((path / "config.json").read_text())
        if config.get("model_type") == E2LLMConfig.model_type:
            model = E2LLMForConditionalGeneration.from_pretrained(path, dtype=torch_dtype)
            processor = load_processor(path)
        elif "EEGPTForEmotionClassification" in config.get("architectures", []):
            model = EEGPTForEmotionClassification.from_pretrained(path, dtype=torch_dtype)
            processor = None
        else:
            raise ValueError(
                f"{path}/config.json describes {config.get('architectures') or config.get('model_type')}; expected "
                "an E2LLM model (stage 2 or 3) or an EEGPTForEmotionClassification (stage 1)"
            )
    return model.to(device).eval(), processor


# ----------------------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="e2llm evaluate",
        description="The paper's metrics (Tables 2-4) for an E2LLM or stage-1 model on the prepared test sets.",
    )
    parser.add_argument("--model", help="model folder: stage 1, stage 2, stage 3 (adapter or merged/), or published")
    parser.add_argument("--data", help="prepared data folder (output of `e2llm prepare`) with segments/ and qa/")
    parser.add_argument("--out", required=True, help="folder for results.json, tables.md, predictions.jsonl, PNG")
    parser.add_argument("--name", help="the run's name in the tables (default: the model folder's name)")
    parser.add_argument("--batch-size", type=int, default=8, help="samples per generation batch (default 8)")
    parser.add_argument("--max-new-tokens", type=int, default=512, help="longest answer per turn (default 512)")
    parser.add_argument("--limit", type=int, help="at most this many samples per task (quick runs)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                        help="weights' dtype (default: as saved)")  # fmt: skip
    parser.add_argument("--dataset-name", help="what --data holds, for the tables and the card (default: read from "
                        "its prepare.json)")
    parser.add_argument("--compare", nargs="+", metavar="RUN",
                        help="evaluation folders (with results.json) to put side by side in Table 4")  # fmt: skip
    return parser


def compare(runs: Sequence[str | os.PathLike], out: str | os.PathLike) -> str:
    """Write `out/comparison.md` (Table 4) from the `results.json` of several evaluation folders."""
    loaded = []
    for run in map(Path, runs):
        if not (run / "results.json").exists():
            raise ValueError(f"{run} holds no results.json; expected a folder written by `e2llm evaluate`")
        results = json.loads((run / "results.json").read_text())
        loaded.append((results.get("name") or run.name, results))
    table = format_comparison(loaded)
    write_atomic(Path(out) / "comparison.md", table)
    return table


def dataset_name(data: str | os.PathLike) -> str:
    """What a prepared folder was made from, for tables and cards: SEED-VII, synthetic data or own recordings."""
    from train.data.synthesize import README as SYNTHETIC_README

    manifest = Path(data) / "prepare.json"
    settings = json.loads(manifest.read_text()) if manifest.exists() else {}
    root = Path(settings.get("root", ""))
    marker = SYNTHETIC_README.splitlines()[0]
    if settings.get("root") and (root / "README.txt").exists() and (root / "README.txt").read_text().startswith(marker):
        return "synthetic SEED-VII-layout data (e2llm synthesize)"
    return {"seed-vii": "SEED-VII", "recordings": "own recordings"}.get(settings.get("dataset"), "unknown data")


def input_digests(model: str | os.PathLike, data: str | os.PathLike) -> dict:
    """SHA-256 digests of what the predictions are made from: `model_digest` over the files of the
    model folder (and, for an adapter, of its local base model's folder), `data_digest` over the
    prepared test segments and QA sets."""
    model, data = Path(model).resolve(), Path(data).resolve()
    folders = [model]
    if (model / "adapter_config.json").is_file():
        base = json.loads((model / "adapter_config.json").read_text()).get("base_model_name_or_path")
        if base and Path(base).is_dir():
            folders.append(Path(base).resolve())
    files = [file for folder in folders for file in folder.iterdir() if file.is_file()]
    return {
        "model_digest": content_digest(files, root=os.path.commonpath(folders)),
        "data_digest": content_digest([data / "segments" / "test", data / "qa"], root=data),
    }


def describe_split(data: str | os.PathLike) -> dict:
    """The split of a prepared folder: `name` (from its prepare.json; "unknown" without one), its
    `description`, the segment counts and its leakage (`train.data.prepare.split_leakage`)."""
    import datasets

    from train.data.prepare import SPLIT_DESCRIPTIONS, split_leakage

    manifest = Path(data) / "prepare.json"
    name = (json.loads(manifest.read_text()) if manifest.exists() else {}).get("split", "unknown")
    segments = datasets.load_from_disk(str(Path(data) / "segments"))
    train, test = (segments[part].select_columns(["subject", "video"]).to_dict() for part in ("train", "test"))
    return {
        "name": name, "description": SPLIT_DESCRIPTIONS.get(name), "train_segments": len(train["subject"]),
        "test_segments": len(test["subject"]),
        **split_leakage(train["subject"], train["video"], test["subject"], test["video"]),
    }  # fmt: skip


def check_resumable(out: Path, settings: dict) -> None:
    """Refuse to append to predictions made with another model, data or answer length; start the
    predictions again when the files of the same model or data folder changed since they were made."""
    path, predictions = out / "run.json", out / "predictions.jsonl"
    keys = ("model", "data", "max_new_tokens", "kind")
    if path.exists() and predictions.exists():
        before = json.loads(path.read_text())
        changed = [key for key in keys if before.get(key) != settings.get(key)]
        if changed:
            raise ValueError(
                f"{out} holds predictions made with other {', '.join(changed)} ({path}); choose another --out "
                "or delete its predictions.jsonl"
            )
        stale = [what for key, what in (("model_digest", "model's files"), ("data_digest", "prepared test data"))
                 if before.get(key) != settings.get(key)]  # fmt: skip
        if stale:
            print(f"The {' and the '.join(stale)} changed since {predictions} was written: answering every "
                  "sample again", file=sys.stderr)  # fmt: skip
            predictions.unlink()
    write_atomic(path, json.dumps(settings, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    with output_lock(args.out, "e2llm evaluate"):
        return run(args)


def run(args: argparse.Namespace) -> int:
    """`e2llm evaluate` with parsed arguments, its output folder held by the caller."""
    if args.compare:
        print(compare(args.compare, args.out))
        return 0
    if not args.model or not args.data:
        _parser().error("--model and --data are required (or --compare RUN...)")
    if args.batch_size < 1 or args.max_new_tokens < 1 or (args.limit is not None and args.limit < 1):
        _parser().error("--batch-size, --max-new-tokens and --limit must be positive")

    import datasets
    import torch

    from train.data.segments import SegmentStore
    from train.data.qa import EMOTIONS

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    data, out = Path(args.data), Path(args.out)
    for part in ("segments", "qa"):
        if not (data / part).is_dir():
            raise ValueError(f"{data} has no {part}/; expected a folder written by `e2llm prepare`")
    out.mkdir(parents=True, exist_ok=True)
    splits = datasets.load_from_disk(str(data / "segments"))
    segments = splits["test"]
    store = SegmentStore(segments)
    model, processor = load_for_evaluation(args.model, device, args.dtype)
    name = args.name or Path(args.model).resolve().name
    predictions_path = out / "predictions.jsonl"
    settings = {
        "model": str(Path(args.model).resolve()), "data": str(data.resolve()),
        "kind": "E2LLM" if processor is not None else "stage-1 classifier",
        "max_new_tokens": args.max_new_tokens, "limit": args.limit, "batch_size": args.batch_size,
        **input_digests(args.model, data),
    }  # fmt: skip
    check_resumable(out, settings)
    if processor is None:
        rows = evaluate_classifier(model, store, segments, predictions_path, args.batch_size, args.limit)
    else:
        samples = select_samples(datasets.load_from_disk(str(data / "qa")), args.limit)
        scores = segment_scores(segments)
        rows = evaluate_generation(
            model, processor, store, samples, predictions_path, args.batch_size, args.max_new_tokens, scores
        )
    results = score_predictions(rows, EMOTIONS)
    results["split"] = describe_split(data)
    if processor is not None and scores is not None:
        emotion_of = dict(zip(segments["id"], segments["emotion"]))
        typical = None
        training = splits.get("train")
        training_scores = segment_scores(training) if training is not None and len(training) else None
        if training_scores is not None:
            typical = typical_claims(training_scores, dict(zip(training["id"], training["emotion"])))
        for task, figures in score_faithfulness(rows, scores, emotion_of, typical).items():
            results[task]["faithfulness"] = figures
    extra = {"dataset": args.dataset_name or dataset_name(data), "units": "percent", "settings": settings}
    write_report(out, results, name, EMOTIONS, extra)
    print(format_tables(results, name, EMOTIONS))
    print(f"Wrote results.json, tables.md and predictions.jsonl to {out}", file=sys.stderr)
    return 0
