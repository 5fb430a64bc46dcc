"""Stage 3: LoRA on the language model's attention and the projector, on chain-of-thought answers.

    e2llm stage3 --config train/recipes/qwen3-8b/stage3.yaml \\
        --data prepared/ --model runs/qwen3-8b/stage2 --output_dir runs/qwen3-8b/stage3

    accelerate launch --config_file train/recipes/accelerate/ddp-2gpu.yaml -m train.stages.stage3 \\
        --config train/recipes/qwen3-8b/stage3.yaml

Continues from the stage-2 folder (`--model`). For the "without stage 2" ablation, leave `model`
empty and give `encoder` and `llm` as for stage 2: the projector then starts from random weights
and learns here only.

The paper's recipe: LoRA r 128, alpha 256, dropout 0.05 on q_proj and k_proj of the language
model, the projector trained in full (PEFT's `modules_to_save`), the 3,000-sample `stage3` QA
split, Adam without weight decay, lr 2e-4, batch 16, cosine schedule. The LoRA settings are
TRL's `ModelConfig` fields (`lora_r`, `lora_alpha`, `lora_dropout`, `lora_target_modules`,
`lora_modules_to_save`); `lora_target_modules` is one regular expression, which PEFT matches
against full module names, so that only `model.language_model.layers.*.self_attn.{q,k}_proj`
are adapted and never a module of the EEG encoder. The wrapped modules are checked after PEFT
has placed the adapters.

Writes to `output_dir`: the adapter (`adapter_config.json`, `adapter_model.safetensors` with
the LoRA weights and the projector, in float32) and the processor; with `merge` (default),
`output_dir/merged`: the adapter folded into the weights in float32 (`train.stages.merge`), a
complete model in the starting model's dtype (config.json's `dtype`), sharded at
`max_shard_size`, with the processor, that loads with `AutoModel.from_pretrained(dir,
trust_remote_code=True)` and `AutoProcessor.from_pretrained`. The merge reloads the starting
model and the saved adapter, so it works the same after a single-process, DDP or FSDP run; it is
then compared with base + adapter on `merge_check_samples` QA samples, and
`merge_check.json` (in `output_dir` and in `merged/`) records how closely they agree and whether
within `merge_max_error`. Checkpoints hold the adapter and the optimizer state; `--resume`
continues from the newest complete checkpoint.

The stage-2 folder is read with this package's classes: no Python file in it runs, and its
`auto_map` entries that point elsewhere than this package's code are not copied into the output.
"""

from __future__ import annotations

import gc
import json
import sys
import warnings
from pathlib import Path

from train.io import output_lock
from train.stages.merge import describe_merge_check, peft_wrapping
from train.stages.stage2 import build_datasets, build_model_and_processor, last_checkpoint, parse_arguments

# The language model's query and key projections, never a module of the EEG encoder.
LANGUAGE_MODEL_QK = r"model\.language_model\.layers\.\d+\.self_attn\.(q_proj|k_proj)"
MERGED = "merged"


def load_starting_point(script_args, model_args, trust_remote_code: bool = False):
    """(model, processor): the stage-2 folder, or for the "without stage 2" ablation the parts
    (whose language model may run code it ships only with `trust_remote_code`)."""
    from modeling_e2llm import E2LLMForConditionalGeneration
    from train.evaluation.evaluate import load_processor

    if script_args.model is None:
        return build_model_and_processor(script_args, model_args, trust_remote_code)
    if script_args.encoder is not None or script_args.llm is not None:
        raise ValueError(
            "Give either `model` (the stage-2 folder) or `encoder` and `llm` (without stage 2), not both"
        )
    path = Path(script_args.model)
    if not (path / "config.json").is_file():
        raise ValueError(f"{script_args.model} is not a saved E2LLM model folder (no config.json): give the stage-2 output")
    dtype = model_args.dtype if model_args.dtype not in (None, "auto") else "auto"
    model = E2LLMForConditionalGeneration.from_pretrained(str(path), dtype=dtype)
    # This package's classes, never code from the folder (see `load_processor`).
    processor = load_processor(path)
    # Trained in float32, stored in the model's dtype.
    model.model.projector.float()
    return model, processor


def lora_config(model_args):
    """The LoRA configuration from the recipe, with the paper's targets unless it names others."""
    from trl import get_peft_config

    model_args.use_peft = True
    if model_args.lora_target_modules is None:
        model_args.lora_target_modules = LANGUAGE_MODEL_QK
    if model_args.lora_modules_to_save is None:
        model_args.lora_modules_to_save = ["projector"]
    return get_peft_config(model_args)


