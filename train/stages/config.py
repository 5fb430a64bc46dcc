"""The arguments of each training stage, as dataclasses that recipes (YAML) and the command line fill.

Every stage parses its arguments with TRL's `TrlParser`, so `--config RECIPE.yaml` sets the
defaults and any `--name value` on the command line overrides them. Stages 2 and 3 combine
`E2LLMScriptArguments` with TRL's `SFTConfig` (the trainer's settings: batch, optimiser,
schedule, precision, checkpoints) and `ModelConfig` (dtype, attention, LoRA), as TRL's own
scripts do; stage 1 combines `Stage1Arguments` with transformers' `TrainingArguments`, and the
demo's language-model warm-up `LMWarmupArguments` with `SFTConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Stage1Arguments:
    """Stage 1: the EEGPT encoder and a linear head learn the seven emotions from 4 s windows.

    What to train on and from; the Trainer's settings (`output_dir`, epochs, batch, learning rate,
    weight decay, `max_steps`, bf16, seed) are `transformers.TrainingArguments`, parsed beside it.
    The paper: AdamW (weight decay 0.01), lr 1e-4, batch 64, one-cycle schedule, 50 epochs.
    """

    data: str = field(metadata={"help": "Prepared data folder (the output of `e2llm prepare`), with `segments/`."})
    encoder: str | None = field(
        default=None,
        metadata={
            "help": "Pretrained EEGPT: the official checkpoint file (eegpt_mcae_58chs_4s_large4E.ckpt), a bare "
            "encoder state dict, or a folder saved by stage 1. Empty: random weights (a warning says so)."
        },
    )
    encoder_preset: str = field(
        default="large", metadata={"help": "EEGPT size when `encoder` is a checkpoint file or empty."}
    )
    encoder_input_scale: float = field(
        default=1.0,
        metadata={
            "help": "Random weights only: EEGPTConfig.input_scale, the factor applied to the EEG (mV) before the "
            "patch embedding. A randomly initialised encoder needs it (the demo: 3, EEGPTConfig.input_scale); a "
            "checkpoint keeps 1.0."
        },
    )
    encoder_initializer_range: float = field(
        default=0.02,
        metadata={
            "help": "Random weights only: EEGPTConfig.initializer_range, the std of the initial weights. A tiny "
            "encoder from random weights leaves its first epochs at chance with 0.02 and learns from the third "
            "epoch with 0.1 (the demo)."
        },
    )
    attn_implementation: str | None = field(
        default=None,
        metadata={
            "help": "The encoder's attention kernel (`sdpa`, `eager`, `flash_attention_2`, ...); empty: transformers' "
            "choice (sdpa). At the tiny encoder's width on the CPU with `bf16`, `eager` is the fastest "
            "(benchmarks/README.md)."
        },
    )
    feature_loss_weight: float = field(
        default=0.0,
        metadata={
            "help": "Also teach the encoder the segments' measured features (the z-scores of `prepared/segments`' "
            "claimable feature columns, which the grounded explanations state): a linear head on the vector the "
            "emotion head reads, trained with mean squared error times this weight, dropped when the encoder is "
            "saved. 0 (the paper's stage 1): the emotions alone."
        },
    )
    pct_start: float = field(default=0.3, metadata={"help": "Fraction of the one-cycle schedule spent warming up."})
    validation_fraction: float = field(
        default=0.1,
        metadata={
            "help": "Fraction of the training segments held out (stratified by emotion) to pick the best epoch; "
            "the test split is never looked at."
        },
    )
    max_train_segments: int | None = field(
        default=None, metadata={"help": "Use at most this many training segments (balanced subset); for quick runs."}
    )
    resume: bool = field(
        default=False,
        metadata={"help": "Continue from the last checkpoint in `output_dir` when there is one (else start, and say so)."},
    )


@dataclass
class E2LLMScriptArguments:
    """Stages 2 and 3: what to build the model from and what to train it on.

    Stage 2 builds the model from `encoder` (the stage-1 folder; the official EEGPT checkpoint
    for the "without stage 1" ablation) and `llm`. Stage 3 continues from `model` (the stage-2
    folder), or, for the "without stage 2" ablation, builds it from `encoder` and `llm` as
    stage 2 does.
    """

    data: str = field(metadata={"help": "Prepared data folder (the output of `e2llm prepare`), with `segments/` and `qa/`."})
    qa_split: str = field(default="train", metadata={"help": "QA split to train on (stage 2: train, stage 3: stage3)."})
    eval_qa_split: str | None = field(
        default=None, metadata={"help": "Optional QA split for the evaluation loss during training."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use the first N QA samples only."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use the first N evaluation samples only."})
    encoder: str | None = field(
        default=None,
        metadata={
            "help": "The EEG encoder: a stage-1 output folder, or an official EEGPT checkpoint file (without "
            "stage 1: the pretrained encoder as is)."
        },
    )
    encoder_preset: str = field(default="large", metadata={"help": "EEGPT size when `encoder` is a checkpoint file."})
    llm: str | None = field(
        default=None,
        metadata={
            "help": "The language model: a Hub id (Qwen/Qwen3-8B), a local folder, or `tiny` (a random tiny "
            "Qwen3 for tests)."
        },
    )
    model: str | None = field(
        default=None, metadata={"help": "Stage 3: the stage-2 output folder to continue from."}
    )
    projector_hidden_act: str = field(default="gelu", metadata={"help": "Activation between the projector's layers."})
    train_crop: str = field(
        default="random",
        metadata={"help": "4 s crop of each 10 s segment while training: random or center.", "choices": ["random", "center"]},
    )
    resume: bool = field(
        default=False,
        metadata={"help": "Continue from the last checkpoint in `output_dir` when there is one (else start, and say so)."},
    )
    merge: bool = field(
        default=True,
        metadata={"help": "Stage 3: also save the LoRA-merged model (in `output_dir/merged`) beside the adapter."},
    )
    merge_check_samples: int = field(
        default=4,
        metadata={
            "help": "Stage 3: QA samples (of `qa_split`) on which the merged model is compared with base + adapter "
            "after the merge: logits at the answer positions and greedy answers (`merge_check.json`)."
        },
    )
    merge_check_new_tokens: int = field(
        default=48, metadata={"help": "Stage 3: tokens of each greedy answer compared after the merge."}
    )
    merge_max_error: float = field(
        default=0.1,
        metadata={
            "help": "Stage 3: the merged model passes when its answer-position logits differ from base + adapter by at "
            "most this fraction of what stage 3 changed in them (base + adapter against base); `e2llm evaluate` and "
            "`e2llm publish` of the stage-3 folder use the adapter instead of a merge that does not pass."
        },
    )
    span_code_weight: float = field(
        default=0.0,
        metadata={
            "help": "Demo only (stage 2 on the demo's warmed-up LM, whose folder holds span_codes.safetensors): add "
            "this weight times the projector's distance from the warm-up's span code of each EEG's segment to the "
            "loss (train.stages.lm_warmup.span_code_distance). 0: the language-model loss alone, as a real run."
        },
    )
    max_shard_size: str = field(
        default="5GB",
        metadata={"help": "Largest safetensors file of the saved model (e.g. 5GB, 500MB); bigger models are sharded."},
    )


@dataclass
class LMWarmupArguments:
    """Demo only: a tiny random Qwen3 learns the task texts before it plays the pretrained LLM.

    A real run starts from a pretrained Qwen3 and never runs this. The tiny model cannot know
    any language, so without this warm-up stage 2 would have to teach the projector to steer
    a model that only emits noise.
    """

    data: str = field(metadata={"help": "Prepared data folder with `qa/`."})
    qa_split: str = field(default="train", metadata={"help": "QA split whose texts the model reads."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use the first N QA samples only."})
    task_repeats: str | None = field(
        default=None,
        metadata={
            "help": "Read the texts of some tasks more than once an epoch, as comma-separated TASK=N pairs "
            "(e.g. `EIM=2`); every other task is read once."
        },
    )
    vocab_size: int = field(
        default=4096,
        metadata={
            "help": "Most tokens of the demo tokenizer, a byte-level BPE trained on the texts read "
            "(`train.tokenizer.build_demo_tokenizer`); it stops earlier when the texts hold no pair left to merge."
        },
    )
    hidden_size: int = field(default=64, metadata={"help": "Width of the tiny Qwen3."})
    intermediate_size: int = field(default=128, metadata={"help": "MLP width of the tiny Qwen3."})
    num_hidden_layers: int = field(default=2, metadata={"help": "Layers of the tiny Qwen3."})
    num_attention_heads: int = field(default=4, metadata={"help": "Attention heads of the tiny Qwen3."})
    num_key_value_heads: int = field(default=2, metadata={"help": "Key-value heads of the tiny Qwen3."})
    head_dim: int = field(default=16, metadata={"help": "Width of each attention head of the tiny Qwen3."})
    resume: bool = field(
        default=False,
        metadata={"help": "Continue from the last checkpoint in `output_dir` when there is one."},
    )
    eeg_as_words: bool = field(
        default=True,
        metadata={
            "help": "Write each EEG item as its segment's emotion name, repeated over the EEG token slots, so the "
            "model learns to read the EEG span the way a pretrained LLM reads its input; stage 2 then teaches the "
            "projector to write into that span. With false the span holds the bare <eeg> tokens."
        },
    )
    eeg_span_features: bool = field(
        default=False,
        metadata={
            "help": "With eeg_as_words, write each EEG span as its emotion followed by the words of its salient "
            "measured features (e.g. `sad alpha occipital reduced`), so the model learns to state the features of "
            "the EEG it reads in its explanations; with false, the emotion alone. With eeg_span_code, add one code "
            "vector per salient feature claim to the emotion's."
        },
    )
    eeg_span_code: bool = field(
        default=False,
        metadata={
            "help": "Keep the bare <eeg> slots in the text and fill every slot of an EEG span, in the model's input, "
            "with one learned vector: its emotion's code plus (eeg_span_features) one code per salient feature "
            "claim. Every slot then holds the same summary of the segment, which a projector that maps each time "
            "patch on its own can learn to write in stage 2 (a word sequence it cannot: it does not know which "
            "word a slot should hold). The codes are trained with the model and saved beside it "
            "(span_codes.safetensors). Needs eeg_as_words false."
        },
    )
    eeg_span_scores: bool = field(
        default=False,
        metadata={
            "help": "With eeg_span_code and eeg_span_features, the features enter the span as one code per "
            "claimable feature weighted by the segment's z-score (within +-3), instead of one code per salient "
            "claim: the span then changes smoothly with the EEG, and the model learns which features are salient."
        },
    )
    eeg_span_noise: float = field(
        default=0.0,
        metadata={
            "help": "With eeg_span_code, Gaussian noise added to each slot's code, as a fraction of the code's "
            "norm: the model learns to read a span whose slots vary, as the projector's do."
        },
    )
