"""The E2LLM model: configs, the composite model built from parts, forward, loss and generation."""

import pytest
import torch
from transformers import Qwen3ForCausalLM

from modeling_e2llm import (
    E2LLMConfig,
    E2LLMForConditionalGeneration,
    EEGPTConfig,
    EEGPTForEmotionClassification,
    EEGPTModel,
)
from train.tokenizer import EEG_END_TOKEN_ID, EEG_START_TOKEN_ID, EEG_TOKEN_ID

TOKENS_PER_WINDOW = 16


def prompt_ids(num_windows, prefix=(9707, 1879), suffix=(13, 151645)):
    ids = list(prefix)
    for _ in range(num_windows):
        ids += [EEG_START_TOKEN_ID] + [EEG_TOKEN_ID] * TOKENS_PER_WINDOW + [EEG_END_TOKEN_ID]
    return torch.tensor([ids + list(suffix)])


@pytest.fixture
def tiny_model(tiny_text_config):
    torch.manual_seed(0)
    encoder = EEGPTModel(EEGPTConfig.from_preset("tiny"))
    language_model = Qwen3ForCausalLM(tiny_text_config)
    return E2LLMForConditionalGeneration.from_parts(encoder, language_model).eval()


def test_config_records_the_eeg_token_ids():
    config = E2LLMConfig()
    assert (config.eeg_token_id, config.eeg_start_token_id, config.eeg_end_token_id) == (
        EEG_TOKEN_ID,
        EEG_START_TOKEN_ID,
        EEG_END_TOKEN_ID,
    )


def test_from_parts_keeps_the_encoder_and_language_model_weights(tiny_text_config):
    encoder = EEGPTModel(EEGPTConfig.from_preset("tiny"))
    language_model = Qwen3ForCausalLM(tiny_text_config)
    model = E2LLMForConditionalGeneration.from_parts(encoder, language_model)
    assert model.model.eeg_encoder is encoder
    assert model.model.language_model is language_model.model
    assert model.lm_head.weight is model.model.language_model.embed_tokens.weight
    assert model.model.projector.linear_1.in_features == 4 * 64
    assert model.model.projector.linear_2.out_features == tiny_text_config.hidden_size


def test_forward_gives_logits_and_loss_for_two_eeg_windows(tiny_model):
    input_ids = prompt_ids(2)
    eeg = torch.randn(2, 58, 1024)
    out = tiny_model(input_ids=input_ids, eeg_values=eeg, eeg_channel_ids=torch.arange(58), labels=input_ids)
    assert out.logits.shape == (1, input_ids.shape[1], 151936)
    assert out.eeg_hidden_states.shape == (2, TOKENS_PER_WINDOW, 64)
    assert torch.isfinite(out.loss)


def test_classifier_keeps_its_encoder_at_eegpt():
    model = EEGPTForEmotionClassification(EEGPTConfig.from_preset("tiny", num_labels=7))
    out = model(torch.randn(3, 58, 1024), torch.arange(58), labels=torch.tensor([0, 3, 6]))
    assert isinstance(model.eegpt, EEGPTModel)
    assert out.logits.shape == (3, 7)
    assert torch.isfinite(out.loss)
