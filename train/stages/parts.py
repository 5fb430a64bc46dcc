"""Loading what the training stages are built from, with a clear error for each wrong input.

- `load_segments` / `load_qa`: the prepared data (`e2llm prepare --out DIR`).
- `load_eeg_encoder`: EEGPT from the official checkpoint, a stage-1 folder, or random weights.
- `load_language_model`: Qwen3 from the Hub, a local folder, or the tiny test configuration, with
  the EEG tokens added as new tokens (`add_eeg_tokens`) when its tokenizer lacks them.
- `build_processor`: the E2LLM processor a model is trained and saved with: the training electrodes,
  the language model's chat template, EEG tokens checked.
- `build_e2llm`: the full model from encoder and language model (stage 2, and the
  "without stage 2" ablation of stage 3).
- `storage_dtype` / `save_e2llm`: the dtype policy and the sharded save of every E2LLM folder.

The dtype policy, the same for every stage that writes an E2LLM folder (stage 2, stage 3's
`merged/`, `e2llm publish`): the whole model is stored in one dtype, its language model's (the
recipe's `dtype`: bfloat16 for the Qwen3 recipes, float32 for the demo and `llm: tiny`), and
config.json's `dtype` says it, so `from_pretrained(..., dtype="auto")` and transformers' default
load it as stored. The frozen encoder is cast to that dtype when the model is built. What trains
(the projector, LoRA) is held in float32 while it trains and in checkpoints, and is cast when the
folder is written; the stage-3 adapter keeps its float32 weights. Stage 1 writes the encoder alone,
in float32, the precision it trained in.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

TINY_LLM = "tiny"
# A few GB per safetensors file, as Hub checkpoints are cut (transformers' default is one 50 GB
# file): downloads run in parallel and resume per file.
DEFAULT_MAX_SHARD_SIZE = "5GB"


def load_segments(data: str | Path):
    """The prepared 10 s segments: a `DatasetDict` with `train` and `test` (see `train.data.prepare`)."""
    from datasets import load_from_disk

    path = Path(data) / "segments"
    if not path.is_dir():
        raise ValueError(f"No prepared segments at {path}: run `e2llm prepare ... --out {data}` first")
    segments = load_from_disk(str(path))
    missing = {"train", "test"} - set(segments)
    if missing:
        raise ValueError(f"{path} lacks the split(s) {sorted(missing)}; it has {sorted(segments)}")
    return segments


def load_qa(data: str | Path, split: str):
    """One split of the prepared QA sets (`train`, `stage3`, `test_ied`, `test_multi`, `test_esr`)."""
    from datasets import load_from_disk

    path = Path(data) / "qa"
    if not path.is_dir():
        raise ValueError(f"No prepared QA sets at {path}: run `e2llm prepare ... --out {data}` first")
    qa = load_from_disk(str(path))
    if split not in qa:
        raise ValueError(f"{path} has no QA split {split!r}; it has {sorted(qa)}")
    missing = {"messages", "segment_ids"} - set(qa[split].column_names)
    if missing:
        raise ValueError(f"QA split {split!r} at {path} lacks the column(s) {sorted(missing)}")
    return qa[split]


def check_channels(encoder_config, channel_ids) -> None:
    """Refuse data whose channel ids fall outside the encoder's channel vocabulary."""
    channel_ids = torch.as_tensor(channel_ids)
    vocabulary = len(encoder_config.channel_names)
    if int(channel_ids.min()) < 0 or int(channel_ids.max()) >= vocabulary:
        raise ValueError(
            f"The data's channel ids run from {int(channel_ids.min())} to {int(channel_ids.max())}, but the encoder "
            f"knows {vocabulary} channels ({', '.join(encoder_config.channel_names[:4])}, ...)"
        )


def load_eeg_encoder(
    source: str | None, preset: str = "large", input_scale: float = 1.0, initializer_range: float | None = None
):
    """An `EEGPTModel`.

    Args:
        source: the official EEGPT checkpoint file (Lightning, encoder under `target_encoder.`)
            or a bare encoder state dict, loaded through `convert_eegpt_checkpoint`; or a folder
            saved by stage 1 (`EEGPTForEmotionClassification.save_pretrained`), whose encoder is
            returned; or None for random weights (warns: a random encoder reads nothing).
        preset: the EEGPT size (`EEGPTConfig.from_preset`) for a checkpoint file or None.
        input_scale: for random weights only, `EEGPTConfig.input_scale` (a checkpoint keeps 1.0,
            the scale it was pretrained at; a stage-1 folder keeps its own).
        initializer_range: for random weights only, `EEGPTConfig.initializer_range` (None: the
            config's default, 0.02).
    """
    from modeling_e2llm import EEGPTConfig, EEGPTForEmotionClassification, EEGPTModel

    if source is None:
        warnings.warn(
            "No EEGPT checkpoint given: the encoder starts from random weights. Pass the official "
            "checkpoint (eegpt_mcae_58chs_4s_large4E.ckpt) for the paper's setting.",
            UserWarning,
            stacklevel=2,
        )
        init = {} if initializer_range is None else {"initializer_range": initializer_range}
        return EEGPTModel(EEGPTConfig.from_preset(preset, input_scale=input_scale, **init))
    path = Path(source)
    if not path.exists():
        raise ValueError(f"EEG encoder not found: {source} (expected an EEGPT checkpoint file or a stage-1 folder)")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(f"{source} is a folder without config.json: not a stage-1 output folder")
        return EEGPTForEmotionClassification.from_pretrained(str(path)).eegpt
    try:
        return EEGPTModel.from_eegpt_checkpoint(str(path), EEGPTConfig.from_preset(preset))
    except ValueError as error:
        raise ValueError(f"{source} with encoder_preset {preset!r}: {error}") from error


