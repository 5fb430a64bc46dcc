"""Prepared segments -> the 4 s EEG windows the model reads.

``e2llm prepare`` stores 10 s segments (58 x 2560, mV, 256 Hz, ``EEGPT_58_CHANNELS`` order);
training crops a random 4 s window from each segment every time it is read, as the paper does;
evaluation reads the centre window (ours: the paper states random cropping, not what it reads
at test, and a fixed crop makes every run read the same EEG). QA samples name their segments by id; a
:class:`SegmentStore` turns those ids into windows without loading the whole split.
"""

from __future__ import annotations

import numpy as np

from processing_e2llm import CHANNEL_INDEX, EEGPT_58_CHANNELS, TARGET_SAMPLING_RATE, WINDOW_SECONDS

WINDOW_SAMPLES = WINDOW_SECONDS * TARGET_SAMPLING_RATE
SEGMENT_CHANNEL_IDS = np.array([CHANNEL_INDEX[name] for name in EEGPT_58_CHANNELS], dtype=np.int64)
"""(58,) int64: each segment row's index into ``EEGPT_CHANNELS`` (the model's ``channel_ids``)."""


class SegmentStore:
    """Window access to one split of ``DIR/segments`` (a ``datasets.Dataset``).

    The split stays memory-mapped; only the requested rows are read.
    """

    def __init__(self, segments_split):
        self.segments = segments_split.with_format("numpy", columns=["eeg"])
        ids = segments_split["id"]
        self.index = {segment_id: row for row, segment_id in enumerate(ids)}
        if len(self.index) != len(ids):
            raise ValueError("segment ids are not unique in this split")

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, segment_id: str) -> bool:
        return segment_id in self.index

    def segments_of(self, segment_ids) -> np.ndarray:
        """The whole segments, float32 ``(k, 58, 2560)`` in mV, in the order of ``segment_ids``."""
        missing = [s for s in segment_ids if s not in self.index]
        if missing:
            raise ValueError(f"segment ids {missing[:5]} are not in this split ({len(missing)} missing)")
        rows = [self.index[s] for s in segment_ids]
        return np.asarray(self.segments[rows]["eeg"], dtype=np.float32).reshape(len(rows), len(EEGPT_58_CHANNELS), -1)

    def windows(self, segment_ids, crop: str = "random", rng: np.random.Generator | None = None) -> np.ndarray:
        """One 4 s window per segment: float32 ``(k, 58, 1024)`` in mV at 256 Hz.

        ``crop="random"`` draws each window's start uniformly (``rng``, default a fresh
        generator); ``crop="center"`` takes the middle 1024 samples, the same every time.
        Channels follow ``EEGPT_58_CHANNELS`` (ids: :data:`SEGMENT_CHANNEL_IDS`).
        """
        if crop not in ("random", "center"):
            raise ValueError(f"crop must be 'random' or 'center', got {crop!r}")
        segments = self.segments_of(list(segment_ids))
        room = segments.shape[-1] - WINDOW_SAMPLES
        if room < 0:
            raise ValueError(f"segments have {segments.shape[-1]} samples; a window needs {WINDOW_SAMPLES}")
        if crop == "center":
            starts = np.full(len(segments), room // 2)
        else:
            starts = (rng if rng is not None else np.random.default_rng()).integers(0, room + 1, len(segments))
        return np.stack([segment[:, start : start + WINDOW_SAMPLES] for segment, start in zip(segments, starts)])
