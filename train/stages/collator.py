"""Batches of EEG question-answer samples for stages 2 and 3.

A QA sample (a row of `DIR/qa/<split>`, written by `e2llm prepare`) holds a chat in `messages`
with one `{"type": "eeg"}` item per EEG, and in `segment_ids` the ids of the 10 s segments
those items show, in the same order. `E2LLMCollator` turns a list of such rows into a batch:

- each chat is rendered with the processor's chat template (gold assistant turns included);
- each segment is cropped to one 4 s window (random while training, centred for evaluation),
  and the windows are stacked sample by sample, in the order of their `<eeg>` placeholders,
  which is the order `E2LLMModel` fills them in;
- the processor expands each `<eeg>` into `<eeg_start>` + 16 x `<eeg>` + `<eeg_end>` and pads on
  the left, so that the answers, which end every chat, line up at the end of the rows;
- `labels` copy `input_ids` inside the assistant turns (from after `<|im_start|>assistant\\n`
  up to and including their `<|im_end|>`, so the model learns to stop) and are -100 everywhere
  else: system prompt, questions, EEG tokens and padding carry no loss. Qwen3's own template
  opens the answer with an empty `<think>\\n\\n</think>\\n\\n`, which inference with thinking off
  puts in the prompt: it carries no loss either.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

ASSISTANT_HEADER = "<|im_start|>assistant\n"
EMPTY_THINKING = "<think>\n\n</think>\n\n"
TURN_END = "<|im_end|>"
IGNORE_INDEX = -100


def assistant_mask(
    input_ids: torch.Tensor, header_ids: list[int], end_id: int, skip_ids: list[int] | None = None
) -> torch.Tensor:
    """Which tokens belong to assistant answers.

    Args:
        input_ids: (B, L) token ids.
        header_ids: the ids that open an assistant turn (`<|im_start|>assistant\\n`).
        end_id: the id that closes a turn (`<|im_end|>`).
        skip_ids: ids that, right after a header, still belong to the prompt (Qwen3's empty
            thinking block).

    Returns:
        (B, L) bool, True from the token after each header (and after `skip_ids` there) through
        the turn's closing id (or the end of the row when the turn is not closed).
    """
    mask = torch.zeros_like(input_ids, dtype=torch.bool)
    width = len(header_ids)
    header = torch.tensor(header_ids, dtype=input_ids.dtype)
    for row, ids in enumerate(input_ids):
        starts = (ids.unfold(0, width, 1) == header).all(dim=1).nonzero().flatten() + width
        ends = (ids == end_id).nonzero().flatten()
        for start in starts.tolist():
            if skip_ids and ids[start : start + len(skip_ids)].tolist() == skip_ids:
                start += len(skip_ids)
            later = ends[ends >= start]
            stop = int(later[0]) + 1 if len(later) else len(ids)
            mask[row, start:stop] = True
    return mask


def clean_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A QA row's `messages` as the chat template expects them (None-valued keys dropped)."""
    # Arrow stores every content item with the union of the keys, so EEG items come back with
    # `text: None`; the chat template expects only the keys each item type has.
    return [
        {
            "role": message["role"],
            "content": [{key: value for key, value in item.items() if value is not None} for item in message["content"]],
        }
        for message in messages
    ]


class E2LLMCollator:
    """Collates QA rows into model inputs with labels for the language-model loss.

    Args:
        processor: an `E2LLMProcessor` (chat template, tokenizer, EEG placeholder expansion).
        segments: a `train.data.segments.SegmentStore` over the segments the rows refer to.
        crop: "random" (training) or "center" (evaluation): where each 4 s window is cut from
            its 10 s segment. A row with an `eeg_crop` column overrides it for that row.
        seed: seed of the random crops.

    Returns (from `__call__(rows)`): a dict of tensors: `input_ids` and `attention_mask` (B, L),
    `labels` (B, L) with -100 outside the assistant answers, `eeg_values` (W, 58, 1024) float32
    in mV with W the total number of EEG placeholders in the batch, and `eeg_channel_ids` (W, 58).
    """

    def __init__(self, processor, segments, crop: str = "random", seed: int = 0):
        if crop not in ("random", "center"):
            raise ValueError(f"crop must be 'random' or 'center', got {crop!r}")
        self.processor = processor
        self.segments = segments
        self.crop = crop
        self.rng = np.random.default_rng(seed)
        tokenizer = processor.tokenizer
        self.header_ids = tokenizer.encode(ASSISTANT_HEADER, add_special_tokens=False)
        self.skip_ids = tokenizer.encode(EMPTY_THINKING, add_special_tokens=False)
        self.end_id = tokenizer.convert_tokens_to_ids(TURN_END)
        if self.end_id is None or self.end_id == tokenizer.unk_token_id:
            raise ValueError(f"The tokenizer has no {TURN_END} token: the chat template needs a ChatML tokenizer")

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        from train.data.segments import SEGMENT_CHANNEL_IDS

        texts, windows = [], []
        for row in rows:
            messages = clean_messages(row["messages"])
            placeholders = sum(item["type"] == "eeg" for message in messages for item in message["content"])
            if placeholders != len(row["segment_ids"]):
                raise ValueError(
                    f"QA sample {row.get('id')!r} has {placeholders} EEG items in its messages but "
                    f"{len(row['segment_ids'])} segment_ids"
                )
            texts.append(self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=False))
            windows.append(self.segments.windows(row["segment_ids"], crop=row.get("eeg_crop") or self.crop, rng=self.rng))
        eeg_values = torch.from_numpy(np.concatenate(windows))
        channel_ids = torch.as_tensor(SEGMENT_CHANNEL_IDS).expand(len(eeg_values), -1)
        batch = self.processor(
            text=texts,
            eeg={"eeg_values": eeg_values, "eeg_channel_ids": channel_ids},
            padding=True,
            # Answers close every chat, so left padding lines them up at the end of the rows: the
            # positions scored by the answer-position loss then barely exceed the longest answer.
            padding_side="left",
            return_tensors="pt",
        )
        input_ids = batch["input_ids"]
        answer = assistant_mask(input_ids, self.header_ids, self.end_id, self.skip_ids) & batch["attention_mask"].bool()
        labels = input_ids.masked_fill(~answer, IGNORE_INDEX)
        return {
            "input_ids": input_ids,
            "attention_mask": batch["attention_mask"],
            "labels": labels,
            "eeg_values": batch["eeg_values"],
            "eeg_channel_ids": batch["eeg_channel_ids"],
        }
