"""SEED-VII as distributed: the clip table and readers for both recorded forms.

SEED-VII (BCMI, SJTU) holds 20 subjects who each watched 80 video clips in four sessions
of 20, while 62-channel EEG was recorded at 1000 Hz. Video ``v`` (1..80) is clip
``(v - 1) % 20`` of session ``(v - 1) // 20 + 1``; every subject saw the same order, each
session playing a 10-clip pattern twice. Labels come from emotion *names*
(:data:`SESSION_PATTERNS`), never from anyone's integer coding.

The dataset ships in two forms, both read here one clip at a time so memory stays bounded
by the longest clip:

``EEG_preprocessed/{subject}.mat``
    keys ``'1'..'80'``, float64 ``(62, T)`` in µV at 200 Hz, already band-passed
    0.1-70 Hz with a 50 Hz notch (so :func:`read_preprocessed_clips` skips the filters).
``EEG_raw/{subject}_{YYYYMMDD}_{session}.cnt``
    Neuroscan at 1000 Hz, 62 EEG channels plus M1 M2 ECG HEO VEO. Clip ``i`` runs from
    annotation ``2i`` to ``2i + 1``. Two recordings (:data:`WRONG_TRIGGER_RECORDINGS`) carry
    wrong triggers; their clip times come from ``save_info/{stem}_trigger_info.csv``
    (rows ``code, YYYY-MM-DD HH:MM:SS.ffffff``) relative to the recording start.
    ``.fif`` files in ``EEG_raw/`` (as ``e2llm synthesize --raw`` writes) take the same path.

``continuous_labels/{subject}.mat`` (keys ``'1'..'80'``, a 1-D intensity trace per clip)
is read when present.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from train.data.qa import EMOTIONS

SEED_VII_CHANNELS = (
    "FP1 FPZ FP2 AF3 AF4 F7 F5 F3 F1 FZ F2 F4 F6 F8 FT7 FC5 FC3 FC1 FCZ FC2 FC4 FC6 FT8 "
    "T7 C5 C3 C1 CZ C2 C4 C6 T8 TP7 CP5 CP3 CP1 CPZ CP2 CP4 CP6 TP8 P7 P5 P3 P1 PZ P2 P4 "
    "P6 P8 PO7 PO5 PO3 POZ PO4 PO6 PO8 CB1 O1 OZ O2 CB2"
).split()
"""The 62 EEG channels of SEED-VII, in the order of its recordings and ``.mat`` rows."""

SESSION_PATTERNS = {
    1: ("happy", "neutral", "disgust", "sad", "anger"),
    2: ("anger", "sad", "fear", "neutral", "surprise"),
    3: ("happy", "surprise", "disgust", "fear", "anger"),
    4: ("disgust", "sad", "fear", "surprise", "happy"),
}
"""First half of each session's 10-clip pattern; the second half is its mirror image."""

NUM_VIDEOS = 80
CLIPS_PER_SESSION = 20
RAW_SAMPLING_RATE = 1000.0
PREPROCESSED_SAMPLING_RATE = 200.0

WRONG_TRIGGER_RECORDINGS = {
    "14_20221015_1": dt.time(14, 25, 34),
    "9_20221111_3": dt.time(14, 1, 27),
}
"""Recordings whose in-file triggers are wrong, with the wall-clock time each recording
started; their clip boundaries come from ``save_info/{stem}_trigger_info.csv``."""

# A raw EEG channel's robust spread lies between these (in volts) when the Neuroscan
# sample format was guessed right; a wrong int16/int32 guess is off by orders of magnitude.
PLAUSIBLE_EEG_SPREAD_V = (0.2e-6, 2e-3)

_RAW_STEM = re.compile(r"^(\d+)_(\d{8})_([1-4])$")


def clip_emotion(video: int) -> str:
    """The emotion SEED-VII video ``video`` (1..80) was chosen to elicit, e.g. ``"happy"``."""
    if isinstance(video, bool) or not isinstance(video, (int, np.integer)) or not 1 <= video <= NUM_VIDEOS:
        raise ValueError(f"SEED-VII videos are numbered 1..{NUM_VIDEOS}, got {video!r}")
    session, clip = divmod(int(video) - 1, CLIPS_PER_SESSION)
    half = SESSION_PATTERNS[session + 1]
    pattern = half + half[::-1]
    return pattern[clip % 10]


