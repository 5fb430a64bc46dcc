"""Tiny Qwen3 configurations for the tests and the CPU demo.

They keep Qwen3's real vocabulary (151,936 rows) so the real tokenizer and the EEG token ids
work unchanged; everything else is shrunk until a forward pass takes milliseconds.
"""

from __future__ import annotations

from transformers import Qwen3Config

from train.tokenizer import QWEN3_VOCAB_SIZE


def tiny_qwen3_config(**overrides) -> Qwen3Config:
    """A Qwen3 config with the real vocabulary and a tiny body (hidden 64, 2 layers)."""
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
    settings.update(overrides)
    return Qwen3Config(**settings)
