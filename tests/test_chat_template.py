"""Which chat template a trained model's processor renders with: Qwen3's own, when the language
model's folder carries it (thinking off unless asked, EEG items as placeholders), else E2LLM's ChatML.

`tests/data/qwen3_chat_template.jinja` is the `chat_template` of Qwen/Qwen3-8B's
tokenizer_config.json, with the real Qwen3 tokenizer built offline.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from processing_e2llm import CHAT_TEMPLATE
from train.stages.parts import build_processor
from train.tokenizer import EEG_CHAT_TEMPLATE_PREAMBLE, QWEN3_VOCAB_SIZE

QWEN3_TEMPLATE = (Path(__file__).parent / "data" / "qwen3_chat_template.jinja").read_text()
EMPTY_THINKING = "<think>\n\n</think>\n\n"
QUESTION = [
    {"role": "system", "content": [{"type": "text", "text": "You read EEG."}]},
    {"role": "user", "content": [{"type": "eeg"}, {"type": "eeg"}, {"type": "text", "text": "Which emotion?"}]},
]
ANSWER = {"role": "assistant", "content": [{"type": "text", "text": "Both look sad. Answer: sad"}]}


@pytest.fixture
def qwen3_snapshot_tokenizer(qwen3_tokenizer):
    """The tokenizer as a Qwen3 snapshot's folder gives it: Qwen3's ids and Qwen3's own chat template."""
    tokenizer = copy.deepcopy(qwen3_tokenizer)
    tokenizer.chat_template = QWEN3_TEMPLATE
    return tokenizer


@pytest.fixture
def qwen3_processor(qwen3_snapshot_tokenizer):
    return build_processor(qwen3_snapshot_tokenizer, QWEN3_VOCAB_SIZE)


def test_a_qwen3_folder_keeps_its_own_template_behind_the_eeg_preamble(qwen3_processor):
    assert qwen3_processor.chat_template == EEG_CHAT_TEMPLATE_PREAMBLE + QWEN3_TEMPLATE
    assert qwen3_processor.tokenizer.chat_template == qwen3_processor.chat_template


def test_qwen3_template_renders_eeg_placeholders_with_thinking_off(qwen3_processor):
    text = qwen3_processor.apply_chat_template(QUESTION, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nYou read EEG.<|im_end|>\n"
        "<|im_start|>user\n<eeg><eeg>Which emotion?<|im_end|>\n"
        "<|im_start|>assistant\n" + EMPTY_THINKING
    )


def test_qwen3_template_thinks_when_asked(qwen3_processor):
    text = qwen3_processor.apply_chat_template(QUESTION, tokenize=False, add_generation_prompt=True, enable_thinking=True)
    assert text.endswith("<|im_start|>user\n<eeg><eeg>Which emotion?<|im_end|>\n<|im_start|>assistant\n")


def test_qwen3_template_renders_a_trained_answer_as_qwen3_does_without_thinking(qwen3_processor):
    text = qwen3_processor.apply_chat_template([*QUESTION, ANSWER], tokenize=False)
    assert text.endswith("<|im_start|>assistant\n" + EMPTY_THINKING + "Both look sad. Answer: sad<|im_end|>\n")


def test_the_preamble_changes_nothing_qwen3_renders_from_plain_strings(qwen3_processor, qwen3_snapshot_tokenizer):
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Sad?"}]
    original = copy.deepcopy(qwen3_snapshot_tokenizer)
    original.chat_template = QWEN3_TEMPLATE
    ours = qwen3_processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert ours == original.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, enable_thinking=False)
    thinking = qwen3_processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, enable_thinking=True)
    assert thinking == original.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def test_qwen3_rendering_tokenizes_to_the_eeg_tokens_and_qwen3_thinking_ids(qwen3_processor):
    import numpy as np

    text = qwen3_processor.apply_chat_template(QUESTION, tokenize=False, add_generation_prompt=True)
    eeg = {"eeg_values": np.zeros((2, 58, 1024), np.float32), "eeg_channel_ids": np.arange(58)}
    ids = qwen3_processor(text=text, eeg=eeg)["input_ids"][0]
    assert ids.count(151669) == 32 and ids.count(151670) == ids.count(151671) == 2
    # <think> "\n\n" </think> "\n\n": Qwen3's thinking tokens, closed before the answer.
    assert ids[-4:] == [151667, 271, 151668, 271]


def test_an_unknown_content_item_is_refused(qwen3_processor):
    from jinja2.exceptions import TemplateError

    with pytest.raises(TemplateError, match="Unknown content type image; expected text or eeg"):
        qwen3_processor.apply_chat_template([{"role": "user", "content": [{"type": "image"}]}], tokenize=False)


def test_the_offline_tokenizer_keeps_e2llm_chatml_without_thinking(qwen3_tokenizer):
    processor = build_processor(copy.deepcopy(qwen3_tokenizer), QWEN3_VOCAB_SIZE)
    assert processor.chat_template == CHAT_TEMPLATE
    text = processor.apply_chat_template(QUESTION, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nYou read EEG.<|im_end|>\n<|im_start|>user\n<eeg><eeg>Which emotion?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_the_saved_processor_keeps_the_qwen3_template(qwen3_processor, tmp_path):
    from train.evaluation.evaluate import load_processor

    qwen3_processor.save_pretrained(tmp_path)
    reloaded = load_processor(tmp_path)
    assert reloaded.chat_template == qwen3_processor.chat_template
    assert reloaded.apply_chat_template(QUESTION, tokenize=False, add_generation_prompt=True).endswith(EMPTY_THINKING)


def test_the_collator_leaves_the_empty_thinking_block_out_of_the_loss(qwen3_processor):
    import numpy as np

    from train.stages.collator import E2LLMCollator

    class Segments:
        def windows(self, ids, crop, rng=None):
            return np.zeros((len(ids), 58, 1024), np.float32)

    row = {"id": "x", "messages": [*QUESTION, ANSWER], "segment_ids": ["a", "b"]}
    batch = E2LLMCollator(qwen3_processor, Segments())([row])
    labelled = batch["labels"][0][batch["labels"][0] != -100].tolist()
    assert qwen3_processor.tokenizer.decode(labelled) == "Both look sad. Answer: sad<|im_end|>"
