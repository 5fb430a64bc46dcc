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
"""

from __future__ import annotations

import torch
from transformers import Trainer
from transformers.utils import is_triton_available
from trl import SFTTrainer

IGNORE_INDEX = -100


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
