"""Stage 1: the EEGPT encoder learns the seven emotions from 4 s EEG windows.

    e2llm stage1 --config train/recipes/qwen3-4b/stage1.yaml \\
        --data prepared/ --encoder eegpt_mcae_58chs_4s_large4E.ckpt --output_dir runs/stage1

    accelerate launch --config_file train/recipes/accelerate/ddp-2gpu.yaml -m train.stages.stage1 \\
        --config train/recipes/qwen3-8b/stage1.yaml

`EEGPTForEmotionClassification` (EEGPT + mean over its summary vectors + a linear head, which
returns its cross-entropy loss) is trained by `transformers.Trainer` on the 10 s segments of
`DATA/segments/train`. `EmotionWindowCollator` cuts a fresh random 4 s crop of every segment each
time it is read. A stratified `validation_fraction` of the training segments is held out and read
through its centred crop; after every epoch the validation set is scored (balanced accuracy,
accuracy, Cohen's kappa through the project's `e2llm_ied` metric) and a checkpoint written, and
the epoch with the best balanced accuracy is loaded at the end (`load_best_model_at_end`) and saved
to `output_dir` with `save_pretrained` (safetensors): what stage 2 reads (`--encoder runs/stage1`)
and what `e2llm evaluate --model runs/stage1` scores. `trainer_state.json` there holds every epoch's
figures and the best checkpoint, `eval_results.json` the best model's validation figures. The test
split is never touched.

The paper's recipe: AdamW (weight decay 0.01), lr 1e-4, batch 64, one-cycle schedule, 50 epochs,
given to the Trainer as torch's `AdamW` and `OneCycleLR` (`optimizers=`). The batch is per process
(`per_device_train_batch_size` x processes x `gradient_accumulation_steps` = 64 in the recipes).
Arguments are TRL's parser's (`--config RECIPE.yaml`, any field overridable on the command line):
`Stage1Arguments` and `transformers.TrainingArguments` (`--max_steps`, `--bf16`, ...).
`--resume true` continues from the last checkpoint in `output_dir`; Trainer's resume reads
safetensors, JSON and `torch.load(weights_only=True)` files only.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from train.stages.config import Stage1Arguments

# The Trainer's choices that stage 1 depends on, whatever the recipe says: the best epoch is picked
# on the validation set's balanced accuracy, so every epoch is evaluated and checkpointed.
FIXED_TRAINING_ARGUMENTS = {
    "eval_strategy": "epoch",
    "save_strategy": "epoch",
    "load_best_model_at_end": True,
    "metric_for_best_model": "balanced_accuracy",
    "greater_is_better": True,
    "remove_unused_columns": False,  # the collator reads segments by their `id`
    "label_names": ["labels"],
}


def split_validation(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, validation): `fraction` of each class, at least one per class when fraction > 0."""
    rng = np.random.default_rng(seed)
    train, validation = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        held = max(1, round(fraction * len(members))) if fraction > 0 else 0
        validation.append(members[:held])
        train.append(members[held:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(validation))


def balanced_subset(indices: np.ndarray, labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """At most `size` of `indices`, the same number from each class where the classes allow."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels[indices])
    per_class = math.ceil(size / len(classes))
    chosen = [rng.permutation(indices[labels[indices] == c])[:per_class] for c in classes]
    return np.sort(rng.permutation(np.concatenate(chosen))[:size])


class EmotionWindowCollator:
    """Rows of `DATA/segments` (`id`, `label`, optionally `eeg_crop`) -> a classifier batch.

    Args:
        segments: a `train.data.segments.SegmentStore` over the split the rows come from.
        crop: "random" (training) or "center" (evaluation); a row's `eeg_crop` overrides it.

        features: segment id -> its measured features (`segment_feature_targets`), to learn
            besides the emotion (`feature_loss_weight`); None: the emotion alone.

    Returns (from `__call__(rows)`): `eeg_values` (B, 58, 1024) float32 in mV, `channel_ids`
    (B, 58), `labels` (B,) and, with `features`, `feature_targets` (B, features) float32 (NaN
    where a segment lacks one). Random crops are drawn from torch's generator, which the Trainer
    seeds, gives each DataLoader worker its own stream of, and saves in every checkpoint: a
    resumed run crops as the uninterrupted run would.
    """

    def __init__(self, segments, crop: str = "random", features: dict[str, np.ndarray] | None = None):
        if crop not in ("random", "center"):
            raise ValueError(f"crop must be 'random' or 'center', got {crop!r}")
        self.segments, self.crop, self.features = segments, crop, features

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        from train.data.segments import SEGMENT_CHANNEL_IDS

        crops = [row.get("eeg_crop") or self.crop for row in rows]
        windows = [None] * len(rows)
        for crop in set(crops):
            chosen = [i for i, each in enumerate(crops) if each == crop]
            rng = np.random.default_rng(int(torch.randint(2**62, ()))) if crop == "random" else None
            for i, window in zip(chosen, self.segments.windows([rows[i]["id"] for i in chosen], crop=crop, rng=rng)):
                windows[i] = window
        batch = {
            "eeg_values": torch.from_numpy(np.stack(windows)),
            "channel_ids": torch.as_tensor(SEGMENT_CHANNEL_IDS).expand(len(rows), -1),
            "labels": torch.tensor([int(row["label"]) for row in rows]),
        }
        if self.features is not None:
            batch["feature_targets"] = torch.from_numpy(np.stack([self.features[row["id"]] for row in rows]))
        return batch


def build_classifier(args: Stage1Arguments):
    """`EEGPTForEmotionClassification` over the seven emotions, its encoder from `args.encoder`."""
    from modeling_e2llm import EEGPTForEmotionClassification
    from train.data.qa import EMOTIONS
    from train.stages.parts import load_eeg_encoder

    id2label = dict(enumerate(EMOTIONS))
    if args.encoder is not None and Path(args.encoder).is_dir():
        model = EEGPTForEmotionClassification.from_pretrained(args.encoder)
        if model.config.num_labels != len(EMOTIONS):
            raise ValueError(f"{args.encoder} classifies {model.config.num_labels} classes, not the {len(EMOTIONS)} emotions")
        return _with_attention(model, args.attn_implementation)
    encoder = load_eeg_encoder(
        args.encoder, args.encoder_preset, args.encoder_input_scale, args.encoder_initializer_range
    )
    config = encoder.config
    config.num_labels = len(EMOTIONS)
    config.id2label = id2label
    config.label2id = {name: index for index, name in id2label.items()}
    model = EEGPTForEmotionClassification(config)
    model.eegpt.load_state_dict(encoder.state_dict())
    return _with_attention(model, args.attn_implementation)


def _with_attention(model, attn_implementation: str | None):
    """`model`, its attention computed by `attn_implementation` when one is named."""
    if attn_implementation is not None:
        model.set_attn_implementation(attn_implementation)
    return model


def build_datasets(args: Stage1Arguments, seed: int):
    """(train rows, validation rows, segment store): `id` and `label` of the training segments, the
    validation rows marked for the centred crop."""
    from train.data.segments import SegmentStore
    from train.stages.parts import load_segments

    segments = load_segments(args.data)["train"]
    labels = np.asarray(segments["label"])
    train_index, validation_index = split_validation(labels, args.validation_fraction, seed)
    if args.max_train_segments is not None:
        train_index = balanced_subset(train_index, labels, args.max_train_segments, seed)
    if len(validation_index) == 0:
        raise ValueError("validation_fraction must be > 0: the best epoch is chosen on held-out segments")
    rows = segments.select_columns(["id", "label"])
    validation = rows.select(validation_index)
    validation = validation.add_column("eeg_crop", ["center"] * len(validation))
    return rows.select(train_index), validation, SegmentStore(segments)


def segment_feature_targets(segments) -> dict[str, np.ndarray]:
    """Segment id -> the z-scores of its claimable measured features (`train.data.claims.CLAIMABLE`,
    in that order; NaN where the segment lacks one): what the feature head learns."""
    from train.data.claims import CLAIMABLE

    missing = [name for name in CLAIMABLE if name not in segments.column_names]
    if missing:
        raise ValueError(
            f"The segments lack the measured feature columns {missing[:3]}... that feature_loss_weight trains on: "
            "prepare the data again with this version of `e2llm prepare`, which writes them"
        )
    columns = segments.select_columns(["id", *CLAIMABLE]).to_dict()
    table = np.array([columns[name] for name in CLAIMABLE], dtype=np.float32).T  # (segments, features)
    return dict(zip(columns["id"], table))


def add_feature_head(model) -> None:
    """Give `model` (`EEGPTForEmotionClassification`) `feature_head`, a linear map from the pooled
    vector its emotion head reads to the claimable features (trained by `stage1_trainer`'s trainer)."""
    from train.data.claims import CLAIMABLE

    model.feature_head = torch.nn.Linear(model.config.embed_dim, len(CLAIMABLE))


class _FeatureLoss:
    """`Trainer` methods for stage 1 with `feature_loss_weight`: the loss adds that weight times the
    mean squared error of `model.feature_head` (a linear map of the pooled vector the emotion head
    reads) against the batch's `feature_targets` (NaN: not scored); `feature_mse` is logged."""

    feature_loss_weight = 0.0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        targets = inputs.pop("feature_targets", None)
        classifier = self.accelerator.unwrap_model(model)
        if targets is None or not hasattr(classifier, "feature_head"):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        pooled = []
        handle = classifier.classifier.register_forward_hook(lambda module, args, output: pooled.append(args[0]))
        try:
            loss, outputs = super().compute_loss(model, inputs, True, num_items_in_batch)
        finally:
            handle.remove()
        predicted = classifier.feature_head(pooled[0].float())
        known = ~torch.isnan(targets)
        error = ((predicted - targets.nan_to_num()).pow(2) * known).sum() / known.sum().clamp(min=1)
        self._feature_errors.setdefault("train" if model.training else "eval", []).append(error.item())
        loss = loss + self.feature_loss_weight * error
        return (loss, outputs) if return_outputs else loss

    def log(self, logs, *args, **kwargs):
        mode = "eval" if any(key.startswith("eval_") for key in logs) else "train"
        errors = self._feature_errors.pop(mode, None)
        if errors:
            logs[f"{'eval_' if mode == 'eval' else ''}feature_mse"] = round(float(np.mean(errors)), 4)
        return super().log(logs, *args, **kwargs)


def stage1_trainer(feature_loss_weight: float):
    """`transformers.Trainer`, or with `feature_loss_weight` > 0 one that also teaches the feature head."""
    from transformers import Trainer

    if not feature_loss_weight:
        return Trainer
    if feature_loss_weight < 0:
        raise ValueError(f"feature_loss_weight must be 0 or more, got {feature_loss_weight}")

    class FeatureTrainer(_FeatureLoss, Trainer):
        pass

    FeatureTrainer.feature_loss_weight = feature_loss_weight
    FeatureTrainer._feature_errors = {}
    return FeatureTrainer


def one_cycle_steps(training_args, train_rows: int) -> int:
    """The optimiser steps the Trainer will take: `max_steps`, or the epochs' worth of update steps
    (batches per process, as accelerate shards them, over gradient accumulation)."""
    if training_args.max_steps > 0:
        return training_args.max_steps
    batches = train_rows // training_args.per_device_train_batch_size
    if not training_args.dataloader_drop_last:
        batches = math.ceil(train_rows / training_args.per_device_train_batch_size)
    per_process = math.ceil(batches / training_args.world_size)
    updates = max(math.ceil(per_process / training_args.gradient_accumulation_steps), 1)
    return math.ceil(training_args.num_train_epochs * updates)


def build_optimizers(model, args: Stage1Arguments, training_args, train_rows: int):
    """AdamW and the one-cycle schedule over the whole run, as the paper trains stage 1."""
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=training_args.learning_rate, weight_decay=training_args.weight_decay
    )
    total = one_cycle_steps(training_args, train_rows)
    # OneCycleLR divides by the length of each phase: a run of a few steps (a smoke test) gets
    # phases of at least one step rather than a ZeroDivisionError.
    total = max(total, 4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=training_args.learning_rate,
        total_steps=total,
        pct_start=min(max(args.pct_start, 2 / total), 0.5),
    )
    return optimizer, scheduler


def metrics_function():
    """`compute_metrics` for the Trainer: the `e2llm_ied` figures of the logits' argmax."""
    from train.evaluation.metrics import load_metric

    metric = load_metric("e2llm_ied")

    def compute_metrics(prediction) -> dict[str, float]:
        predicted = np.asarray(prediction.predictions).argmax(-1)
        figures = metric.compute(predictions=predicted, references=np.asarray(prediction.label_ids))
        return {key: figures[key] for key in ("balanced_accuracy", "accuracy", "cohen_kappa")}

    return compute_metrics


def parse_arguments(argv: list[str] | None):
    """(Stage1Arguments, TrainingArguments) from `--config RECIPE.yaml` and the command line."""
    from transformers import TrainingArguments

    from train.stages.stage2 import recipe_parser

    argv = list(sys.argv[1:] if argv is None else argv)
    # A recipe's `bf16: true` is turned off, with a warning, where bf16 autocast is not available (as in stages 2-3).
    parser = recipe_parser(argv)((Stage1Arguments, TrainingArguments))
    parser.set_defaults(
        num_train_epochs=50, per_device_train_batch_size=64, per_device_eval_batch_size=128,
        learning_rate=1e-4, weight_decay=0.01, save_total_limit=2, logging_strategy="epoch", report_to="none",
    )  # fmt: skip
    args, training_args = parser.parse_args_and_config(argv)
    for key, value in FIXED_TRAINING_ARGUMENTS.items():
        setattr(training_args, key, value)
    return args, training_args


def main(argv: list[str] | None = None) -> int:
    from train.io import output_lock

    args, training_args = parse_arguments(argv)
    with output_lock(training_args.output_dir, "e2llm stage1", enabled=training_args.process_index == 0):
        return run(args, training_args)


def run(args: Stage1Arguments, training_args) -> int:
    """Stage 1 with parsed arguments; the caller holds the output folder (`train.io.output_lock`)."""
    from transformers import set_seed

    from train.data.segments import SEGMENT_CHANNEL_IDS
    from train.stages.parts import check_channels
    from train.stages.stage2 import last_checkpoint

    set_seed(training_args.seed)
    train_rows, validation_rows, store = build_datasets(args, training_args.seed)
    model = build_classifier(args)
    check_channels(model.config, SEGMENT_CHANNEL_IDS)
    features = None
    if args.feature_loss_weight:
        from train.stages.parts import load_segments

        features = segment_feature_targets(load_segments(args.data)["train"])
        if not hasattr(model, "feature_head"):
            add_feature_head(model)

    trainer = stage1_trainer(args.feature_loss_weight)(
        model=model,
        args=training_args,
        data_collator=EmotionWindowCollator(store, crop="random", features=features),
        train_dataset=train_rows,
        eval_dataset=validation_rows,
        compute_metrics=metrics_function(),
        optimizers=build_optimizers(model, args, training_args, len(train_rows)),
    )
    trainer.train(resume_from_checkpoint=last_checkpoint(training_args.output_dir, args.resume))
    trainer.save_state()
    metrics = trainer.evaluate()
    if hasattr(model, "feature_head"):
        del model.feature_head  # a training aid: the saved encoder and emotion head are the model
    trainer.save_model(training_args.output_dir)
    trainer.save_metrics("eval", metrics)
    if trainer.is_world_process_zero():
        print(
            f"Stage 1 done: validation balanced accuracy {metrics['eval_balanced_accuracy']:.4f} "
            f"(best checkpoint {trainer.state.best_model_checkpoint}); encoder saved to {training_args.output_dir}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