def load_language_model(
    name: str,
    dtype: str | torch.dtype | None = None,
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
):
    """A Qwen3 causal LM and its tokenizer.

    Args:
        name: a Hub id (`Qwen/Qwen3-8B`), a local folder saved with `save_pretrained`, or `tiny`
            (a random Qwen3 with the real vocabulary and a tiny body, with the offline tokenizer).
        dtype: the weights' dtype (`bfloat16` for real runs on GPUs).
        attn_implementation: `sdpa`, `flash_attention_2`, ...; None lets transformers choose.
        trust_remote_code: run Python code that `name` ships (its `auto_map`); off unless the
            user passes `--trust_remote_code`, so a folder or repository cannot run code uninvited.

    Returns:
        (model, tokenizer): the tokenizer with the EEG tokens, added as new tokens when it lacked
        them (`add_eeg_tokens`).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen3ForCausalLM

    from train.stages.tiny import tiny_qwen3_config
    from train.tokenizer import build_qwen3_tokenizer

    if dtype not in (None, "auto") and isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    if name == TINY_LLM:
        warnings.warn("`llm: tiny` is a random tiny Qwen3: for tests only, it knows no language", UserWarning, stacklevel=2)
        model = Qwen3ForCausalLM(tiny_qwen3_config())
        return model.to(dtype) if isinstance(dtype, torch.dtype) else model, build_qwen3_tokenizer()
    looks_local = name.startswith((".", "/", "~")) or Path(name).exists() or name.count("/") > 1
    if looks_local and not Path(name).expanduser().is_dir():
        raise ValueError(f"Language model folder not found: {name}")
    if looks_local and not any((Path(name).expanduser() / f).is_file() for f in ("tokenizer.json", "vocab.json")):
        raise ValueError(
            f"{name} holds no tokenizer (tokenizer.json); save the tokenizer beside the model (tokenizer.save_pretrained)"
        )
    kwargs = {"dtype": dtype} if dtype is not None else {}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    try:
        model = AutoModelForCausalLM.from_pretrained(name, trust_remote_code=trust_remote_code, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
    except OSError as error:
        raise ValueError(f"Cannot load the language model {name!r}: {error}") from error
    if model.config.model_type != "qwen3":
        raise ValueError(f"E2LLM is built on Qwen3; {name} is a {model.config.model_type!r} model")
    add_eeg_tokens(model, tokenizer)
    return model, tokenizer


def add_eeg_tokens(language_model, tokenizer) -> list[str]:
    """Add the EEG tokens `tokenizer` lacks (a Qwen3 snapshot lacks all three), as transformers adds new tokens.

    The `<eeg_start>` and `<eeg_end>` rows of the input embedding (and of an untied LM head) are
    set to the mean of the rows below the new ids, Qwen3's trained vocabulary, as
    `resize_token_embeddings(mean_resizing=True)` initialises new tokens (without its 1e-9-scaled
    noise): Qwen3's rows there are padding it never trained. No stage trains them (the embedding
    stays frozen; LoRA adapts q_proj and k_proj), so they stay the mean. `<eeg>` needs nothing: its
    input is replaced by the projected EEG. A tokenizer that already has the tokens (the offline
    one, the demo's warmed-up language model, which learned its rows) keeps the model as it is.

    Returns the tokens added.
    """
    from transformers import AddedToken

    from train.tokenizer import EEG_END_TOKEN, EEG_START_TOKEN, EEG_TOKENS

    missing = [token for token in EEG_TOKENS if token not in tokenizer.get_vocab()]
    if not missing:
        return []
    known = len(tokenizer)
    tokenizer.add_tokens([AddedToken(token, normalized=False, special=True) for token in missing], special_tokens=True)
    check_eeg_tokens(tokenizer, language_model.config.vocab_size)
    rows = tokenizer.convert_tokens_to_ids([token for token in missing if token in (EEG_START_TOKEN, EEG_END_TOKEN)])
    layers = (language_model.get_input_embeddings(), language_model.get_output_embeddings())
    with torch.no_grad():
        for weight in {id(layer.weight): layer.weight for layer in layers}.values():
            weight[rows] = (weight[:known].sum(0, dtype=torch.float32) / known).to(weight.dtype)
    return missing


def build_processor(tokenizer, vocab_size: int, channels: Sequence[str] | None = None):
    """The `E2LLMProcessor` a model is trained with and saved beside, around `tokenizer`.

    - Its feature extractor keeps `channels` (default `EEGPT_58_CHANNELS`, the electrodes every
      prepared segment holds), so the processor published with the model reads a recording as
      training did: SEED-VII's 62 channels become the same 58, with the same average reference.
    - Its chat template is the language model's own when the tokenizer carries one (a Qwen3
      snapshot: Qwen3's template, thinking off unless asked, EEG items as `<eeg>`), else the
      processor's ChatML (`train.tokenizer.eeg_chat_template`).
    - The tokenizer gains the EEG tokens if it lacks them; EEG token ids outside the language
      model's `vocab_size` embedding rows are refused (Qwen3's 151,936 rows hold them at
      151669-151671).
    """
    from processing_e2llm import EEGPT_58_CHANNELS, E2LLMFeatureExtractor, E2LLMProcessor
    from train.tokenizer import eeg_chat_template

    template = eeg_chat_template(tokenizer)
    if template is not None:
        # The tokenizer saved beside the model renders as the processor does.
        tokenizer.chat_template = template
    feature_extractor = E2LLMFeatureExtractor(channels=list(EEGPT_58_CHANNELS if channels is None else channels))
    processor = E2LLMProcessor(feature_extractor, tokenizer, chat_template=template)
    check_eeg_tokens(processor.tokenizer, vocab_size)
    return processor


def eeg_token_ids(tokenizer) -> dict[str, int]:
    """The ids of `<eeg>`, `<eeg_start>` and `<eeg_end>` as `E2LLMConfig` keyword arguments."""
    from train.tokenizer import EEG_END_TOKEN, EEG_START_TOKEN, EEG_TOKEN

    names = {"eeg_token_id": EEG_TOKEN, "eeg_start_token_id": EEG_START_TOKEN, "eeg_end_token_id": EEG_END_TOKEN}
    ids = {key: tokenizer.convert_tokens_to_ids(token) for key, token in names.items()}
    unknown = [names[key] for key, value in ids.items() if value is None or value == tokenizer.unk_token_id]
    if unknown:
        raise ValueError(f"The tokenizer has no EEG token(s) {unknown}: build it with the E2LLM processor")
    return ids


def check_eeg_tokens(tokenizer, vocab_size: int) -> dict[str, int]:
    """The EEG token ids, refused when they fall outside the language model's embedding."""
    ids = eeg_token_ids(tokenizer)
    outside = {key: value for key, value in ids.items() if value >= vocab_size}
    if outside:
        raise ValueError(
            f"EEG token ids {outside} fall outside the language model's {vocab_size} embedding rows: "
            "the tokenizer does not belong to this Qwen3"
        )
    return ids


