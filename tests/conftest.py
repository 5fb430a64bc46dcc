"""Shared fixtures: the real Qwen3 tokenizer (built offline once per run) and tiny configs."""

from __future__ import annotations

import os

import pytest
import torch

# Two cores: keep torch from oversubscribing them when pytest runs beside other work.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def qwen3_tokenizer():
    from train.tokenizer import build_qwen3_tokenizer

    return build_qwen3_tokenizer()


@pytest.fixture
def tiny_text_config():
    from train.tiny import tiny_qwen3_config

    return tiny_qwen3_config()