def video_number(session: int, clip_index: int) -> int:
    """The video number (1..80) of clip ``clip_index`` (0..19) of ``session`` (1..4)."""
    return (session - 1) * CLIPS_PER_SESSION + clip_index + 1


STIMULI_ORDER_FILE = "emotion_label_and_stimuli_order.xlsx"


def _video_numbers(row) -> list[int]:
    numbers = []
    for cell in row:
        if isinstance(cell, bool) or cell is None:
            continue
        if isinstance(cell, (int, float, np.integer, np.floating)) and float(cell).is_integer():
            number = int(cell)
        elif isinstance(cell, str) and cell.strip().isdigit():
            number = int(cell.strip())
        else:
            continue
        if 1 <= number <= NUM_VIDEOS:
            numbers.append(number)
    return numbers


def check_stimuli_order(cells: list[list[object]], source: str = STIMULI_ORDER_FILE) -> None:
    """Check the clip table against the rows of ``emotion_label_and_stimuli_order.xlsx``.

    ``cells`` is the sheet as rows of cell values. Rows that hold one emotion name (any case)
    beside a video number (1..80; the largest number of the row, so a session or clip column
    beside it does no harm) give that video's emotion when they cover all 80 videos once each.
    Otherwise (say, a row of video numbers above a row of emotions) every cell naming an emotion
    is taken in reading order; those 80 names must equal ``clip_emotion(1..80)``.
    Raises ValueError naming ``source`` and the first video that disagrees.
    """
    paired: dict[int, str] = {}
    unique = True
    for row in cells:
        names = [str(c).strip().lower() for c in row if c is not None and str(c).strip().lower() in EMOTIONS]
        numbers = _video_numbers(row)
        if len(names) == 1 and numbers:
            video = max(numbers)
            unique = unique and video not in paired
            paired[video] = names[0]
    if unique and sorted(paired) == list(range(1, NUM_VIDEOS + 1)):
        names = [paired[video] for video in range(1, NUM_VIDEOS + 1)]
    else:
        names = [
            str(cell).strip().lower()
            for row in cells
            for cell in row
            if cell is not None and str(cell).strip().lower() in EMOTIONS
        ]
    if len(names) != NUM_VIDEOS:
        raise ValueError(f"{source} names {len(names)} emotions; expected {NUM_VIDEOS}")
    for video, name in enumerate(names, start=1):
        if name != clip_emotion(video):
            raise ValueError(f"{source} gives video {video} as {name!r}; the clip table says {clip_emotion(video)!r}")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _column_index(reference: str) -> int:
    """``"B7"`` -> 1 (columns from 0)."""
    index = 0
    for char in reference:
        if not char.isalpha():
            break
        index = index * 26 + ord(char.upper()) - ord("A") + 1
    return index - 1