def build_e2llm(encoder, language_model, tokenizer, projector_hidden_act: str = "gelu"):
    """`E2LLMForConditionalGeneration.from_parts` with the tokenizer's EEG token ids."""
    from modeling_e2llm import E2LLMForConditionalGeneration

    ids = check_eeg_tokens(tokenizer, language_model.config.vocab_size)
    return E2LLMForConditionalGeneration.from_parts(
        encoder, language_model, projector_hidden_act=projector_hidden_act, **ids
    )


def storage_dtype(model) -> torch.dtype:
    """The dtype an E2LLM (or a causal LM) is stored in: its language model's, the recipe's `dtype`."""
    return model.get_input_embeddings().weight.dtype


def stored_state_dict(model, state_dict: dict | None = None) -> dict:
    """`state_dict` (default: the model's) with every floating tensor in `storage_dtype(model)`."""
    dtype = storage_dtype(model)
    state = model.state_dict() if state_dict is None else state_dict
    return {key: value.to(dtype) if value.is_floating_point() else value for key, value in state.items()}


def save_e2llm(model, folder: str | Path, processor=None, max_shard_size: str | int = DEFAULT_MAX_SHARD_SIZE) -> None:
    """Write `model` (and `processor`) to `folder` under the dtype policy, in safetensors files of at most
    `max_shard_size` (with `model.safetensors.index.json` when there are several).

    The model is cast in place to its storage dtype first, so that config.json's `dtype`, which
    `save_pretrained` reads from the model's parameters, names the dtype of the tensors written.
    """
    model.to(storage_dtype(model))
    model.save_pretrained(folder, max_shard_size=max_shard_size)
    if processor is not None:
        processor.save_pretrained(folder)
