"""Folding the stage-3 LoRA adapter into the weights, and measuring what the merge changed.

`merge_in_float32` adds each adapted weight's update, W + (alpha / r) B A, in float32 and rounds
the sum once to the model's storage dtype. PEFT's own merge of a bfloat16 model rounds the update
to bfloat16 before adding it; either way the merged weight is then a bfloat16 number, whose
spacing near |W| (2^-8 |W|) can be as large as a short run's update. So every merge is followed by
`check_merge`, which compares the merged model with the model that trained (the base model with
the adapter applied, its LoRA weights in float32) on a few QA samples:

- the logits at the answer positions, teacher-forced: their largest difference, how often the
  argmax agrees, and `logit_error`, the size of the difference against the size of what stage 3
  changed in the same logits (base + adapter against the base with the adapter disabled);
- the greedy answers, generated from each sample's questions.

The merge passes when `logit_error` is at most `max_error` (stage 3's `merge_max_error`, 0.1 by
default): the merged model then keeps what stage 3 changed in the answers' logits to within a
tenth, and the differences left are of the size bfloat16 rounding of any weight makes. Where it
does not pass (a short run, a small learning rate: an update near the weights' rounding step),
`e2llm evaluate` and `e2llm publish` of the stage-3 folder use the adapter, whose float32 weights
are exact, instead of `merged/`.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path

import torch

MERGE_CHECK = "merge_check.json"


@contextlib.contextmanager
def peft_wrapping():
    """PEFT 0.21 reads `model.is_gradient_checkpointing` when it wraps a model, a name transformers 5
    deprecates for `is_activation_checkpointing`; the warning is about PEFT's code, not the run's."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def merge_in_float32(peft_model) -> tuple:
    """(the base model with the adapter folded in, the weight error): each adapted layer's weight and
    update summed in float32, then the whole model in its storage dtype (the adapted projector
    included). The weight error is the norm of what rounding the sums changed against the norm of
    the updates, over all adapted weights."""
    from peft.tuners.lora import LoraLayer

    from train.stages.parts import storage_dtype

    dtype = storage_dtype(peft_model)
    rounding = update = 0.0
    for module in peft_model.modules():
        if isinstance(module, LoraLayer):
            base = module.get_base_layer().float()
            with torch.no_grad():
                delta = sum(module.get_delta_weight(name) for name in module.active_adapters)
                exact = base.weight + delta
                rounding += float((exact.to(dtype).float() - exact).pow(2).sum())
                update += float(delta.float().pow(2).sum())
    merged = peft_model.merge_and_unload().to(dtype)
    return merged, (rounding / update) ** 0.5 if update > 0 else 0.0


def _answer_logits(model, batch: dict) -> torch.Tensor:
    """(answer positions, vocabulary) float32 logits, teacher-forced, on the CPU."""
    from train.stages.trainer import answer_mask

    mask = answer_mask(batch["labels"])
    inputs = {key: value.to(model.device) for key, value in batch.items() if key != "labels"}
    inputs["eeg_values"] = inputs["eeg_values"].to(model.dtype)
    with torch.inference_mode():
        logits = model(**inputs, use_cache=False, logits_to_keep=mask.to(model.device)).logits
    return logits.float().cpu()


def _generated_answers(model, processor, store, samples: list[dict], max_new_tokens: int) -> list[str]:
    from train.evaluation.evaluate import answer_batch

    return [turns[0] for turns in answer_batch(model, processor, store, samples, max_new_tokens)]


def check_merge(peft_model, processor, collator, samples: list[dict], max_new_tokens: int, max_error: float):
    """Merge `peft_model` with `merge_in_float32` and compare the merged model with it on `samples` (QA
    rows; `collator` builds their teacher-forced batches, one sample each, EEG centred).

    Returns (merged model, report): the report holds `logit_error`, `max_error`, `passed`,
    `weight_update_error` (how much of the q/k updates' norm the rounding of the merged weights
    changed: recorded, not a criterion, since what the model answers is what counts),
    `max_abs_logit_difference`, `stage3_max_abs_logit_change`, `argmax_agreement` over
    `answer_positions`, `identical_greedy_answers` of `samples`, and both models' greedy answers.
    """
    if not samples:
        raise ValueError("check_merge needs at least one QA sample to compare the merged model on")
    batches = [collator([{**sample, "eeg_crop": "center"}]) for sample in samples]
    peft_model.eval()
    reference, change = [], 0.0
    for batch in batches:
        logits = _answer_logits(peft_model, batch)
        with peft_model.disable_adapter():
            base = _answer_logits(peft_model, batch)
        change = max(change, float((logits - base).abs().max()))
        reference.append((logits, float((logits - base).pow(2).sum())))
        del base
    adapter_answers = _generated_answers(peft_model, processor, collator.segments, samples, max_new_tokens)

    merged, weight_error = merge_in_float32(peft_model)
    merged.eval()
    difference = stage3 = largest = 0.0
    agree = positions = 0
    for batch, (logits, change_squared) in zip(batches, reference):
        merged_logits = _answer_logits(merged, batch)
        difference += float((merged_logits - logits).pow(2).sum())
        stage3 += change_squared
        largest = max(largest, float((merged_logits - logits).abs().max()))
        agree += int((merged_logits.argmax(-1) == logits.argmax(-1)).sum())
        positions += logits.shape[0]
    merged_answers = _generated_answers(merged, processor, collator.segments, samples, max_new_tokens)

    logit_error = (difference / stage3) ** 0.5 if stage3 > 0 else float("inf")
    report = {
        "logit_error": logit_error,
        "max_error": max_error,
        "passed": logit_error <= max_error,
        "weight_update_error": weight_error,
        "max_abs_logit_difference": largest,
        "stage3_max_abs_logit_change": change,
        "argmax_agreement": agree / positions,
        "answer_positions": positions,
        "identical_greedy_answers": sum(a == b for a, b in zip(adapter_answers, merged_answers)),
        "samples": len(samples),
        "greedy_new_tokens": max_new_tokens,
        "merged_dtype": str(next(merged.parameters()).dtype).removeprefix("torch."),
        "greedy_answers": [
            {"id": sample.get("id"), "adapter": a, "merged": b}
            for sample, a, b in zip(samples, adapter_answers, merged_answers)
        ],
    }
    return merged, report


def read_merge_check(folder: str | Path) -> dict | None:
    """The `merge_check.json` of a stage-3 or merged folder, or None when it has none."""
    path = Path(folder) / MERGE_CHECK
    return json.loads(path.read_text()) if path.is_file() else None


def describe_merge_check(report: dict) -> str:
    """One sentence for logs and model cards."""
    verdict = "within" if report["passed"] else "above"
    return (
        f"compared with base + adapter on {report['samples']} samples: logits at the {report['answer_positions']} "
        f"answer positions differ by {report['logit_error']:.3f} of what stage 3 changed in them ({verdict} the "
        f"threshold {report['max_error']}; largest difference {report['max_abs_logit_difference']:.3g}), the argmax "
        f"agrees at {100 * report['argmax_agreement']:.1f} % of them, and {report['identical_greedy_answers']} of "
        f"{report['samples']} greedy answers ({report['greedy_new_tokens']} tokens) are identical; rounding the "
        f"merged weights changed them by {report['weight_update_error']:.2f} of the LoRA update's norm"
    )