def read_xlsx_cells(path: str | Path) -> list[list[object]]:
    """The cells of an ``.xlsx`` workbook's first sheet as rows of values, with the standard library only.

    An ``.xlsx`` is a zip of XML parts: ``xl/workbook.xml`` lists the sheets, its relationships
    name each sheet's part, ``xl/sharedStrings.xml`` holds the strings cells refer to. Values come
    back as ``str`` (shared, inline or formula strings), ``int`` or ``float`` (numbers), ``bool``,
    or None for empty cells; rows are padded to their last filled column. Raises ValueError
    naming the file when it is not a readable workbook.
    """
    import posixpath
    import xml.etree.ElementTree as ET
    import zipfile

    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            parts = set(archive.namelist())
            sheet = "xl/worksheets/sheet1.xml"
            if "xl/workbook.xml" in parts and "xl/_rels/workbook.xml.rels" in parts:
                workbook = ET.fromstring(archive.read("xl/workbook.xml"))
                first = next((e for e in workbook.iter() if _local(e.tag) == "sheet"), None)
                rid = None if first is None else next((v for k, v in first.attrib.items() if _local(k) == "id"), None)
                for rel in ET.fromstring(archive.read("xl/_rels/workbook.xml.rels")):
                    if rel.get("Id") == rid and rel.get("Target"):
                        target = rel.get("Target")
                        sheet = target.lstrip("/") if target.startswith("/") else posixpath.normpath("xl/" + target)
            strings = []
            if "xl/sharedStrings.xml" in parts:
                for item in ET.fromstring(archive.read("xl/sharedStrings.xml")):
                    if _local(item.tag) == "si":
                        # Plain (<t>) or rich text (runs <r><t>); phonetic hints (<rPh>) are not text.
                        skip = {id(t) for ph in item.iter() if _local(ph.tag) == "rPh" for t in ph.iter()}
                        texts = [t.text or "" for t in item.iter() if _local(t.tag) == "t" and id(t) not in skip]
                        strings.append("".join(texts))
            root = ET.fromstring(archive.read(sheet))
    except (OSError, KeyError, zipfile.BadZipFile, ET.ParseError) as error:
        raise ValueError(f"{path} is not a readable .xlsx workbook: {error}") from error
    rows: list[list[object]] = []
    for row in (e for e in root.iter() if _local(e.tag) == "row"):
        values: dict[int, object] = {}
        for position, cell in enumerate(c for c in row if _local(c.tag) == "c"):
            column = _column_index(cell.get("r", "")) if cell.get("r") else position
            kind = cell.get("t", "n")
            raw = next((c.text for c in cell if _local(c.tag) == "v"), None)
            try:
                if kind == "inlineStr":
                    value = "".join(t.text or "" for t in cell.iter() if _local(t.tag) == "t")
                elif raw is None:
                    continue
                elif kind == "s":
                    value = strings[int(raw)]
                elif kind in ("str", "e"):
                    value = raw
                elif kind == "b":
                    value = raw.strip() == "1"
                else:
                    number = float(raw)
                    value = int(number) if number.is_integer() else number
            except (ValueError, IndexError) as error:
                raise ValueError(f"{path}: cell {cell.get('r', '?')} cannot be read ({error})") from error
            values[column] = value
        index = int(row.get("r", len(rows) + 1)) - 1
        while len(rows) < index:
            rows.append([])
        rows.append([values.get(c) for c in range(max(values) + 1)] if values else [])
    return rows


def verify_stimuli_order(root: str | Path) -> bool:
    """Check the clip table against ``ROOT/emotion_label_and_stimuli_order.xlsx`` when it is there.

    Returns True when the file was read and agrees, False when it is absent; raises
    ValueError naming the file when it cannot be read or disagrees.
    """
    path = Path(root) / STIMULI_ORDER_FILE
    if not path.is_file():
        return False
    check_stimuli_order(read_xlsx_cells(path), str(path))
    return True


@dataclass(frozen=True)
class Recording:
    """One file to prepare: a subject's ``.mat`` or one session's raw recording."""

    key: str
    path: Path
    subject: int
    session: int | None
    kind: str


