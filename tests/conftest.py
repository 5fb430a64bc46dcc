"""Shared fixtures: the real Qwen3 tokenizer (built offline once per run), the demo's, tiny configs, and
makers of small prepared folders, official-format parts and tiny models."""

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


@pytest.fixture(scope="session")
def make_prepared(tmp_path_factory):
    """Writes a prepared folder from one synthetic subject (10 s clips): `make_prepared(name, qa_train,
    qa_stage3, qa_test_multi, qa_test_esr)` returns its path."""
    from train.data import prepare, synthesize

    def make(name: str, qa_train: int, qa_stage3: int, qa_test_multi: int, qa_test_esr: int):
        root = tmp_path_factory.mktemp(name)
        synthesize.main(["--out", str(root / "seed-vii"), "--subjects", "1", "--clip-seconds", "10"])
        prepare.main([
            "--root", str(root / "seed-vii"), "--out", str(root / "prepared"), "--num-workers", "1",
            "--qa-train", str(qa_train), "--qa-stage3", str(qa_stage3), "--qa-test-multi", str(qa_test_multi),
            "--qa-test-esr", str(qa_test_esr),
        ])  # fmt: skip
        return root / "prepared"

    return make


@pytest.fixture(scope="session")
def make_parts(tmp_path_factory):
    """Writes a tiny EEGPT in the official checkpoint format and a tiny Qwen3 folder with the offline
    Qwen3 tokenizer: `make_parts(name, llm_folder, dtype=None)` returns (checkpoint, Qwen3 folder)."""
    from transformers import Qwen3ForCausalLM

    from modeling_e2llm import EEGPTConfig, EEGPTModel
    from train.stages.tiny import tiny_qwen3_config
    from train.tokenizer import build_qwen3_tokenizer

    def make(name: str, llm_folder: str, dtype: torch.dtype | None = None):
        root = tmp_path_factory.mktemp(name)
        torch.manual_seed(0)
        encoder = EEGPTModel(EEGPTConfig.from_preset("tiny"))
        state = {f"target_encoder.{k}": v for k, v in encoder.state_dict().items()}
        torch.save({"state_dict": state}, root / "eegpt.ckpt")
        llm = Qwen3ForCausalLM(tiny_qwen3_config(initializer_range=0.5))
        (llm if dtype is None else llm.to(dtype)).save_pretrained(root / llm_folder)
        build_qwen3_tokenizer().save_pretrained(root / llm_folder)
        return root / "eegpt.ckpt", root / llm_folder

    return make


@pytest.fixture(scope="session")
def make_tiny_e2llm(qwen3_tokenizer):
    """`make_tiny_e2llm()`: a new tiny E2LLM (seed 0) in eval mode and its processor on the Qwen3 tokenizer."""
    from transformers import Qwen3ForCausalLM

    from modeling_e2llm import E2LLMForConditionalGeneration, EEGPTConfig, EEGPTModel
    from processing_e2llm import E2LLMFeatureExtractor, E2LLMProcessor
    from train.stages.tiny import tiny_qwen3_config

    def make():
        torch.manual_seed(0)
        model = E2LLMForConditionalGeneration.from_parts(
            EEGPTModel(EEGPTConfig.from_preset("tiny")), Qwen3ForCausalLM(tiny_qwen3_config())
        )
        return model.eval(), E2LLMProcessor(E2LLMFeatureExtractor(), qwen3_tokenizer)

    return make
