"""TRL's `SFTTrainer`, with the language-model loss taken at the answer positions only.

With Qwen3's 151,936-word vocabulary the LM head is a large part of a training step, and most of
an E2LLM sequence (system prompt, question, 18 tokens per EEG window) carries no loss. TRL's own
loss (its fused LM head, `trl.trainer.utils.add_fused_lm_head`) already projects only the
positions whose next token is a target, in chunks, where its Triton kernel runs (CUDA and XPU):
there `AnswerLossSFTTrainer` is `SFTTrainer` unchanged. Elsewhere (the CPU) TRL's head scores
every position of the padded batch, so this trainer asks the model, through transformers' own
arguments, for logits at each row's answer positions only (`logits_to_keep` as a boolean
(batch, sequence) mask, with the matching `shift_labels` for the model's `loss_function`), and
leaves `num_items_in_batch` and the scaling across processes to `Trainer.compute_loss`.
`benchmarks/train_step.py` measures both against full-sequence logits.

Saving (methods of their own beside the loss): a checkpoint of a model that trains only some of
its weights (stage 2: the projector) holds those weights, in float32, with the optimizer state,
not the frozen encoder and language model (16-33 GB a checkpoint at Qwen3-4B/8B); resuming loads
them back onto the model built as at the start. A stage-3 checkpoint is PEFT's adapter already.
The final save writes the whole model once, in its storage dtype (`train.stages.parts`), sharded
at `max_shard_size`. The stage folder's README.md says what the folder holds and how to load it
with EEG, in place of TRL's generic text-generation card.
"""

from __future__ import annotations

import os

import torch
from transformers import Trainer
from transformers.utils import is_triton_available
from trl import SFTTrainer

from train.stages.collator import IGNORE_INDEX

TRAINABLE_WEIGHTS = "trainable_parameters.safetensors"


def answer_mask(labels: torch.Tensor) -> torch.Tensor:
    """(batch, sequence) booleans: True at position p of a row when that row's `labels[p + 1]` is a target."""
    mask = torch.zeros_like(labels, dtype=torch.bool)
    mask[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return mask


def answer_inputs(inputs: dict, labels: torch.Tensor) -> tuple[dict, torch.Tensor]:
    """`inputs` asking for logits and loss at the answer positions only, and those positions' targets."""
    mask = answer_mask(labels)
    targets = labels[:, 1:][mask[:, :-1]]
    return {**inputs, "labels": labels, "use_cache": False, "logits_to_keep": mask, "shift_labels": targets}, targets


def fused_head_scores_only_answers(device: torch.device) -> bool:
    """Whether TRL's fused LM head projects only the target positions on `device` (its Triton path)."""
    return is_triton_available() and device.type in ("cuda", "xpu")


class AnswerLossSFTTrainer(SFTTrainer):
    """`SFTTrainer` whose loss needs logits only where labels are not -100, on every device.

    The loss is the model's own causal-LM loss (mean over the target tokens, or their sum over
    `num_items_in_batch` across gradient accumulation and processes, as `Trainer` normalises it);
    `mean_token_accuracy` and `entropy` are logged over the answer tokens, as TRL logs them.
    """

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # Label smoothing and a custom loss function need whole logits: TRL's path handles them.
        smoothing = self.label_smoother is not None or self.compute_loss_func is not None
        if smoothing or fused_head_scores_only_answers(self.accelerator.device):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        mode = "train" if self.model.training else "eval"
        inputs, targets = answer_inputs(dict(inputs), inputs["labels"])
        loss, outputs = Trainer.compute_loss(self, model, inputs, True, num_items_in_batch)

        with torch.no_grad():
            logits = outputs.logits.float()
            correct = (logits.argmax(-1) == targets).sum()
            probabilities = logits.softmax(-1)
            entropy = (torch.logsumexp(logits, -1) - (probabilities * logits).sum(-1)).sum()
        total = self.accelerator.gather_for_metrics(torch.as_tensor(targets.numel(), device=loss.device)).sum()
        correct = self.accelerator.gather_for_metrics(correct).sum()
        entropy = self.accelerator.gather_for_metrics(entropy).sum()
        self._metrics[mode]["mean_token_accuracy"].append((correct / total).item() if total > 0 else 0.0)
        self._metrics[mode]["entropy"].append((entropy / total).item() if total > 0 else 0.0)
        if mode == "train":
            tokens = self.accelerator.gather_for_metrics(inputs["attention_mask"].sum()).sum().item()
            self._total_train_tokens += tokens // self._tp_size
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
        return (loss, outputs) if return_outputs else loss

    # ------------------------------------------------------------------ saving and resuming

    max_shard_size: str | int = "5GB"
    _saving_checkpoint = False

    def _save_checkpoint(self, model, trial):
        self._saving_checkpoint = True
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._saving_checkpoint = False

    def _trains_part_of_the_model(self) -> bool:
        from peft import PeftModel

        model = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        if isinstance(model, PeftModel):
            return False  # PEFT saves the adapter alone
        flags = [parameter.requires_grad for parameter in model.parameters()]
        return any(flags) and not all(flags)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Checkpoints of a partly frozen model: its trainable weights only. The final save: the whole
        model in its storage dtype, sharded at `max_shard_size`, with the processor."""
        from safetensors.torch import save_file

        from train.stages.parts import stored_state_dict

        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self._trains_part_of_the_model():
            return super()._save(output_dir, state_dict)
        model = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        state = model.state_dict() if state_dict is None else state_dict
        if self._saving_checkpoint:
            trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
            if self.args.should_save:
                os.makedirs(output_dir, exist_ok=True)
                weights = {key: value.detach().cpu().contiguous() for key, value in state.items() if key in trainable}
                save_file(weights, os.path.join(output_dir, TRAINABLE_WEIGHTS), metadata={"format": "pt"})
            return
        if self.args.should_save:
            os.makedirs(output_dir, exist_ok=True)
            model.save_pretrained(output_dir, state_dict=stored_state_dict(model, state), max_shard_size=self.max_shard_size)
            if self.processing_class is not None:
                self.processing_class.save_pretrained(output_dir)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        """A checkpoint written by `_save`: its trainable weights onto the model, checked by name."""
        from safetensors.torch import load_file
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        path = os.path.join(resume_from_checkpoint, TRAINABLE_WEIGHTS)
        if not os.path.isfile(path):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        model = self.model if model is None else model
        weights = load_file(path)
        trainable = {
            name for name, parameter in self.accelerator.unwrap_model(model).named_parameters() if parameter.requires_grad
        }
        if set(weights) != trainable:
            raise ValueError(
                f"{path} holds the weights {sorted(set(weights) - trainable)[:3]} the model does not train, or lacks "
                f"{sorted(trainable - set(weights))[:3]}: resume with the recipe the checkpoint was written with"
            )
        # Full tensors onto plain or FSDP-sharded parameters alike; the frozen weights are not in the file.
        set_model_state_dict(model, weights, options=StateDictOptions(full_state_dict=True, strict=False))

    def create_model_card(self, model_name: str | None = None, dataset_name: str | None = None, tags=None):
        """README.md of the stage folder: what it holds and how to load it with EEG."""
        from train.stages.cards import stage_card

        if not self.is_world_process_zero():
            return
        model = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        tags = [tags] if isinstance(tags, str) else list(tags or [])
        stage_card(model, self.args.output_dir, tags=tags).save(os.path.join(self.args.output_dir, "README.md"))
