"""EEG recordings -> the paper's 10 s segments, for SEED-VII and for any recording MNE reads.

Every recording goes through the same steps:

1. each clip needs itself plus :func:`filter_pad_seconds` of its neighbouring recording on each
   side, so the band-pass sees the continuous recording around the clip; where these stretches
   meet they are merged, and each merged stretch is read once (lazily, through MNE, in pieces);
2. :func:`processing_e2llm.preprocess_continuous_chunks` (the feature extractor's own code,
   piece by piece): EEGPT's 58 electrodes in vocabulary order, mV, 256 Hz, 0.1-70 Hz
   band-pass, 50 Hz notch, global average reference (``.mat`` data, filtered already, goes
   through :func:`processing_e2llm.preprocess_continuous` clip by clip and skips the filters);
3. each clip is cut out of its stretch and into whole 10 s segments (2560 samples) from its
   start; a shorter remainder is dropped.

With the padding wider than half the longest filter, each clip equals the matching stretch of
the whole recording filtered at once (the paper's order), while memory stays bounded by the
pieces and the longest clip rather than the recording, and no sample is filtered twice.

Recordings of your own (EDF, BDF, FIF, BrainVision, EEGLAB, CNT, ... anything
``mne.io.read_raw`` opens) bring their clips as annotations with durations or as a BIDS-style
events table ``<stem>_events.tsv`` (columns ``onset``, ``duration``, ``trial_type``, optional
``video``), mapped to emotions by name or through a label map such as ``{"T1": "happy"}``.
They must contain all 58 EEGPT electrodes (any spelling
:func:`processing_e2llm.normalize_channel_name` reads).
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from processing_e2llm import (
    EEGPT_58_CHANNELS,
    TARGET_SAMPLING_RATE,
    _filter_kernel,
    _resample_ratio,
    normalize_channel_name,
    preprocess_continuous,
    preprocess_continuous_chunks,
)
from train.data.qa import EMOTIONS

SEGMENT_SECONDS = 10
SEGMENT_SAMPLES = SEGMENT_SECONDS * TARGET_SAMPLING_RATE
L_FREQ, H_FREQ, NOTCH_FREQ = 0.1, 70.0, 50.0
# Any rate above 140 Hz gives the full 0.1-70 Hz band-pass and 50 Hz notch at 256 Hz.
RAW_RATE_FOR_PADDING = 1000.0
# Output per piece of the continuous preprocessing of a raw recording (memory vs. overlap).
CHUNK_SECONDS = 300.0

MNE_EXTENSIONS = (".edf", ".bdf", ".fif", ".vhdr", ".set", ".cnt", ".gdf")


@dataclass(frozen=True)
class Clip:
    """One stimulus presentation inside a recording.

    ``start`` and ``stop`` are seconds from the recording's first sample; ``video`` numbers the
    stimulus (the same number for the same stimulus across subjects); ``intensity`` is an
    optional 1-D trace of felt intensity spread evenly over the clip.
    """

    start: float
    stop: float
    emotion: str
    video: int
    intensity: np.ndarray | None = None


def missing_channels(channel_names: list[str]) -> list[str]:
    """The EEGPT 58-channel electrodes absent from ``channel_names`` (any spelling)."""
    present = {normalize_channel_name(name) for name in channel_names}
    return [name for name in EEGPT_58_CHANNELS if name not in present]


def preprocess_clip(
    data: np.ndarray, sampling_rate: float, channel_names: list[str], *, units: str, apply_filters: bool, source: str
) -> np.ndarray:
    """One continuous stretch ``(C, T)`` in ``units`` -> float32 ``(58, T')`` in mV at 256 Hz.

    Channels follow ``EEGPT_58_CHANNELS``; extra channels (EOG, ECG, mastoids, CB1, CB2) are
    dropped. Raises ValueError naming ``source`` when an electrode of the 58 is missing.
    """
    missing = missing_channels(channel_names)
    if missing:
        raise ValueError(f"{source} lacks EEG channels {missing}; all 58 EEGPT electrodes are required")
    with _named(source):
        eeg, _ = preprocess_continuous(
            data,
            sampling_rate,
            channel_names,
            units=units,
            l_freq=L_FREQ,
            h_freq=H_FREQ,
            notch_freq=NOTCH_FREQ,
            apply_filters=apply_filters,
            channels=EEGPT_58_CHANNELS,
            min_channels=len(EEGPT_58_CHANNELS),
        )
    return eeg


@contextmanager
def _named(source: str) -> Iterator[None]:
    """Prefix the message of a ValueError raised inside with the recording (and clip) it concerns."""
    try:
        yield
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from error


@lru_cache(maxsize=None)
def filter_pad_seconds() -> float:
    """Seconds of context each side of a clip that make per-clip filtering exact.

    The preprocessing applies MNE's default band-pass FIR convolved with its notch FIR at
    256 Hz; half that combined kernel (about 20 s, set by the 0.1 Hz high-pass) plus a second
    of margin for the resampler.
    """
    kernel = _filter_kernel(TARGET_SAMPLING_RATE, RAW_RATE_FOR_PADDING, L_FREQ, H_FREQ, NOTCH_FREQ)
    return float(math.ceil((len(kernel) + 1) / 2 / TARGET_SAMPLING_RATE) + 1)


def raw_clip_eeg(raw, clip: Clip, source: str, pad_seconds: float | None = None) -> np.ndarray:
    """Read one clip of an ``mne.io.Raw`` with filter context and preprocess it.

    Returns float32 ``(58, T')`` in mV at 256 Hz covering ``clip.start .. clip.stop``. The
    read starts on the resampler's grid, so a clip matches the same stretch of the whole
    recording preprocessed at once.
    """
    sfreq = float(raw.info["sfreq"])
    pad = filter_pad_seconds() if pad_seconds is None else pad_seconds
    start, stop = _clip_samples(raw, clip, source)
    step = _resample_ratio(sfreq, TARGET_SAMPLING_RATE).denominator
    read_start = max(0, start - int(pad * sfreq)) // step * step
    read_stop = min(raw.n_times, stop + int(pad * sfreq))
    picks = [i for i, name in enumerate(raw.ch_names) if normalize_channel_name(name) in EEGPT_58_CHANNELS]
    names = [raw.ch_names[i] for i in picks]
    data = raw.get_data(picks=picks, start=read_start, stop=read_stop)
    eeg = preprocess_clip(data, sfreq, names, units="V", apply_filters=True, source=source)
    offset = int(round((start - read_start) / sfreq * TARGET_SAMPLING_RATE))
    length = int(math.floor((stop - start) / sfreq * TARGET_SAMPLING_RATE))
    return eeg[:, offset : offset + length]


def _clip_samples(raw, clip: Clip, source: str) -> tuple[int, int]:
    sfreq = float(raw.info["sfreq"])
    start = int(round(clip.start * sfreq))
    stop = int(round(clip.stop * sfreq))
    if not 0 <= start < stop <= raw.n_times:
        raise ValueError(
            f"{source}: clip of video {clip.video} spans samples {start}..{stop}, "
            f"outside the recording's 0..{raw.n_times}"
        )
    return start, stop


def raw_clips_eeg(
    raw, clips: list[Clip], source: str, pad_seconds: float | None = None, chunk_seconds: float = CHUNK_SECONDS
) -> Iterator[tuple[Clip, np.ndarray]]:
    """Yield ``(clip, eeg)`` for each of ``clips``, in their order, reading ``raw`` once.

    Each clip's ``eeg`` is what :func:`raw_clip_eeg` returns for it. Instead of reading and
    filtering every clip with its own context, the stretches a clip needs (the clip plus
    ``pad_seconds`` each side) are merged where they meet, and each merged stretch is read and
    preprocessed once, in pieces (:func:`processing_e2llm.preprocess_continuous_chunks`), so
    neighbouring clips share their context, no sample is resampled or filtered twice, and memory
    stays bounded by ``chunk_seconds`` and the longest clip.
    """
    sfreq = float(raw.info["sfreq"])
    pad = filter_pad_seconds() if pad_seconds is None else pad_seconds
    step = _resample_ratio(sfreq, TARGET_SAMPLING_RATE).denominator
    picks = [i for i, name in enumerate(raw.ch_names) if normalize_channel_name(name) in EEGPT_58_CHANNELS]
    names = [raw.ch_names[i] for i in picks]
    missing = missing_channels(names)
    if missing:
        raise ValueError(f"{source} lacks EEG channels {missing}; all 58 EEGPT electrodes are required")
    wanted = []
    for index, clip in enumerate(clips):
        start, stop = _clip_samples(raw, clip, source)
        read_start = max(0, start - int(pad * sfreq)) // step * step
        read_stop = min(raw.n_times, stop + int(pad * sfreq))
        wanted.append((read_start, read_stop, start, stop, index))
    # Stretches that overlap are read as one; each starts on the resampler's grid.
    spans: list[list] = []
    for read_start, read_stop, start, stop, index in sorted(wanted):
        if spans and read_start <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], read_stop)
            spans[-1][2].append((start, stop, index))
        else:
            spans.append([read_start, read_stop, [(start, stop, index)]])
    done: dict[int, np.ndarray] = {}
    next_index = 0
    for span_start, span_stop, members in spans:
        targets = {}
        for start, stop, index in members:
            offset = int(round((start - span_start) / sfreq * TARGET_SAMPLING_RATE))
            length = int(math.floor((stop - start) / sfreq * TARGET_SAMPLING_RATE))
            targets[index] = (offset, np.empty((len(EEGPT_58_CHANNELS), length), dtype=np.float32), 0)

        def read(first, last, span_start=span_start):
            # All channels: MNE reads every channel from disk anyway, and picking costs a copy.
            return raw.get_data(start=span_start + first, stop=span_start + last)

        position = 0
        pieces = preprocess_continuous_chunks(
            read, span_stop - span_start, sfreq, raw.ch_names, units="V", l_freq=L_FREQ, h_freq=H_FREQ,
            notch_freq=NOTCH_FREQ, channels=EEGPT_58_CHANNELS, min_channels=len(EEGPT_58_CHANNELS),
            chunk_seconds=chunk_seconds,
        )  # fmt: skip
        for piece in _named_pieces(pieces, f"{source} ({span_start / sfreq:.0f}-{span_stop / sfreq:.0f} s)"):
            end = position + piece.shape[1]
            for index, (offset, eeg, filled) in list(targets.items()):
                first, last = max(position, offset + filled), min(end, offset + eeg.shape[1])
                if first < last:
                    eeg[:, first - offset : last - offset] = piece[:, first - position : last - position]
                    filled = last - offset
                    targets[index] = (offset, eeg, filled)
                if filled == eeg.shape[1]:
                    done[index] = eeg
                    del targets[index]
            position = end
            while next_index in done:
                yield clips[next_index], done.pop(next_index)
                next_index += 1
        for index, (offset, eeg, filled) in targets.items():
            # A clip reaching past the end of the resampled stretch keeps what exists (as slicing does).
            done[index] = eeg[:, :filled]
        while next_index in done:
            yield clips[next_index], done.pop(next_index)
            next_index += 1


def _named_pieces(pieces: Iterator[np.ndarray], source: str) -> Iterator[np.ndarray]:
    with _named(source):
        yield from pieces


def cut_segments(
    eeg: np.ndarray, intensity: np.ndarray | None = None
) -> Iterator[tuple[int, np.ndarray, float | None]]:
    """Yield ``(index, segment, intensity)`` for each whole 10 s segment of a preprocessed clip.

    ``eeg`` is ``(58, T)`` at 256 Hz; each segment is ``(58, 2560)`` float32. ``intensity``,
    a trace spread evenly over the clip, is averaged over each segment's stretch (None when
    the clip has no trace).
    """
    total = eeg.shape[-1]
    for index in range(total // SEGMENT_SAMPLES):
        start = index * SEGMENT_SAMPLES
        value = None
        if intensity is not None and len(intensity):
            first = int(math.floor(start / total * len(intensity)))
            last = max(first + 1, int(math.ceil((start + SEGMENT_SAMPLES) / total * len(intensity))))
            value = float(np.mean(intensity[first:last]))
        yield index, np.ascontiguousarray(eeg[:, start : start + SEGMENT_SAMPLES], dtype=np.float32), value


def parse_label_map(text: str | None) -> dict[str, str]:
    """``"T1=happy,T2=sad"`` -> ``{"T1": "happy", "T2": "sad"}``; emotions must be in EMOTIONS."""
    if not text:
        return {}
    mapping = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        value = value.strip().lower()
        if not sep or not key.strip():
            raise ValueError(f"label map item {item!r} is not 'description=emotion'")
        if value not in EMOTIONS:
            raise ValueError(f"label map item {item!r} names {value!r}; expected one of {', '.join(EMOTIONS)}")
        if key.strip() in mapping:
            raise ValueError(
                f"label map names {key.strip()!r} twice ({key.strip()}={mapping[key.strip()]}, {item.strip()}); "
                "give each label one emotion"
            )
        mapping[key.strip()] = value
    return mapping


def _emotion_of(label: str, label_map: dict[str, str]) -> str | None:
    label = str(label).strip()
    if label in label_map:
        return label_map[label]
    return label.lower() if not label_map and label.lower() in EMOTIONS else None


def clips_from_annotations(raw, label_map: dict[str, str], source: str) -> list[Clip]:
    """Clips from an ``mne.io.Raw``'s annotations whose descriptions map to emotions.

    Descriptions are looked up in ``label_map``; with an empty map, descriptions that are
    emotion names are taken as they are. Other annotations are ignored. Clips are numbered
    ``video`` 1, 2, ... in time order among the mapped annotations.
    """
    clips = []
    for onset, duration, description in zip(
        raw.annotations.onset, raw.annotations.duration, raw.annotations.description
    ):
        emotion = _emotion_of(description, label_map)
        if emotion is None:
            continue
        if duration <= 0:
            raise ValueError(
                f"{source}: annotation {description!r} at {onset:.1f} s has no duration; give clips durations "
                "or an events table with onset and duration"
            )
        start = float(onset - raw.first_time)
        clips.append(Clip(start, start + float(duration), emotion, len(clips) + 1))
    if not clips:
        raise ValueError(_no_clips_message(source, raw.annotations.description, label_map))
    return clips


def read_events_table(path: str | Path, label_map: dict[str, str]) -> list[Clip]:
    """Clips from a BIDS-style events table (``.tsv`` or ``.csv`` with a header row).

    Columns: ``onset`` and ``duration`` in seconds from the first sample, the label in
    ``trial_type`` (or ``emotion``, ``value``), and optionally ``video`` (the stimulus number;
    otherwise clips are numbered in time order).
    """
    path = Path(path)
    with path.open(newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t" if path.suffix == ".tsv" else ","))
    if not rows:
        raise ValueError(f"events table {path} is empty")
    label_column = next((c for c in ("trial_type", "emotion", "value") if c in rows[0]), None)
    if "onset" not in rows[0] or "duration" not in rows[0] or label_column is None:
        raise ValueError(f"events table {path} has columns {list(rows[0])}; expected onset, duration, trial_type")
    clips = []
    for row in sorted(rows, key=lambda r: float(r["onset"])):
        emotion = _emotion_of(row[label_column], label_map)
        if emotion is None:
            continue
        onset, duration = float(row["onset"]), float(row["duration"])
        video = int(row["video"]) if row.get("video") not in (None, "", "n/a") else len(clips) + 1
        clips.append(Clip(onset, onset + duration, emotion, video))
    if not clips:
        raise ValueError(_no_clips_message(path, [r[label_column] for r in rows], label_map))
    return clips


def _no_clips_message(source, labels, label_map) -> str:
    seen = sorted({str(label) for label in labels})[:20]
    return (
        f"{source}: no clip maps to an emotion (labels found: {seen}); pass a label map such as "
        f"'{seen[0] if seen else 'T1'}=happy' or label clips with {', '.join(EMOTIONS)}"
        if not label_map
        else f"{source}: none of the labels {seen} is in the label map {label_map}"
    )


@dataclass(frozen=True)
class RecordingFile:
    """One recording of your own: its file, subject and session numbers, and events table."""

    key: str
    path: Path
    subject: int
    session: int
    events: Path | None


def open_recording(path: str | Path):
    """Open any recording MNE reads, lazily (``.cnt`` through ``read_raw_cnt``)."""
    import mne

    path = Path(path)
    if not path.exists():
        raise ValueError(f"recording {path} does not exist")
    try:
        if path.suffix.lower() == ".cnt":
            return mne.io.read_raw_cnt(path, preload=False, verbose="error")
        return mne.io.read_raw(path, preload=False, verbose="error")
    except Exception as error:
        raise ValueError(f"{path} could not be read by MNE ({type(error).__name__}, see above)") from error


def find_recording_files(root: str | Path) -> list[RecordingFile]:
    """Every recording under ``root`` (recursively) with an extension MNE reads.

    Subject and session numbers come from BIDS names (``sub-07``, ``ses-2``) or else the
    first number in the file name; recordings without one are numbered in sorted order.
    An events table ``<stem>_events.tsv`` (or, for BIDS, the ``_eeg`` stem's) beside the
    file is used when present.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"recordings folder {root} is not a folder")
    paths = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in MNE_EXTENSIONS)
    if not paths:
        raise ValueError(f"no recordings under {root}; expected files ending in {', '.join(MNE_EXTENSIONS)}")
    found = []
    for index, path in enumerate(paths, start=1):
        subject_match = re.search(r"sub-([A-Za-z]*)(\d+)", path.name) or re.search(r"(\d+)", path.stem)
        session_match = re.search(r"ses-[A-Za-z]*(\d+)", path.name)
        subject = int(subject_match.group(subject_match.lastindex)) if subject_match else index
        session = int(session_match[1]) if session_match else 1
        events = None
        for stem in (path.stem, re.sub(r"_eeg$", "", path.stem)):
            for suffix in ("_events.tsv", "_events.csv"):
                if (path.parent / f"{stem}{suffix}").is_file():
                    events = path.parent / f"{stem}{suffix}"
        key = str(path.relative_to(root).with_suffix("")).replace("/", "__")
        found.append(RecordingFile(key, path, subject, session, events))
    return found