def find_recordings(root: str | Path, source: str = "auto", subjects: list[int] | None = None) -> list[Recording]:
    """List the recordings under a SEED-VII root, sorted by subject then session.

    ``source`` is ``"preprocessed"`` (``EEG_preprocessed/*.mat``), ``"raw"``
    (``EEG_raw/*.cnt`` or ``*.fif``) or ``"auto"`` (preprocessed when that folder exists).
    ``subjects`` keeps only those subject numbers. Raises ValueError when the folder or
    the files are missing.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"SEED-VII root {root} is not a folder")
    if source == "auto":
        source = "preprocessed" if (root / "EEG_preprocessed").is_dir() else "raw"
    if source == "preprocessed":
        folder = root / "EEG_preprocessed"
        if not folder.is_dir():
            raise ValueError(f"{folder} is missing; expected EEG_preprocessed/{{1..20}}.mat under the SEED-VII root")
        found = [
            Recording(f"subject-{int(p.stem):02d}", p, int(p.stem), None, "preprocessed")
            for p in folder.glob("*.mat")
            if p.stem.isdigit()
        ]
    elif source == "raw":
        folder = root / "EEG_raw"
        if not folder.is_dir():
            raise ValueError(f"{folder} is missing; expected EEG_raw/{{subject}}_{{date}}_{{session}}.cnt")
        found = []
        for path in [*folder.glob("*.cnt"), *folder.glob("*.fif")]:
            match = _RAW_STEM.match(path.stem)
            if match:
                subject, session = int(match[1]), int(match[3])
                found.append(Recording(f"subject-{subject:02d}-session-{session}", path, subject, session, "raw"))
    else:
        raise ValueError(f"source must be 'auto', 'preprocessed' or 'raw', got {source!r}")
    if subjects is not None:
        found = [r for r in found if r.subject in set(subjects)]
    if not found:
        raise ValueError(f"no SEED-VII recordings in {folder}" + (f" for subjects {subjects}" if subjects else ""))
    return sorted(found, key=lambda r: (r.subject, r.session or 0))


def _load_mat(path: Path, variable_names: list[str] | None = None) -> dict:
    from scipy.io import loadmat

    try:
        return loadmat(path, variable_names=variable_names)
    except NotImplementedError as error:
        raise ValueError(f"{path} is a MATLAB v7.3 (HDF5) file; save it as v7 or earlier") from error
    except Exception as error:
        raise ValueError(f"{path} is unreadable or truncated: {error}") from error


def read_continuous_labels(root: str | Path, subject: int) -> dict[int, np.ndarray] | None:
    """``continuous_labels/{subject}.mat`` as {video: 1-D float64 trace}, or None when absent."""
    path = Path(root) / "continuous_labels" / f"{subject}.mat"
    if not path.is_file():
        return None
    content = _load_mat(path)
    return {int(key): np.asarray(value, dtype=np.float64).ravel() for key, value in content.items() if key.isdigit()}


def _ranges(numbers: list[int]) -> str:
    """[1, 2, 3, 7] -> "1-3, 7"."""
    parts, start = [], numbers[0]
    for previous, current in zip(numbers, numbers[1:] + [None]):
        if current != previous + 1:
            parts.append(str(start) if start == previous else f"{start}-{previous}")
            start = current
    return ", ".join(parts)


def read_preprocessed_clips(path: str | Path) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(video, data)`` for videos 1..80 of one ``EEG_preprocessed`` file, one at a time.

    ``data`` is float64 ``(62, T)`` in µV at 200 Hz in :data:`SEED_VII_CHANNELS` order.
    Raises ValueError naming the file when it is unreadable or truncated, a video is
    missing, a clip does not have 62 channels, or a clip's amplitude is not that of EEG in µV
    (:func:`check_amplitude_spread`, the check the raw recordings get).
    """
    from scipy.io import whosmat

    path = Path(path)
    try:
        listed = {name: shape for name, shape, _ in whosmat(path)}
    except Exception as error:
        raise ValueError(f"{path} is unreadable or truncated: {error}") from error
    missing = [v for v in range(1, NUM_VIDEOS + 1) if str(v) not in listed]
    if missing:
        raise ValueError(
            f"{path} is truncated or incomplete: videos {_ranges(missing)} are missing; expected keys '1'..'80'"
        )
    for video in range(1, NUM_VIDEOS + 1):
        data = _load_mat(path, [str(video)]).get(str(video))
        if data is None:
            raise ValueError(f"{path} is truncated: video {video} could not be read")
        if data.ndim != 2 or data.shape[0] != len(SEED_VII_CHANNELS):
            raise ValueError(
                f"{path} video {video} has shape {data.shape}; expected ({len(SEED_VII_CHANNELS)}, samples)"
            )
        # The check the raw path makes of its sample format: a file saved in mV or V would reach
        # the model, unnoticed, a thousand or a million times too small.
        middle, half = data.shape[1] // 2, int(5 * PREPROCESSED_SAMPLING_RATE)  # the middle 10 s, as for raw
        check_amplitude_spread(
            data[:, max(0, middle - half) : middle + half] * 1e-6, f"{path} video {video}",
            "EEG_preprocessed files hold µV; convert this file to µV (or prepare from EEG_raw with --source raw)",
        )  # fmt: skip
        yield video, data


def read_raw_recording(path: str | Path, data_format: str = "auto"):
    """Open one raw SEED-VII session (``.cnt`` through ``mne.io.read_raw_cnt``, or ``.fif``) lazily.

    ``data_format`` ("auto", "int16" or "int32") is passed to ``read_raw_cnt``: MNE's guess
    can fail or be wrong for some files, and :func:`check_amplitudes` catches a wrong one.
    """
    import mne

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"raw recording {path} does not exist")
    try:
        if path.suffix.lower() == ".cnt":
            return mne.io.read_raw_cnt(path, data_format=data_format, preload=False, verbose="error")
        return mne.io.read_raw_fif(path, preload=False, verbose="error")
    except Exception as error:
        raise ValueError(
            f"{path} could not be read by MNE ({type(error).__name__}, see above); it may be truncated, or, "
            "for a .cnt file, the sample format may need data_format 'int16' or 'int32'"
        ) from error


