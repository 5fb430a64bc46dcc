"""TRL's `SFTTrainer` with a loss that projects only the answer positions through the LM head.

With Qwen3's 151,936-word vocabulary the LM head dominates a training step: full-sequence
logits cost sequence x vocabulary in compute and memory, and most of an E2LLM sequence (system
prompt, question, 18 tokens per EEG window) carries no loss. `AnswerLossSFTTrainer` asks the
model for the loss only at the positions whose next token is a target, row by row
(`logits_to_keep` as a boolean (batch, sequence) mask with the labels, which
`E2LLMForConditionalGeneration` takes; the call still goes through the DDP, FSDP or PEFT
wrappers). Rows of one batch answer at different lengths (an IED answer is a third of an EIM
one), so scoring each row's own answer positions, rather than every position where any row
answers, about halves the head's work on the demo's batches; and the model takes that loss a
block of positions at a time (`modeling_e2llm.linear_cross_entropy`), never holding the
(positions, vocabulary) logits. A plain causal LM (the demo's LM warm-up trains a bare Qwen3)
takes only an index tensor: it gets logits at every position where any row of the batch has a
target, and the cross-entropy is taken here.

TRL's own path (`fused_lm_head`) does the same on CUDA with a Triton kernel, but on other
devices it scores every position in float32 chunks, which measured several times slower than
plain full logits on a CPU; this path is the same on every device.
`benchmarks/train_step.py` measures these against full-sequence logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from trl import SFTTrainer

IGNORE_INDEX = -100


def answer_mask(labels: torch.Tensor) -> torch.Tensor:
    """(batch, sequence) booleans: True at position p of a row when that row's `labels[p + 1]` is a target."""
    mask = torch.zeros_like(labels, dtype=torch.bool)
    mask[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return mask


def answer_targets(labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The next-token labels at `mask`'s True positions, in row-major order (the model's kept positions)."""
    return labels[:, 1:][mask[:, :-1]]


def takes_answer_mask(model) -> bool:
    """Whether `model` (unwrapped from PEFT) takes a boolean `logits_to_keep` with labels, as
    `E2LLMForConditionalGeneration` does; a plain causal LM (the demo's warm-up) takes index tensors only."""
    get_base_model = getattr(model, "get_base_model", None)
    base = get_base_model() if callable(get_base_model) else model
    return bool(getattr(base, "accepts_answer_mask", False))


def union_loss_sum(model, inputs: dict, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, object]:
    """For a causal LM without answer masks: logits at the positions where any row's next token is a
    target (`logits_to_keep` as an index tensor), their summed cross-entropy and correct count."""
    positions = (labels[:, 1:] != IGNORE_INDEX).any(dim=0).nonzero().flatten()
    outputs = model(**inputs, use_cache=False, logits_to_keep=positions)
    logits, targets = outputs.logits.float().flatten(0, 1), labels[:, positions + 1].flatten()
    loss = F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction="sum")
    correct = ((logits.detach().argmax(-1) == targets) & (targets != IGNORE_INDEX)).sum()
    return loss, correct, outputs


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
        mask = answer_mask(labels)
        num_targets = mask.sum()
        divisor = num_targets if num_items_in_batch is None else num_items_in_batch
        if takes_answer_mask(self.accelerator.unwrap_model(model)):
            outputs = model(**inputs, labels=labels, use_cache=False, logits_to_keep=mask, num_items_in_batch=divisor)
            loss = outputs.loss
            correct = (outputs.token_predictions == answer_targets(labels, mask)).sum()
        else:
            loss_sum, correct, outputs = union_loss_sum(model, inputs, labels)
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
