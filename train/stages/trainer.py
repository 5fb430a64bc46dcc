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

Saving (methods of their own beside the loss): a checkpoint of a model that trains only some of
its weights (stage 2: the projector) holds those weights, in float32, with the optimizer state,
not the frozen encoder and language model (16-33 GB a checkpoint at Qwen3-4B/8B); resuming loads
them back onto the model built as at the start. A stage-3 checkpoint is PEFT's adapter already.
The final save writes the whole model once, in its storage dtype (`train.stages.parts`), sharded
at `max_shard_size`. The stage folder's README.md says what the folder holds and how to load it
with EEG, in place of TRL's generic text-generation card.

TRL's own path (`fused_lm_head`) does the same on CUDA with a Triton kernel, but on other
devices it scores every position in float32 chunks, which measured several times slower than
plain full logits on a CPU; this path is the same on every device.
`benchmarks/train_step.py` measures these against full-sequence logits.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from trl import SFTTrainer

IGNORE_INDEX = -100
TRAINABLE_WEIGHTS = "trainable_parameters.safetensors"


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