def check_amplitudes(raw, source: str, seconds: float = 10.0) -> None:
    """Raise ValueError when the EEG's amplitude shows a wrong sample format.

    Reads ``seconds`` from the middle of ``raw`` and requires the median over channels of
    each channel's robust spread (median absolute deviation, in volts) to lie within
    :data:`PLAUSIBLE_EEG_SPREAD_V`.
    """
    import mne

    picks = mne.pick_types(raw.info, eeg=True)
    middle = raw.n_times // 2
    half = int(seconds * raw.info["sfreq"] / 2)
    data = raw.get_data(picks=picks, start=max(0, middle - half), stop=min(raw.n_times, middle + half))
    check_amplitude_spread(
        data, source, "the sample format is probably wrong: set data_format to 'int16' or 'int32'"
    )


def check_amplitude_spread(data_volts: np.ndarray, source: str, advice: str) -> None:
    """Raise ValueError naming ``source`` and ``advice`` when (C, T) EEG in volts has an implausible spread.

    The spread is the median over channels of each channel's median absolute deviation; EEG's
    lies within :data:`PLAUSIBLE_EEG_SPREAD_V` (0.2 µV to 2 mV). Data in another unit than
    assumed is off by a factor of 1,000 or more.
    """
    # Channels holding NaN or inf are left to the finite-value check, which names them.
    data_volts = data_volts[np.isfinite(data_volts).all(axis=1)]
    if not len(data_volts):
        return
    spread = float(np.median(np.median(np.abs(data_volts - np.median(data_volts, axis=1, keepdims=True)), axis=1)))
    low, high = PLAUSIBLE_EEG_SPREAD_V
    if not low <= spread <= high:
        raise ValueError(
            f"{source}: EEG amplitude spread {spread:.3g} V is outside the plausible {low:g}..{high:g} V; {advice}"
        )


def clip_bounds_from_annotations(raw, source: str) -> list[tuple[float, float]]:
    """The 20 clips of a session as ``(start_s, stop_s)`` from its 40 annotations.

    Clip ``i`` runs from annotation ``2i`` to annotation ``2i + 1`` (seconds from the first
    sample). Raises ValueError naming ``source`` when there are not 40 annotations.
    """
    onsets = np.sort(np.asarray(raw.annotations.onset, dtype=np.float64)) - raw.first_time
    if len(onsets) != 2 * CLIPS_PER_SESSION:
        raise ValueError(
            f"{source} has {len(onsets)} triggers; expected {2 * CLIPS_PER_SESSION} (start and end of 20 clips)"
        )
    return [(float(onsets[2 * i]), float(onsets[2 * i + 1])) for i in range(CLIPS_PER_SESSION)]


def clip_bounds_from_trigger_csv(path: str | Path, recording_start: dt.time) -> list[tuple[float, float]]:
    """The 20 clips of a session as ``(start_s, stop_s)`` from a ``*_trigger_info.csv``.

    Rows are ``code, YYYY-MM-DD HH:MM:SS.ffffff`` (code 1 = clip start, 2 = clip end);
    times are taken relative to ``recording_start``, the wall-clock time of the first sample.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"trigger file {path} does not exist")
    start = dt.datetime.combine(dt.date.min, recording_start)
    times = []
    with path.open(newline="", encoding="utf-8-sig") as handle:
        for row in csv.reader(handle):
            if not row:
                continue
            try:
                stamp = dt.datetime.strptime(row[1].strip().split(" ")[-1], "%H:%M:%S.%f").time()
            except (IndexError, ValueError) as error:
                raise ValueError(
                    f"{path}: cannot read row {row}; expected 'code, YYYY-MM-DD HH:MM:SS.ffffff'"
                ) from error
            times.append((dt.datetime.combine(dt.date.min, stamp) - start).total_seconds())
    if len(times) != 2 * CLIPS_PER_SESSION:
        raise ValueError(f"{path} has {len(times)} triggers; expected {2 * CLIPS_PER_SESSION}")
    return [(times[2 * i], times[2 * i + 1]) for i in range(CLIPS_PER_SESSION)]


def session_clip_bounds(raw, stem: str, root: str | Path, source: str) -> list[tuple[float, float]]:
    """Clip boundaries of one raw session: annotations, or the trigger file for the known bad ones."""
    if stem in WRONG_TRIGGER_RECORDINGS:
        csv_path = Path(root) / "save_info" / f"{stem}_trigger_info.csv"
        return clip_bounds_from_trigger_csv(csv_path, WRONG_TRIGGER_RECORDINGS[stem])
    return clip_bounds_from_annotations(raw, source)
