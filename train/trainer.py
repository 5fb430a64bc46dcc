"""TRL's `SFTTrainer` with a loss that projects only the answer positions through the LM head.

With Qwen3's 151,936-word vocabulary the LM head dominates a training step: full-sequence
logits cost sequence x vocabulary in compute and memory, and most of an E2LLM sequence (system
prompt, question, 18 tokens per EEG window) carries no loss. `AnswerLossSFTTrainer` asks the
model for logits at the sequence positions where at least one row of the batch has a label
(`logits_to_keep` as an index tensor, a standard transformers argument, so the call still goes
through the DDP, FSDP or PEFT wrappers) and takes the cross-entropy there.

TRL's own path (`fused_lm_head`) does the same on CUDA with a Triton kernel, but on other
devices it scores every position in float32 chunks, which measured several times slower than
plain full logits on a CPU; this path is the same on every device.
`benchmarks/train_step.py` measures both against full-sequence logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from trl import SFTTrainer

IGNORE_INDEX = -100


def answer_positions(labels: torch.Tensor) -> torch.Tensor:
    """The positions p (1-D, ascending) whose next token `labels[:, p + 1]` is a target in any row."""
    return (labels[:, 1:] != IGNORE_INDEX).any(dim=0).nonzero().flatten()


def answer_loss_sum(logits: torch.Tensor, labels: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy and correct-token count of `logits` (B, K, V), taken at `positions`, against
    the next-token labels; -100 positions are skipped."""
    targets = labels[:, positions + 1]  # (B, K)
    flat_logits = logits.float().flatten(0, 1)
    flat_targets = targets.flatten()
    loss = F.cross_entropy(flat_logits, flat_targets, ignore_index=IGNORE_INDEX, reduction="sum")
    valid = flat_targets != IGNORE_INDEX
    correct = (flat_logits.detach().argmax(-1) == flat_targets) & valid
    return loss, correct.sum()


class AnswerLossSFTTrainer(SFTTrainer):
    """`SFTTrainer` whose language-model loss needs logits only where labels are not -100.

    The loss equals the model's own causal-LM loss (mean over target tokens, normalised by
    `num_items_in_batch` across gradient accumulation and processes exactly as TRL does);
    `mean_token_accuracy` is logged over the answer tokens.
    """

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        positions = answer_positions(labels)
        outputs = model(**inputs, use_cache=False, logits_to_keep=positions)
        loss_sum, correct = answer_loss_sum(outputs.logits, labels, positions)
        num_targets = (labels[:, 1:] != IGNORE_INDEX).sum()
        divisor = num_targets if num_items_in_batch is None else num_items_in_batch
        loss = loss_sum / torch.as_tensor(divisor, device=loss_sum.device).clamp(min=1)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())

        total_correct = self.accelerator.gather_for_metrics(correct).sum()
        total_targets = self.accelerator.gather_for_metrics(num_targets).sum()
        accuracy = (total_correct / total_targets).item() if total_targets > 0 else 0.0
        self._metrics[mode]["mean_token_accuracy"].append(accuracy)
        if mode == "train":
            tokens = self.accelerator.gather_for_metrics(inputs["attention_mask"].sum()).sum().item()
            self._total_train_tokens += tokens
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
        return (loss, outputs) if return_outputs else loss
