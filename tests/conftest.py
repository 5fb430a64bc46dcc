"""Shared fixtures: the real Qwen3 tokenizer (built offline once per run), the demo's, and tiny configs."""

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


@pytest.fixture(scope="session")
def demo_texts() -> list[str]:
    """Chats as the demo's texts run: ChatML turns, EEG placeholders, chain-of-thought answers."""
    return [
        "<|im_start|>system\nYou read EEG recordings and explain the emotions they show.<|im_end|>\n"
        f"<|im_start|>user\nEEG 1: <eeg>\nEEG 2: <eeg>\nWhich of the two is {emotion}?<|im_end|>\n"
        f"<|im_start|>assistant\nEEG 1 shows {emotion}: frontal alpha asymmetry rose. EEG 2 shows calm.\n"
        f"Seen {emotion}, asked {emotion}: EEG 1 fits.\nAnswer: EEG 1<|im_end|>\n"
        for emotion in ("happiness", "surprise", "neutrality", "disgust", "fear", "sadness", "anger")
    ] * 3


@pytest.fixture(scope="session")
def demo_tokenizer(demo_texts):
    from train.tokenizer import build_demo_tokenizer

    return build_demo_tokenizer(demo_texts, vocab_size=400)


@pytest.fixture
def tiny_text_config():
    from train.stages.tiny import tiny_qwen3_config

    return tiny_qwen3_config()


@pytest.fixture(scope="session")
def tiny_e2llm_folder(tmp_path_factory, qwen3_tokenizer):
    """A tiny E2LLM saved as stages 2 and 3 save it: weights, processor and remote code."""
    from transformers import Qwen3ForCausalLM

    from modeling_e2llm import E2LLMForConditionalGeneration, EEGPTConfig, EEGPTModel
    from train.stages.parts import build_processor
    from train.stages.tiny import tiny_qwen3_config

    torch.manual_seed(0)
    model = E2LLMForConditionalGeneration.from_parts(
        EEGPTModel(EEGPTConfig.from_preset("tiny")), Qwen3ForCausalLM(tiny_qwen3_config())
    )
    folder = tmp_path_factory.mktemp("tiny-e2llm")
    model.save_pretrained(folder)
    build_processor(qwen3_tokenizer, model.config.text_config.vocab_size).save_pretrained(folder)
    return folder
