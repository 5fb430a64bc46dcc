"""E2LLMCollator: chats rendered, EEG windows stacked in placeholder order, loss only on answers.

Each test runs with Qwen3's tokenizer and with the demo's (`build_demo_tokenizer`): the collator
and the processor work unchanged with either.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import Dataset

from processing_e2llm import E2LLMFeatureExtractor, E2LLMProcessor
from train.stages.collator import IGNORE_INDEX, E2LLMCollator, assistant_mask
from train.data.segments import SEGMENT_CHANNEL_IDS, SegmentStore

SYSTEM = "You read EEG recordings."


@pytest.fixture(scope="module", params=["qwen3", "demo"])
def processor(request):
    return E2LLMProcessor(E2LLMFeatureExtractor(), request.getfixturevalue(f"{request.param}_tokenizer"))


@pytest.fixture(scope="module")
def store():
    # Segment k holds the value k everywhere, plus a ramp over time, so a window tells
    # which segment it came from and where it was cut.
    ramp = np.arange(2560, dtype=np.float32) / 1e4
    eeg = [np.full((58, 2560), k, dtype=np.float32) + ramp for k in range(5)]
    return SegmentStore(Dataset.from_dict({"id": [f"s{k}" for k in range(5)], "eeg": eeg}))


def eeg_item():
    return {"type": "eeg", "text": None}  # as Arrow returns it


def text_item(text):
    return {"type": "text", "text": text}


def sample(segment_ids, question, answers):
    """A QA row: one user turn per question, each followed by its gold answer."""
    messages = [{"role": "system", "content": [text_item(SYSTEM)]}]
    content = [eeg_item() for _ in segment_ids] + [text_item(question)]
    for number, answer in enumerate(answers):
        messages.append({"role": "user", "content": content if number == 0 else [text_item(question)]})
        messages.append({"role": "assistant", "content": [text_item(answer)]})
    return {"id": "q", "messages": messages, "segment_ids": list(segment_ids)}


def test_labels_are_the_answer_tokens_and_their_end_of_turn(processor, store):
    collator = E2LLMCollator(processor, store, crop="center")
    batch = collator([sample(["s1"], "Which emotion?", ["The EEG shows calm alpha.\nAnswer: neutral"])])
    labelled = batch["labels"][0][batch["labels"][0] != IGNORE_INDEX]
    assert processor.tokenizer.decode(labelled) == "The EEG shows calm alpha.\nAnswer: neutral<|im_end|>"
    kept = batch["labels"] != IGNORE_INDEX
    assert torch.equal(batch["labels"][kept], batch["input_ids"][kept])


def test_system_question_and_eeg_tokens_carry_no_loss(processor, store):
    collator = E2LLMCollator(processor, store, crop="center")
    batch = collator([sample(["s1", "s2"], "Which is happier?", ["EEG 1"])])
    eeg_positions = batch["input_ids"][0] == processor.eeg_token_id
    assert int(eeg_positions.sum()) == 2 * 16
    assert (batch["labels"][0][eeg_positions] == IGNORE_INDEX).all()
    first_answer_token = int((batch["labels"][0] != IGNORE_INDEX).nonzero()[0])
    prompt = processor.tokenizer.decode(batch["input_ids"][0][:first_answer_token])
    assert prompt.endswith("Which is happier?<|im_end|>\n<|im_start|>assistant\n")


def test_every_assistant_turn_is_labelled(processor, store):
    collator = E2LLMCollator(processor, store, crop="center")
    batch = collator([sample(["s0", "s1", "s2"], "Describe them.", ["First reply.", "Second reply."])])
    labelled = processor.tokenizer.decode(batch["labels"][0][batch["labels"][0] != IGNORE_INDEX])
    assert labelled == "First reply.<|im_end|>Second reply.<|im_end|>"


def test_padding_carries_no_loss(processor, store):
    collator = E2LLMCollator(processor, store, crop="center")
    batch = collator([sample(["s0"], "Q?", ["A long answer with several words in it."]), sample(["s1"], "Q?", ["Short."])])
    padding = batch["attention_mask"] == 0
    assert padding.any()
    assert (batch["labels"][padding] == IGNORE_INDEX).all()


def test_rows_are_padded_on_the_left_so_answers_end_together(processor, store):
    collator = E2LLMCollator(processor, store, crop="center")
    batch = collator([sample(["s0"], "Q?", ["A long answer with several words in it."]), sample(["s1"], "Q?", ["Short."])])
    assert batch["attention_mask"][:, -1].tolist() == [1, 1]
    assert batch["attention_mask"][1, 0] == 0
    last = [int((row != IGNORE_INDEX).nonzero().max()) for row in batch["labels"]]
    assert last[0] == last[1] >= batch["labels"].shape[1] - 2
    assert (batch["labels"][:, last[0]] == processor.tokenizer.convert_tokens_to_ids("<|im_end|>")).all()


def test_windows_are_stacked_in_placeholder_order_across_the_batch(processor, store):
    collator = E2LLMCollator(processor, store, crop="center")
    batch = collator([sample(["s3", "s0", "s4"], "Q?", ["A."]), sample(["s2"], "Q?", ["B."])])
    assert batch["eeg_values"].shape == (4, 58, 1024)
    assert batch["eeg_values"][:, 0, 0].floor().tolist() == [3.0, 0.0, 4.0, 2.0]
    assert torch.equal(batch["eeg_channel_ids"], torch.as_tensor(SEGMENT_CHANNEL_IDS).expand(4, -1))


def test_center_crop_is_the_middle_four_seconds(processor, store):
    batch = E2LLMCollator(processor, store, crop="center")([sample(["s1"], "Q?", ["A."])])
    start = (2560 - 1024) // 2
    assert batch["eeg_values"][0, 0, 0].item() == pytest.approx(1 + start / 1e4)


def test_random_crops_differ_between_batches_and_repeat_for_a_seed(processor, store):
    rows = [sample(["s1"], "Q?", ["A."])]
    first = E2LLMCollator(processor, store, crop="random", seed=3)
    starts = [first(rows)["eeg_values"][0, 0, 0].item() for _ in range(4)]
    again = E2LLMCollator(processor, store, crop="random", seed=3)
    assert [again(rows)["eeg_values"][0, 0, 0].item() for _ in range(4)] == starts
    assert len(set(starts)) > 1


def test_a_row_can_ask_for_the_center_crop(processor, store):
    row = {**sample(["s1"], "Q?", ["A."]), "eeg_crop": "center"}
    batch = E2LLMCollator(processor, store, crop="random")([row])
    assert batch["eeg_values"][0, 0, 0].item() == pytest.approx(1 + (2560 - 1024) // 2 / 1e4)


def test_eeg_items_and_segment_ids_must_match(processor, store):
    row = sample(["s1", "s2"], "Q?", ["A."])
    row["segment_ids"] = ["s1"]
    with pytest.raises(ValueError, match="2 EEG items in its messages but 1 segment_ids"):
        E2LLMCollator(processor, store)([row])


def test_unknown_crop_is_refused(processor, store):
    with pytest.raises(ValueError, match="crop must be 'random' or 'center'"):
        E2LLMCollator(processor, store, crop="middle")


def test_assistant_mask_runs_to_the_end_of_an_unclosed_turn():
    ids = torch.tensor([[5, 1, 2, 3, 7, 8, 9]])
    assert assistant_mask(ids, header_ids=[1, 2, 3], end_id=99).tolist() == [[False] * 4 + [True] * 3]