def check_adapted_modules(peft_model) -> list[str]:
    """The names of the LoRA-wrapped modules; refuses any outside the language model."""
    from peft.tuners.lora import LoraLayer

    adapted = [name for name, module in peft_model.named_modules() if isinstance(module, LoraLayer)]
    if not adapted:
        raise ValueError("lora_target_modules matched no module of the model")
    outside = [name for name in adapted if ".language_model." not in name]
    if outside:
        raise ValueError(f"LoRA must adapt only the language model; lora_target_modules also matched {outside[:3]}")
    return adapted


def merge_adapter(
    script_args, model_args, adapter_dir: str, out_dir: Path, seed: int, device, trust_remote_code: bool = False
) -> dict:
    """Reload the starting model, apply the saved adapter, fold it in (float32), compare the merged model
    with base + adapter on a few QA samples, and save model + processor; returns the comparison."""
    from peft import PeftModel
    from transformers import set_seed

    from train.stages.merge import MERGE_CHECK, check_merge
    from train.stages.parts import save_e2llm

    # Parts built from random weights (`llm: tiny`, no encoder) come back identical under the seed.
    set_seed(seed)
    # As it trained: the projector in float32, the rest in the storage dtype.
    base, processor = load_starting_point(script_args, model_args, trust_remote_code)
    with peft_wrapping():
        adapted = PeftModel.from_pretrained(base.to(device), adapter_dir)
    train_qa, _, collator = build_datasets(script_args, processor, base, seed)
    samples = [train_qa[i] for i in range(min(script_args.merge_check_samples, len(train_qa)))]
    merged, report = check_merge(
        adapted, processor, collator, samples, script_args.merge_check_new_tokens, script_args.merge_max_error
    )
    save_e2llm(merged.cpu(), out_dir, processor, script_args.max_shard_size)
    text = json.dumps(report, indent=2) + "\n"
    for folder in (out_dir, Path(adapter_dir)):
        (folder / MERGE_CHECK).write_text(text)
    return report


def main(argv: list[str] | None = None) -> int:
    script_args, training_args, model_args = parse_arguments(argv)
    with output_lock(training_args.output_dir, "e2llm stage3", enabled=training_args.process_index == 0):
        return run(script_args, training_args, model_args)


def run(script_args, training_args, model_args) -> int:
    """Stage 3 with parsed arguments; the caller holds the output folder (`train.io.output_lock`)."""
    from transformers import set_seed

    from train.stages.trainer import AnswerLossSFTTrainer

    set_seed(training_args.seed)
    model, processor = load_starting_point(script_args, model_args, training_args.trust_remote_code)
    model.requires_grad_(False)
    train_qa, eval_qa, collator = build_datasets(script_args, processor, model, training_args.seed)

    with peft_wrapping():
        trainer = AnswerLossSFTTrainer(
            model=model,
            args=training_args,
            data_collator=collator,
            train_dataset=train_qa,
            eval_dataset=eval_qa,
            processing_class=processor,
            peft_config=lora_config(model_args),
        )
    check_adapted_modules(trainer.model)
    trainer.train(resume_from_checkpoint=last_checkpoint(training_args.output_dir, script_args.resume))
    trainer.save_model(training_args.output_dir)
    trainer.accelerator.wait_for_everyone()
    if trainer.is_world_process_zero():
        trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
        print(f"Stage 3 done: {trainable:,} trainable parameters; adapter in {training_args.output_dir}")
        if script_args.merge:
            device = training_args.device
            # The trained model leaves the device before the base model is loaded onto it for the merge.
            del trainer, model
            gc.collect()
            merged = Path(training_args.output_dir) / MERGED
            report = merge_adapter(
                script_args, model_args, training_args.output_dir, merged, training_args.seed, device,
                training_args.trust_remote_code,
            )  # fmt: skip
            print(f"Merged model and processor in {merged}; {describe_merge_check(report)}")
            if not report["passed"]:
                warnings.warn(
                    f"The merged model in {merged} does not answer closely enough as the adapter does "
                    f"({describe_merge_check(report)}): `e2llm evaluate` and `e2llm publish` of "
                    f"{training_args.output_dir} use the adapter instead",
                    UserWarning,
                    stacklevel=2,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
