"""Stage 2: the projector learns to turn EEGPT's output into words the language model reads.

    e2llm stage2 --config train/recipes/qwen3-8b/stage2.yaml \\
        --data prepared/ --encoder runs/qwen3-8b/stage1 --llm Qwen/Qwen3-8B --output_dir runs/qwen3-8b/stage2

    accelerate launch --config_file train/recipes/accelerate/ddp-2gpu.yaml -m train.stages.stage2 \\
        --config train/recipes/qwen3-8b/stage2.yaml

`E2LLMForConditionalGeneration.from_parts` joins the stage-1 encoder (`--encoder`, the folder
stage 1 wrote; the official EEGPT checkpoint file for the "without stage 1" ablation) and a
Qwen3 (`--llm`: a Hub id, a local folder, or `tiny`) with a new projector. Encoder and language
model stay frozen; only the projector trains, kept in float32 even when the language model is
loaded in bfloat16. TRL's `SFTTrainer` (as `train.stages.trainer.AnswerLossSFTTrainer`, which takes the
loss only at each row's answer positions) runs the language-model loss over the assistant answers
of the QA split (`--qa_split train`, the 10,000 samples), batches built by `E2LLMCollator`
(random 4 s crops of each EEG's segment, windows stacked in placeholder order, everything but
the answers masked with -100).

The paper's recipe: Adam without weight decay, lr 2e-4, batch 16, cosine schedule. The recipes
write it as `optim: adamw_torch` with `weight_decay: 0.0`: with no decay AdamW's update is
Adam's. The effective batch is per_device_train_batch_size x gradient_accumulation_steps x
processes = 16.

What SFTTrainer must be told for EEG, set here whatever the recipe says: the EEG columns stay
(`remove_unused_columns=False`), the dataset is not tokenized by TRL (`skip_prepare_dataset`;
the collator does it), and nothing is truncated (`max_length=None`: a cut would drop EEG
placeholders). On a machine without a bf16-capable GPU, bf16 autocast defaults to off, and a
recipe's `bf16: true` is turned off with a warning (`--bf16 false` says so and silences it;
`--use_cpu true` keeps bf16 autocast on the CPU).

The CPU demo's stage 2 (`--span_code_weight`, demo only) also pulls the projector's output towards
the span codes its warmed-up language model was trained with (`train.stages.lm_warmup`).

The output folder holds the model (safetensors files of at most `max_shard_size`, config with
`auto_map`, `modeling_e2llm.py`) in the language model's dtype (the recipe's `dtype`, which
config.json's `dtype` names; `train.stages.parts` states the policy) and the processor, so stage
3, `e2llm evaluate` and `AutoModel.from_pretrained(dir, trust_remote_code=True)` read it as is.
Checkpoints go to `output_dir/checkpoint-*` and hold the projector and the optimizer state only;
`--resume` continues from the last one.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

from transformers.utils import logging

from train.io import output_lock
from train.stages.config import E2LLMScriptArguments

logger = logging.get_logger(__name__)


def bf16_autocast_available(use_cpu: bool = False) -> bool:
    """Whether transformers accepts `bf16: true` here: a bf16-capable GPU, an XLA device, or `use_cpu`."""
    from transformers.utils import is_torch_bf16_gpu_available, is_torch_xla_available

    return bool(use_cpu) or is_torch_bf16_gpu_available() or is_torch_xla_available()


def bf16_on_command_line(argv: list[str]) -> bool:
    """Whether `argv` sets `--bf16` itself (then a recipe's `bf16` is not second-guessed)."""
    return any(arg == "--bf16" or arg.startswith("--bf16=") for arg in argv)


def recipe_parser(argv: list[str]):
    """The parser class for the stages' recipes and `argv` (`TrlParser`, see `RecipeParser`)."""
    from trl import TrlParser

    command_line_sets_bf16 = bf16_on_command_line(argv)

    class RecipeParser(TrlParser):
        """`TrlParser` that turns a recipe's `bf16: true` off, with a warning, where bf16 autocast is not available
        (transformers would stop with "You need to assign use_cpu")."""

        def set_defaults_with_config(self, **config):
            if config.get("bf16") and not command_line_sets_bf16 and not bf16_autocast_available(config.get("use_cpu")):
                warnings.warn(
                    "The recipe sets `bf16: true` (bfloat16 autocast), but this machine has no GPU that supports it: "
                    "training without autocast, the weights in the recipe's `dtype`. Pass `--bf16 false` to say so "
                    "and silence this warning, or `--use_cpu true` to keep bfloat16 autocast on the CPU.",
                    UserWarning,
                    stacklevel=2,
                )
                config["bf16"] = False
            return super().set_defaults_with_config(**config)

    return RecipeParser


def parse_arguments(argv: list[str] | None):
    """(script arguments, SFTConfig, ModelConfig) from `--config RECIPE.yaml` and the command line."""
    from trl import ModelConfig, SFTConfig

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = recipe_parser(argv)((E2LLMScriptArguments, SFTConfig, ModelConfig))
    if not bf16_autocast_available():
        # TRL turns bf16 on by default, which transformers refuses without a bf16 GPU.
        parser.set_defaults(bf16=False)
    try:
        script_args, training_args, model_args = parser.parse_args_and_config(argv)
    except ValueError as error:
        if bf16_on_command_line(argv) and not bf16_autocast_available("--use_cpu" in argv):
            raise ValueError(
                f"--bf16 true asks for bfloat16 autocast, which this machine has no GPU for ({error}). Pass "
                "`--bf16 false` to train without autocast, or `--use_cpu true` for bfloat16 autocast on the CPU."
            ) from error
        raise
    # The EEG columns must reach the collator, which tokenizes; truncation would cut placeholders.
    training_args.remove_unused_columns = False
    training_args.dataset_kwargs = {**(training_args.dataset_kwargs or {}), "skip_prepare_dataset": True}
    training_args.max_length = None
    training_args.label_names = ["labels"]
    return script_args, training_args, model_args


def build_model_and_processor(script_args: E2LLMScriptArguments, model_args, trust_remote_code: bool = False):
    """E2LLM from `encoder` and `llm` (projector new), and its processor; `trust_remote_code` lets
    the language model run code it ships (`--trust_remote_code`)."""
    from train.stages.parts import build_e2llm, build_processor, load_eeg_encoder, load_language_model

    if script_args.llm is None:
        raise ValueError("No language model given: set `llm` (a Qwen3 Hub id, a local folder, or `tiny`)")
    encoder = load_eeg_encoder(script_args.encoder, script_args.encoder_preset)
    language_model, tokenizer = load_language_model(
        script_args.llm, model_args.dtype, model_args.attn_implementation, trust_remote_code
    )
    # The dtype policy: the frozen encoder in the language model's dtype, the one the folder is stored in.
    encoder.to(language_model.dtype)
    processor = build_processor(tokenizer, language_model.config.vocab_size)
    model = build_e2llm(encoder, language_model, processor.tokenizer, script_args.projector_hidden_act)
    align_token_ids(model, processor.tokenizer)
    # Trainable weights stay in float32 while they train; they are stored in the model's dtype.
    model.model.projector.float()
    return model, processor


def align_token_ids(model, tokenizer) -> None:
    """The tokenizer's pad, bos and eos ids written into the model's text and generation configs.

    The trainer would do it too, with a notice that they differ; a Qwen3 checkpoint declares no pad
    id and the processor pads with `<|endoftext|>`, so here they are set where the model is built.
    """
    text_config, generation = model.config.get_text_config(), model.generation_config
    for name in ("pad_token_id", "bos_token_id"):
        value = getattr(tokenizer, name)
        if value is not None:
            setattr(text_config, name, value)
            setattr(generation, name, value)
    eos = tokenizer.eos_token_id
    if eos is not None:
        declared = generation.eos_token_id if isinstance(generation.eos_token_id, list) else [generation.eos_token_id]
        text_config.eos_token_id = eos
        generation.eos_token_id = [eos, *(token for token in declared if token is not None and token != eos)]


def train_only_projector(model) -> None:
    """Freeze everything but `model.model.projector`."""
    model.requires_grad_(False)
    model.model.projector.requires_grad_(True)


def build_datasets(script_args: E2LLMScriptArguments, processor, model, seed: int):
    """(train QA, eval QA or None, collator) with every referenced segment checked to exist."""
    from datasets import concatenate_datasets

    from train.stages.collator import E2LLMCollator
    from train.data.segments import SEGMENT_CHANNEL_IDS, SegmentStore
    from train.stages.parts import check_channels, load_qa, load_segments

    segments = load_segments(script_args.data)
    check_channels(model.config.eeg_config, SEGMENT_CHANNEL_IDS)
    train_qa = load_qa(script_args.data, script_args.qa_split)
    if script_args.max_train_samples is not None:
        train_qa = train_qa.select(range(min(script_args.max_train_samples, len(train_qa))))
    eval_qa = None
    if script_args.eval_qa_split is not None:
        eval_qa = load_qa(script_args.data, script_args.eval_qa_split)
        if script_args.max_eval_samples is not None:
            eval_qa = eval_qa.select(range(min(script_args.max_eval_samples, len(eval_qa))))
        # Evaluation reads the centred 4 s of each segment, so its loss is comparable across runs.
        eval_qa = eval_qa.add_column("eeg_crop", ["center"] * len(eval_qa))
    all_segments = concatenate_datasets([segments["train"], segments["test"]])
    known = set(all_segments["id"])
    for name, qa in (("train", train_qa), ("eval", eval_qa)):
        if qa is None:
            continue
        missing = sorted({i for ids in qa["segment_ids"] for i in ids} - known)
        if missing:
            raise ValueError(
                f"The {name} QA set refers to {len(missing)} segment(s) not in {script_args.data}/segments, "
                f"e.g. {missing[:3]}: QA sets and segments must come from the same `e2llm prepare` run"
            )
    collator = E2LLMCollator(processor, SegmentStore(all_segments), crop=script_args.train_crop, seed=seed)
    return train_qa, eval_qa, collator


def last_checkpoint(output_dir: str, resume: bool) -> str | None:
    """The checkpoint to resume from when `resume` is set: the newest complete one in `output_dir`.

    The Trainer writes `trainer_state.json` last, so a `checkpoint-N` without a readable one was
    cut short (the run was killed while saving it) and is passed over, with a warning. Says which
    checkpoint the run continues from.
    """
    from transformers.trainer import TRAINER_STATE_NAME
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    if not resume:
        return None
    folder = Path(output_dir)
    numbered = folder.glob(f"{PREFIX_CHECKPOINT_DIR}-*") if folder.is_dir() else []
    checkpoints = sorted(
        (path for path in numbered if path.is_dir() and path.name.split("-")[-1].isdigit()),
        key=lambda path: int(path.name.split("-")[-1]),
        reverse=True,
    )
    for checkpoint in checkpoints:
        try:
            json.loads((checkpoint / TRAINER_STATE_NAME).read_text())
        except (OSError, ValueError):
            logger.warning("%s is incomplete (no readable %s): passed over", checkpoint, TRAINER_STATE_NAME)
            continue
        print(f"Resuming from {checkpoint}", flush=True)
        return str(checkpoint)
    logger.warning("No complete checkpoint in %s: starting from the beginning", output_dir)
    return None


def main(argv: list[str] | None = None) -> int:
    script_args, training_args, model_args = parse_arguments(argv)
    with output_lock(training_args.output_dir, "e2llm stage2", enabled=training_args.process_index == 0):
        return run(script_args, training_args, model_args)


def run(script_args: E2LLMScriptArguments, training_args, model_args) -> int:
    """Stage 2 with parsed arguments; the caller holds the output folder (`train.io.output_lock`)."""
    from transformers import set_seed

    from train.stages.trainer import AnswerLossSFTTrainer

    set_seed(training_args.seed)
    model, processor = build_model_and_processor(script_args, model_args, training_args.trust_remote_code)
    train_only_projector(model)
    train_qa, eval_qa, collator = build_datasets(script_args, processor, model, training_args.seed)

    trainer_class = AnswerLossSFTTrainer
    if script_args.span_code_weight:
        from train.stages.lm_warmup import with_span_code_targets

        trainer_class, collator = with_span_code_targets(script_args, collator, trainer_class)
    trainer = trainer_class(
        model=model,
        args=training_args,
        data_collator=collator,
        train_dataset=train_qa,
        eval_dataset=eval_qa,
        processing_class=processor,
    )
    trainer.max_shard_size = script_args.max_shard_size
    trainer.train(resume_from_checkpoint=last_checkpoint(training_args.output_dir, script_args.resume))
    trainer.save_model(training_args.output_dir)
    if trainer.is_world_process_zero():
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        print(f"Stage 2 done: {trainable:,} trainable parameters; model and processor in {training_args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
