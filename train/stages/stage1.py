"""Stage 1: the EEGPT encoder learns the seven emotions from 4 s EEG windows.

    e2llm stage1 --config train/recipes/qwen3-8b/stage1.yaml \\
        --data prepared/ --encoder eegpt_mcae_58chs_4s_large4E.ckpt --output_dir runs/stage1

    accelerate launch --config_file train/recipes/accelerate/ddp-2gpu.yaml -m train.stages.stage1 \\
        --config train/recipes/qwen3-8b/stage1.yaml --data prepared/ \\
        --encoder eegpt_mcae_58chs_4s_large4E.ckpt --output_dir runs/stage1

`EEGPTForEmotionClassification` (EEGPT + mean over its summary vectors + a linear head) is
trained with cross-entropy on the 10 s segments of `DATA/segments/train`, each epoch on a fresh
random 4 s crop of every segment. A stratified `validation_fraction` of the training segments
is held out and read through its centred crop; the epoch with the best balanced accuracy there
is saved to `output_dir` with `save_pretrained` (safetensors), which is what stage 2 reads
(`--encoder runs/stage1`). The test split is never touched.

The paper's recipe: AdamW (weight decay 0.01), lr 1e-4, global batch 64, one-cycle schedule,
50 epochs. `accelerate` gives mixed precision (`--mixed_precision bf16`) and several processes;
the batch is global and split across them, so the schedule is the same on any number of GPUs.

After every epoch the full training state (model, optimiser, schedule, RNG, epoch, history) is
written to `output_dir/checkpoint`, swapped in atomically; `--resume` continues from it and
reaches the same weights as an uninterrupted run. Crops depend only on (seed, epoch, segment)
and the shuffling only on (seed, epoch).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from train.stages.config import Stage1Arguments

CHECKPOINT = "checkpoint"
STATE_FILE = "training_state.json"


def balanced_accuracy(labels: np.ndarray, predictions: np.ndarray) -> float:
    """Mean over the classes present in `labels` of the fraction of that class predicted right."""
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    recalls = [np.mean(predictions[labels == c] == c) for c in np.unique(labels)]
    return float(np.mean(recalls))


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


class SegmentWindows(Dataset):
    """4 s windows of prepared segments with their emotion labels.

    Item i is (window (58, 1024) float32 in mV, label int). With crop "random" the window of
    segment i in epoch e starts where the generator seeded (seed, e, i) puts it, so crops are
    fresh every epoch yet reproducible; "center" always takes the middle 4 s.
    """

    def __init__(self, store, ids: list[str], labels: np.ndarray, crop: str, seed: int):
        self.store, self.ids, self.labels = store, ids, labels
        self.crop, self.seed, self.epoch = crop, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int):
        rng = np.random.default_rng([self.seed, self.epoch, index]) if self.crop == "random" else None
        window = self.store.windows([self.ids[index]], crop=self.crop, rng=rng)[0]
        return torch.from_numpy(window), int(self.labels[index])


def build_classifier(args: Stage1Arguments):
    """`EEGPTForEmotionClassification` over the seven emotions, its encoder from `args.encoder`."""
    from modeling_e2llm import EEGPTConfig, EEGPTForEmotionClassification
    from train.stages.parts import load_eeg_encoder
    from train.data.qa import EMOTIONS

    id2label = dict(enumerate(EMOTIONS))
    if args.encoder is not None and Path(args.encoder).is_dir():
        model = EEGPTForEmotionClassification.from_pretrained(args.encoder)
        if model.config.num_labels != len(EMOTIONS):
            raise ValueError(f"{args.encoder} classifies {model.config.num_labels} classes, not the {len(EMOTIONS)} emotions")
        return model
    encoder = load_eeg_encoder(
        args.encoder, args.encoder_preset, args.encoder_input_scale, args.encoder_initializer_range
    )
    config = encoder.config
    config.num_labels = len(EMOTIONS)
    config.id2label = id2label
    config.label2id = {name: index for index, name in id2label.items()}
    model = EEGPTForEmotionClassification(config)
    model.eegpt.load_state_dict(encoder.state_dict())
    return model


def evaluate(model, loader, channel_ids, accelerator) -> tuple[float, float]:
    """(mean cross-entropy, balanced accuracy) over `loader`, gathered from every process."""
    model.eval()
    losses, predictions, labels = [], [], []
    with torch.no_grad():
        for windows, targets in loader:
            logits = model(eeg_values=windows, channel_ids=channel_ids).logits
            loss = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="none")
            loss, predicted, targets = accelerator.gather_for_metrics((loss, logits.argmax(-1), targets))
            losses.append(loss.cpu())
            predictions.append(predicted.cpu())
            labels.append(targets.cpu())
    model.train()
    return (
        float(torch.cat(losses).mean()),
        balanced_accuracy(torch.cat(labels).numpy(), torch.cat(predictions).numpy()),
    )


def _save_best(model, output_dir: Path, metrics: dict) -> None:
    def write(folder: Path) -> None:
        model.save_pretrained(folder, safe_serialization=True)
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2))

    fresh = output_dir / ".best.tmp"
    shutil.rmtree(fresh, ignore_errors=True)
    write(fresh)
    # Each file is replaced atomically; stage 2 reads the folder only after stage 1 ends.
    for path in fresh.iterdir():
        os.replace(path, output_dir / path.name)
    fresh.rmdir()


def main(argv: list[str] | None = None) -> int:
    from accelerate import PartialState
    from trl import TrlParser

    from train.io import output_lock

    (args,) = TrlParser((Stage1Arguments,)).parse_args_and_config(argv)
    with output_lock(args.output_dir, "e2llm stage1", enabled=PartialState().is_main_process):
        return run(args)


def run(args: Stage1Arguments) -> int:
    """Stage 1 with parsed arguments; the caller holds the output folder (`train.io.output_lock`)."""
    from accelerate import Accelerator, DataLoaderConfiguration
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    from train.data.segments import SEGMENT_CHANNEL_IDS, SegmentStore
    from train.stages.parts import check_channels, load_segments

    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        dataloader_config=DataLoaderConfiguration(split_batches=True, use_seedable_sampler=True),
    )
    if args.batch_size % accelerator.num_processes or args.eval_batch_size % accelerator.num_processes:
        raise ValueError(
            f"batch_size {args.batch_size} and eval_batch_size {args.eval_batch_size} are global batches and must "
            f"divide by the {accelerator.num_processes} processes"
        )
    set_seed(args.seed)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    segments = load_segments(args.data)["train"]
    labels = np.asarray(segments["label"])
    ids = list(segments["id"])
    train_index, validation_index = split_validation(labels, args.validation_fraction, args.seed)
    if args.max_train_segments is not None:
        train_index = balanced_subset(train_index, labels, args.max_train_segments, args.seed)
    if len(validation_index) == 0:
        raise ValueError("validation_fraction must be > 0: the best epoch is chosen on held-out segments")
    store = SegmentStore(segments)
    train_set = SegmentWindows(store, [ids[i] for i in train_index], labels[train_index], "random", args.seed)
    validation_set = SegmentWindows(store, [ids[i] for i in validation_index], labels[validation_index], "center", args.seed)

    model = build_classifier(args)
    channel_ids = torch.as_tensor(SEGMENT_CHANNEL_IDS)
    check_channels(model.config, channel_ids)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    train_loader = DataLoader(
        train_set, batch_size=args.batch_size, shuffle=True, num_workers=args.dataloader_num_workers
    )
    validation_loader = DataLoader(validation_set, batch_size=args.eval_batch_size, num_workers=args.dataloader_num_workers)
    model, optimizer, train_loader, validation_loader = accelerator.prepare(
        model, optimizer, train_loader, validation_loader
    )
    steps_per_epoch = len(train_loader)
    # OneCycleLR divides by the length of each phase: very short runs (a smoke test) get phases
    # of at least two steps rather than a ZeroDivisionError.
    total_steps = max(args.num_train_epochs * steps_per_epoch, 4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=args.learning_rate,
        total_steps=total_steps,
        pct_start=min(max(args.pct_start, 2 / total_steps), 0.5),
    )
    accelerator.register_for_checkpointing(scheduler)
    channel_ids = channel_ids.to(accelerator.device)

    checkpoint = output_dir / CHECKPOINT
    state = {"epoch": -1, "best_balanced_accuracy": -1.0, "history": []}
    if args.resume and (checkpoint / STATE_FILE).is_file():
        accelerator.load_state(str(checkpoint))
        state = json.loads((checkpoint / STATE_FILE).read_text())
        accelerator.print(f"Resuming after epoch {state['epoch'] + 1} from {checkpoint}")
    elif args.resume:
        accelerator.print(f"No checkpoint in {checkpoint}: starting from the beginning")

    model.train()
    for epoch in range(state["epoch"] + 1, args.num_train_epochs):
        train_set.set_epoch(epoch)
        train_loader.set_epoch(epoch)
        running, seen = 0.0, 0
        progress = tqdm(
            train_loader,
            desc=f"stage 1 epoch {epoch + 1}/{args.num_train_epochs}",
            disable=not accelerator.is_local_main_process,
        )
        for step, (windows, targets) in enumerate(progress):
            logits = model(eeg_values=windows, channel_ids=channel_ids).logits
            loss = torch.nn.functional.cross_entropy(logits.float(), targets)
            accelerator.backward(loss)
            if args.max_grad_norm > 0:
                accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            running, seen = running + loss.item(), seen + 1
            if (step + 1) % args.report_every == 0:
                progress.set_postfix(loss=f"{running / seen:.4f}")
        validation_loss, score = evaluate(model, validation_loader, channel_ids, accelerator)
        record = {
            "epoch": epoch + 1,
            "train_loss": running / max(seen, 1),
            "validation_loss": validation_loss,
            "validation_balanced_accuracy": score,
            "learning_rate": scheduler.get_last_lr()[0],
        }
        state["history"].append(record)
        accelerator.print(json.dumps(record))
        if score > state["best_balanced_accuracy"]:
            state["best_balanced_accuracy"] = score
            if accelerator.is_main_process:
                _save_best(accelerator.unwrap_model(model), output_dir, {**record, "best_epoch": epoch + 1})
        state["epoch"] = epoch
        accelerator.wait_for_everyone()
        _checkpoint(accelerator, checkpoint, state)

    if accelerator.is_main_process:
        (output_dir / "history.json").write_text(json.dumps(state["history"], indent=2))
        accelerator.print(
            f"Best validation balanced accuracy {state['best_balanced_accuracy']:.4f}; encoder saved to {output_dir}"
        )
    accelerator.end_training()
    return 0


def _checkpoint(accelerator, checkpoint: Path, state: dict) -> None:
    """Write the training state to a fresh folder on every process, then swap it in on the main one."""
    fresh = checkpoint.with_name(checkpoint.name + ".tmp")
    if accelerator.is_main_process:
        shutil.rmtree(fresh, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(fresh))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (fresh / STATE_FILE).write_text(json.dumps(state, indent=2))
        old = checkpoint.with_name(checkpoint.name + ".old")
        if checkpoint.exists():
            checkpoint.rename(old)
        fresh.rename(checkpoint)
        shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    sys.exit(main())
