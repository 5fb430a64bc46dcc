"""Tiny Qwen3 configurations for the tests and the CPU demo.

By default they keep Qwen3's real vocabulary (151,936 rows), so the real tokenizer and the EEG
token ids work unchanged; everything else is shrunk until a forward pass takes milliseconds.
Given a tokenizer (the demo's, `train.tokenizer.build_demo_tokenizer`), they take its
vocabulary and special token ids instead.
"""

from __future__ import annotations

from transformers import Qwen3Config

from train.tokenizer import QWEN3_VOCAB_SIZE


def tiny_qwen3_config(tokenizer=None, **overrides) -> Qwen3Config:
    """A Qwen3 config with a tiny body (hidden 64, 2 layers) and Qwen3's vocabulary, or
    `tokenizer`'s (its length, `<|endoftext|>` as bos and pad, its eos)."""
    settings = dict(
        vocab_size=QWEN3_VOCAB_SIZE,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=151643,
        eos_token_id=151645,
        pad_token_id=151643,
    )
    if tokenizer is not None:
        settings.update(
            vocab_size=len(tokenizer),
            bos_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    settings.update(overrides)
    return Qwen3Config(**settings)
