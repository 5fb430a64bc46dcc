"""E2LLM's processor: EEG recordings and text in, model inputs out.

`E2LLMFeatureExtractor` brings EEG to EEGPT's contract: the channels of EEGPT's 62-name
vocabulary (`EEGPT_CHANNELS`) in vocabulary order, in mV, at 256 Hz, with a global average
reference over the kept channels, cut into 4 s windows of 1024 samples. It returns
`eeg_values` (W, C, 1024) float32 and `eeg_channel_ids` (W, C) int64.

`E2LLMProcessor` pairs it with a Qwen3 tokenizer. The text holds one `<eeg>` per EEG window;
each becomes `<eeg_start>` + `<eeg>` x 16 + `<eeg_end>`, the 16 places the model fills with
the projected EEGPT features of that window (one per 64-sample patch).

What is filtered, and when:
- A continuous recording (a (C, T) array, a list of them, an `mne.io.Raw`) gets the paper's
  0.1-70 Hz band-pass and 50 Hz notch over the whole recording before windowing
  (`apply_filters`, `l_freq`, `h_freq`, `notch_freq` configure it).
- Epoched data (`mne.Epochs`, an (N, C, T) array) is taken as already filtered, as MNE
  recommends filtering before epoching: each epoch is only scaled, resampled, re-referenced
  and windowed. Filtering a few seconds with a 0.1 Hz high-pass would mostly show edge effects.
- Model-ready windows (a mapping with `eeg_values` and `eeg_channel_ids`) pass through the
  processor untouched.

Filtering runs after the anti-aliased resampling to 256 Hz. Both steps are linear and
time-invariant, the polyphase resampler keeps everything below 110 Hz intact (within 1.5 %),
and what it folds back lands above 110 Hz, in the low-pass's stop band; so the 0.1-70 Hz
output equals filtering at the native rate, with a quarter of the samples for 1000 Hz data.
Band-pass and notch are MNE's default FIR designs, convolved into one kernel and applied once.

This file is Hub remote code: it imports only numpy and transformers at module level; mne and
scipy are imported where they are needed.
"""

from __future__ import annotations

import inspect
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from fractions import Fraction
from functools import lru_cache

import numpy as np
from transformers import AddedToken, BatchFeature
from transformers.feature_extraction_utils import FeatureExtractionMixin
from transformers.processing_utils import ProcessorMixin

# EEGPT's channel vocabulary, in the order of its channel embedding.
EEGPT_CHANNELS: tuple[str, ...] = (
    "FP1", "FPZ", "FP2", "AF7", "AF3", "AF4", "AF8", "F7", "F5", "F3", "F1", "FZ", "F2", "F4", "F6", "F8",
    "FT7", "FC5", "FC3", "FC1", "FCZ", "FC2", "FC4", "FC6", "FT8", "T7", "C5", "C3", "C1", "CZ", "C2", "C4",
    "C6", "T8", "TP7", "CP5", "CP3", "CP1", "CPZ", "CP2", "CP4", "CP6", "TP8", "P7", "P5", "P3", "P1", "PZ",
    "P2", "P4", "P6", "P8", "PO7", "PO5", "PO3", "POZ", "PO4", "PO6", "PO8", "O1", "OZ", "O2",
)  # fmt: skip
# The 58 electrodes of EEGPT's pretraining and of the paper (SEED-VII's 62 minus PO5, PO6, CB1, CB2).
EEGPT_58_CHANNELS: tuple[str, ...] = tuple(c for c in EEGPT_CHANNELS if c not in {"AF7", "AF8", "PO5", "PO6"})
CHANNEL_INDEX: dict[str, int] = {name: index for index, name in enumerate(EEGPT_CHANNELS)}

# Old 10-20 names for the electrodes the 10-10 system renamed.
OLD_CHANNEL_NAMES = {"T3": "T7", "T4": "T8", "T5": "P7", "T6": "P8"}
# Common-reference suffixes of referential montages ("EEG FP1-REF", "Fp1-A1"). Any common
# reference disappears under the average reference, so they can be dropped; a bipolar pair
# such as "FP1-F7" keeps its suffix and stays outside the vocabulary.
REFERENCE_SUFFIXES = ("-REF", "-LE", "-AR", "-AVG", "-A1", "-A2", "-M1", "-M2")
# Factors from each accepted unit to mV.
UNIT_TO_MV = {"v": 1e3, "mv": 1.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3}

EEG_TOKEN = "<eeg>"
EEG_START_TOKEN = "<eeg_start>"
EEG_END_TOKEN = "<eeg_end>"
WINDOW_SECONDS = 4
TARGET_SAMPLING_RATE = 256
PATCH_SIZE = 64
FEW_CHANNELS_WARNING = 8
# The processor's keyword arguments for the feature extractor; the others go to the tokenizer.
EEG_OPTIONS = ("units", "windowing", "seed", "apply_filters")
# What an EEG item of a chat message may carry besides its type: the EEG ("eeg": an array, an MNE
# object, model-ready windows or a path; "path": a file) and, for arrays, how to read it.
EEG_ITEM_KEYS = ("eeg", "path", "sampling_rate", "channel_names", "units")
# The average reference subtracts the mean over the kept electrodes: with one, it leaves zeros.
MIN_AVERAGE_REFERENCE_CHANNELS = 2
# Rates an EEG recording can have; outside them the rate is a unit or entry error.
SAMPLING_RATE_RANGE = (32.0, 100_000.0)
# Resampling is one polyphase filter by up/down; every common EEG rate (100 to 100,000 Hz) needs
# a down factor of at most 3,125. A rate that needs larger terms (a measured clock such as
# 999.998 Hz) is resampled by the nearest ratio within them when that lands within
# RATE_TOLERANCE of the target, and refused otherwise.
MAX_RESAMPLING_TERM = 4096
RATE_TOLERANCE = 1e-4
# Median over channels of each channel's median absolute deviation, in mV, that scalp EEG shows
# after preprocessing (0.2 uV to 2 mV); a wrong unit moves it a thousandfold or more.
PLAUSIBLE_SPREAD_MV = (2e-4, 2.0)
TYPICAL_SPREAD_MV = 0.01

# ChatML as Qwen3 writes it, without a thinking block; `{"type": "eeg"}` renders as <eeg>.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}"
    "{{- message['content'] -}}"
    "{%- else -%}"
    "{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'eeg' -%}{{- '<eeg>' -}}"
    "{%- elif item['type'] == 'text' -%}{{- item['text'] -}}"
    "{%- else -%}{{- raise_exception('Unknown content type ' + item['type'] + '; expected text or eeg') -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def normalize_channel_name(name: str) -> str:
    """Return the vocabulary spelling of an electrode name.

    Upper-cases, strips dots and spaces ("Fc5." -> "FC5"), drops an "EEG" prefix and a common-
    reference suffix ("EEG Fp1-REF" -> "FP1", "C3-A2" -> "C3"), and maps the old 10-20 names
    T3, T4, T5, T6 to T7, T8, P7, P8. Names outside the vocabulary come back normalised too
    ("ECG" stays "ECG"); callers drop them.
    """
    key = str(name).upper().replace(".", "").strip()
    if key.startswith("EEG"):
        key = key[3:].lstrip(" -_")
    key = key.replace(" ", "")
    for suffix in REFERENCE_SUFFIXES:
        if key.endswith(suffix):
            key = key[: -len(suffix)]
            break
    return OLD_CHANNEL_NAMES.get(key, key)


def _import_mne():
    try:
        import mne
    except ImportError as error:
        raise ImportError("EEG filtering and MNE inputs need MNE-Python: pip install mne") from error
    return mne


def _import_resample_poly():
    try:
        from scipy.signal import resample_poly
    except ImportError as error:
        raise ImportError("EEG resampling needs SciPy: pip install scipy") from error
    return resample_poly


def _mv_factor(units: str) -> float:
    factor = UNIT_TO_MV.get(str(units).strip().lower())
    if factor is None:
        raise ValueError(f"Unknown EEG units {units!r}; expected one of 'V', 'mV', 'uV'.")
    return factor


def select_channels(
    channel_names: Sequence[str], channels: Sequence[str] | None = None, min_channels: int = 1
) -> tuple[list[int], list[str]]:
    """Match a recording's channel names to the model's vocabulary.

    Takes the recording's `channel_names` (any spelling `normalize_channel_name` reads) and the
    channels to keep (`channels`, default all of `EEGPT_CHANNELS`). Returns the row indices into
    the recording and the kept names, in vocabulary order. Raises ValueError when no channel,
    or fewer than `min_channels`, match, or when two rows name the same electrode; warns below 8.
    """
    wanted = EEGPT_CHANNELS if channels is None else tuple(normalize_channel_name(c) for c in channels)
    unknown = [c for c in wanted if c not in CHANNEL_INDEX]
    if unknown:
        raise ValueError(f"channels {unknown} are not in EEGPT's channel vocabulary {list(EEGPT_CHANNELS)}.")
    normalized = [normalize_channel_name(name) for name in channel_names]
    rows: dict[str, int] = {}
    for row, name in enumerate(normalized):
        if name in wanted:
            if name in rows:
                raise ValueError(
                    f"Channels {channel_names[rows[name]]!r} and {channel_names[row]!r} both name electrode {name}."
                )
            rows[name] = row
    kept = sorted(rows, key=CHANNEL_INDEX.__getitem__)
    if not kept:
        raise ValueError(
            f"None of the channels {list(channel_names)} is in EEGPT's channel vocabulary"
            + ("" if channels is None else f" among the requested channels {list(wanted)}")
            + "; expected 10-10 names such as FP1, CZ, O2."
        )
    if len(kept) < min_channels:
        raise ValueError(f"Only {len(kept)} EEG channels ({kept}) match; at least {min_channels} are required.")
    if len(kept) < MIN_AVERAGE_REFERENCE_CHANNELS:
        raise ValueError(
            f"Only {len(kept)} EEG channel ({kept}) matches EEGPT's vocabulary; the average reference needs at least "
            f"{MIN_AVERAGE_REFERENCE_CHANNELS} electrodes (with one, it subtracts the channel from itself and leaves "
            "zeros)."
        )
    if len(kept) < FEW_CHANNELS_WARNING:
        warnings.warn(
            f"Only {len(kept)} EEG channels ({kept}) match EEGPT's vocabulary; the model reads a scalp-wide "
            "montage best, and an average reference over few electrodes is dominated by each of them.",
            stacklevel=3,
        )
    return [rows[name] for name in kept], kept


def _check_finite(data: np.ndarray, names: Sequence[str]) -> None:
    """Refuse NaN or inf; `data` is (..., C, T) with the C channels called `names`."""
    finite = np.isfinite(data)
    if not finite.all():
        bad = [names[i] for i in np.flatnonzero((~finite).reshape(-1, len(names), data.shape[-1]).any(axis=(0, 2)))]
        raise ValueError(f"EEG contains NaN or inf values in channels {bad}; expected finite samples.")


def _check_sampling_rate(sampling_rate) -> None:
    if not isinstance(sampling_rate, (int, float, np.number)) or not np.isfinite(sampling_rate) or sampling_rate <= 0:
        raise ValueError(f"sampling_rate must be a positive number of Hz; got {sampling_rate!r}.")
    low, high = SAMPLING_RATE_RANGE
    if not low <= sampling_rate <= high:
        raise ValueError(
            f"sampling_rate {sampling_rate!r} Hz is outside the {low:g}-{high:g} Hz an EEG recording is sampled at; "
            "give the rate in Hz."
        )


def _resample_ratio(sampling_rate: float, target_sampling_rate: int) -> Fraction:
    """up/down with target = sampling_rate * up / down: exact when its terms are at most
    MAX_RESAMPLING_TERM, else the nearest such ratio if it is within RATE_TOLERANCE."""
    _check_sampling_rate(sampling_rate)
    exact = Fraction(target_sampling_rate) / Fraction(sampling_rate)
    ratio = exact.limit_denominator(MAX_RESAMPLING_TERM)
    if abs(ratio / exact - 1) > RATE_TOLERANCE:
        raise ValueError(
            f"{sampling_rate} Hz cannot be resampled to {target_sampling_rate} Hz by a ratio of small integers (the "
            f"nearest, {ratio.numerator}/{ratio.denominator}, gives {float(sampling_rate * ratio):.4f} Hz); resample "
            "the recording to a round rate first (e.g. MNE's raw.resample)."
        )
    return ratio


def _warn_flat(names: Sequence[str], flat: np.ndarray) -> None:
    """Warn about the channels `flat` marks (constant over the recording), by name."""
    if flat.any():
        warnings.warn(
            f"EEG channels {[names[i] for i in np.flatnonzero(flat)]} are flat (constant over the whole recording): "
            "a disconnected or dead electrode. They still enter the average reference; mark them bad (MNE: "
            "raw.info['bads']) or drop them to leave them out.",
            stacklevel=3,
        )


def _check_amplitude(eeg: np.ndarray, units: str) -> None:
    """Refuse preprocessed EEG (..., C, T) in mV whose amplitude no scalp recording has, naming the
    unit the numbers most likely are in."""
    # A few thousand samples per channel give the median absolute deviation to well within 10 %.
    sample = eeg[..., :: max(1, eeg.shape[-1] // 4096)]
    sample = np.moveaxis(sample, -2, 0).reshape(sample.shape[-2], -1)
    spread = float(np.median(np.median(np.abs(sample - np.median(sample, axis=1, keepdims=True)), axis=1)))
    low, high = PLAUSIBLE_SPREAD_MV
    if low <= spread <= high:
        return
    if spread == 0:
        raise ValueError("The EEG is flat: every channel is constant after preprocessing; expected a recording.")
    given = _mv_factor(units)
    candidates = {unit: spread / given * _mv_factor(unit) for unit in ("V", "mV", "uV")}
    likely = min(candidates, key=lambda unit: abs(np.log10(candidates[unit] / TYPICAL_SPREAD_MV)))
    hint = (
        f"the numbers look like {likely}: pass units={likely!r}"
        if low <= candidates[likely] <= high
        else "check the recording's units and scaling"
    )
    raise ValueError(
        f"The EEG's amplitude (median absolute deviation {spread:.3g} mV, read as units={units!r}) is outside "
        f"what scalp EEG shows ({low:g} to {high:g} mV); {hint}."
    )


def _resample(data: np.ndarray, ratio: Fraction) -> np.ndarray:
    """Anti-aliased polyphase resampling of the last axis by `ratio` (float64 out)."""
    if ratio == 1:
        return np.array(data, dtype=np.float64)
    resample_poly = _import_resample_poly()
    # Extending the signal by its linear trend, not by zeros, keeps a DC offset or a drift
    # from ringing at the edges (each epoch is resampled on its own).
    out = resample_poly(data, ratio.numerator, ratio.denominator, axis=-1, padtype="line")
    return out.astype(np.float64, copy=False)


@lru_cache(maxsize=16)
def _fir_kernel(sampling_rate: float, l_freq: float | None, h_freq: float | None, notch_freqs: tuple[float, ...]):
    """One zero-phase FIR: MNE's default band-pass convolved with MNE's default FIR notches.

    Applying their convolution once equals `mne.filter.filter_data` followed by
    `mne.filter.notch_filter` (both linear and time-invariant) at half the cost.
    """
    mne = _import_mne()
    kernels = []
    if l_freq is not None or h_freq is not None:
        kernels.append(mne.filter.create_filter(None, sampling_rate, l_freq, h_freq, verbose="error"))
    if notch_freqs:
        # MNE's notch_filter defaults: width f/200 and a 1 Hz transition band split over both sides.
        freqs = np.asarray(notch_freqs)
        half = freqs / 400 + 0.5
        kernels.append(
            mne.filter.create_filter(
                None, sampling_rate, freqs + half, freqs - half, l_trans_bandwidth=0.5, h_trans_bandwidth=0.5,
                verbose="error",
            )
        )  # fmt: skip
    kernel = kernels[0]
    for other in kernels[1:]:
        kernel = np.convolve(kernel, other)
    return kernel


def _filter_kernel(
    sampling_rate: float, source_rate: float, l_freq: float | None, h_freq: float | None, notch_freq: float | None
) -> np.ndarray | None:
    """The band-pass + notch kernel `_filter` applies at `sampling_rate` (None: nothing to filter)."""
    nyquist = min(sampling_rate, source_rate) / 2
    if h_freq is not None and h_freq >= nyquist:
        warnings.warn(
            f"The low-pass edge {h_freq} Hz is at or above the Nyquist frequency {nyquist} Hz of a {source_rate} Hz "
            "recording; only the high-pass applies and the upper edge is the Nyquist frequency.",
            stacklevel=5,
        )
        h_freq = None
    notch_freqs = ()
    if notch_freq is not None:
        upper = min(nyquist, h_freq if h_freq is not None else nyquist)
        notch_freqs = tuple(float(f) for f in np.arange(notch_freq, upper, notch_freq))
    if l_freq is None and h_freq is None and not notch_freqs:
        return None
    return _fir_kernel(float(sampling_rate), l_freq, h_freq, notch_freqs)


def preprocess_continuous(
    data,
    sampling_rate: float,
    channel_names: Sequence[str],
    *,
    units: str = "uV",
    l_freq: float | None = 0.1,
    h_freq: float | None = 70.0,
    notch_freq: float | None = 50.0,
    apply_filters: bool = True,
    channels: Sequence[str] | None = None,
    target_sampling_rate: int = TARGET_SAMPLING_RATE,
    min_channels: int = 1,
) -> tuple[np.ndarray, list[str]]:
    """Bring one continuous EEG recording to the model's contract.

    Args:
        data: (C, T) array, one row per entry of `channel_names`, in `units`.
        sampling_rate: the recording's rate in Hz.
        channel_names: C electrode names; `normalize_channel_name` reads their spelling, and
            rows outside the vocabulary (EOG, ECG, mastoids, ...) are dropped.
        units: "V", "mV" or "uV".
        l_freq, h_freq: band-pass edges in Hz (None leaves that side open); below 140 Hz
            sampling the upper edge is the Nyquist frequency, with a warning.
        notch_freq: line frequency in Hz (50 or 60), notched with its harmonics inside the
            band; None for no notch.
        apply_filters: False skips band-pass and notch (data filtered already).
        channels: the electrodes to keep (default all of `EEGPT_CHANNELS`); the output
            follows vocabulary order whatever their order here.
        target_sampling_rate: output rate in Hz (256 for EEGPT).
        min_channels: fewer matching channels than this is an error.

    Returns:
        `(eeg, names)`: float32 (C_kept, T') in mV at `target_sampling_rate`, anti-alias
        resampled (T' = T * target / sampling_rate, rounded up), band-passed, with the mean
        over the kept channels subtracted at each sample; and the C_kept channel names.
    """
    data = np.asarray(data)
    if data.ndim != 2:
        raise ValueError(f"A continuous recording must be a (channels, samples) array; got shape {data.shape}.")
    _check_sampling_rate(sampling_rate)
    if channel_names is None:
        raise ValueError("channel_names are required: one electrode name per row of the EEG array.")
    if len(channel_names) != data.shape[0]:
        raise ValueError(
            f"{len(channel_names)} channel names for an array with {data.shape[0]} channel rows; expected one name per row."
        )
    _, names = select_channels(channel_names, channels, min_channels)
    # The chunked path with the array as the recording (one piece up to its `chunk_seconds`), read
    # in short stretches: there is no I/O to amortise, and each stretch is copied once.
    pieces = list(
        preprocess_continuous_chunks(
            lambda start, stop: data[:, start:stop], data.shape[1], sampling_rate, channel_names, units=units,
            l_freq=l_freq, h_freq=h_freq, notch_freq=notch_freq, apply_filters=apply_filters, channels=channels,
            target_sampling_rate=target_sampling_rate, min_channels=min_channels, read_seconds=10.0,
        )
    )  # fmt: skip
    return (pieces[0] if len(pieces) == 1 else np.concatenate(pieces, axis=1)), names


def preprocess_continuous_chunks(
    read,
    n_times: int,
    sampling_rate: float,
    channel_names: Sequence[str],
    *,
    units: str = "uV",
    l_freq: float | None = 0.1,
    h_freq: float | None = 70.0,
    notch_freq: float | None = 50.0,
    apply_filters: bool = True,
    channels: Sequence[str] | None = None,
    target_sampling_rate: int = TARGET_SAMPLING_RATE,
    min_channels: int = 1,
    chunk_seconds: float = 300.0,
    read_seconds: float = 60.0,
) -> Iterator[np.ndarray]:
    """The preprocessing of `preprocess_continuous`, reading and returning a recording piece by piece.

    Args:
        read: `read(start, stop)` returns the (C, stop - start) samples `start..stop` of the
            recording's rows named by `channel_names`, in `units` (e.g. an `mne.io.Raw`'s
            `get_data(picks, start=start, stop=stop)`).
        n_times: the recording's length in samples.
        chunk_seconds: output per piece; read_seconds: input per read.
        The rest: as `preprocess_continuous`, which is this function over an in-memory array.

    Yields float32 (C_kept, t) pieces, in time order, whose concatenation is the recording
    preprocessed as a whole: the resampler gets each piece with its neighbouring input and the
    recording's own line extension at both ends (as `resample_poly(..., padtype="line")` extends
    a whole recording), and the band-pass gets the resampled signal half its kernel beyond each
    piece, with MNE's limited odd reflection at the recording's ends. Each input sample is read
    once, and memory is bounded by `chunk_seconds` and `read_seconds`, not by the recording's
    length.
    """
    _check_sampling_rate(sampling_rate)
    n_times = int(n_times)
    factor = _mv_factor(units)
    rows, names = select_channels(channel_names, channels, min_channels)
    ratio = _resample_ratio(sampling_rate, target_sampling_rate)
    up, down = ratio.numerator, ratio.denominator
    n_out = -(-n_times * up // down)
    kernel = _filter_kernel(target_sampling_rate, sampling_rate, l_freq, h_freq, notch_freq) if apply_filters else None
    half = 0 if kernel is None else (len(kernel) - 1) // 2
    if kernel is not None and len(kernel) % 2 == 0:
        raise ValueError("the band-pass kernel must have odd length (zero phase)")
    if kernel is not None and len(kernel) > n_out:
        warnings.warn(
            f"The filter ({len(kernel) / target_sampling_rate:.1f} s, set by the {l_freq} Hz high-pass) is longer "
            f"than the recording ({n_out / target_sampling_rate:.1f} s); its edges are likely distorted. Filter the "
            "whole recording.",
            RuntimeWarning,
            stacklevel=4,
        )
    step = max(up, int(round(chunk_seconds * target_sampling_rate / up)) * up)
    resample_poly = _import_resample_poly() if ratio != 1 else None
    # Input margin a resampled stretch reads on each side (a multiple of `down`, so the
    # stretch starts on the output grid).
    margin = down * -(-(10 * max(up, down) // up + 2) // down) if ratio != 1 else 0
    ends = np.concatenate([read(0, 1), read(n_times - 1, n_times)], axis=1)[rows].astype(np.float64)
    slope = (ends[:, 1:] - ends[:, :1]) / max(n_times - 1, 1)
    read_step = max(up, int(round(read_seconds * target_sampling_rate / up)) * up)
    # Each channel's lowest and highest sample so far, to tell flat channels at the end.
    extremes = [np.full(len(rows), np.inf), np.full(len(rows), -np.inf)]

    def resampled(first: int, last: int) -> np.ndarray:
        """Resampled output samples first..last (float64, mV)."""
        q_first, q_last = first // up, -(-last // up)
        start, stop = q_first * down - margin, q_last * down + margin
        low, high = max(start, 0), min(stop, n_times)
        data = np.asarray(read(low, high), dtype=np.float64)
        if low == start and high == stop:
            block = data[rows]
        else:
            block = np.empty((len(rows), stop - start))
            block[:, low - start : high - start] = data[rows]
        del data
        _check_finite(block[:, low - start : high - start], names)
        extremes[0] = np.minimum(extremes[0], block[:, low - start : high - start].min(axis=1))
        extremes[1] = np.maximum(extremes[1], block[:, low - start : high - start].max(axis=1))
        if ratio == 1:
            return block[:, first - start : last - start] * factor
        # Beyond the recording's ends: the line through its first and last sample, as
        # `resample_poly(..., padtype="line")` extends the whole recording.
        if start < 0:
            block[:, : -start] = ends[:, :1] + slope * np.arange(start, 0)
        if stop > n_times:
            block[:, n_times - start :] = ends[:, :1] + slope * np.arange(n_times, stop)
        out = resample_poly(block, up, down, axis=-1, padtype="constant")
        skip = margin * up // down - q_first * up
        out = out[:, skip + first : skip + last]
        out *= factor
        return out

    buffer, buffer_start = np.empty((len(rows), 0)), 0
    position = 0
    while position < n_out:
        stop = min(n_out, position + step)
        need_start, need_stop = max(0, position - half), min(n_out, stop + half)
        # The filter context this piece shares with the last one is kept, the rest resampled.
        kept = buffer[:, need_start - buffer_start :]
        buffer, buffer_start = np.empty((len(rows), need_stop - need_start)), need_start
        buffer[:, : kept.shape[1]] = kept
        end = need_start + kept.shape[1]
        del kept
        while end < need_stop:
            piece = resampled(end, min(need_stop, end + read_step))
            buffer[:, end - need_start : end - need_start + piece.shape[1]] = piece
            end += piece.shape[1]
        eeg = np.empty((len(rows), stop - position), dtype=np.float32)
        if kernel is None:
            eeg[:] = buffer[:, position - need_start : stop - need_start]
        else:
            from scipy.signal import oaconvolve

            left, right = half - (position - need_start), stop + half - need_stop
            # MNE's padding at the recording's ends: odd reflection of at most the samples there are, zeros beyond.
            reflected = min(left, n_out - 1), min(right, n_out - 1)
            zeros = left - reflected[0], right - reflected[1]
            # A few rows at a time bound the FFT buffers.
            for first in range(0, len(rows), 8):
                segment = buffer[first : first + 8]
                if left or right:
                    segment = np.pad(segment, [(0, 0), reflected], mode="reflect", reflect_type="odd")
                if any(zeros):
                    segment = np.pad(segment, [(0, 0), zeros])
                eeg[first : first + 8] = oaconvolve(segment, kernel[None], mode="valid", axes=-1)
        eeg -= eeg.mean(axis=0, keepdims=True, dtype=np.float64).astype(np.float32)
        _check_amplitude(eeg, units)
        yield eeg
        position = stop
    _warn_flat(names, extremes[0] == extremes[1])


def _preprocess_epochs(
    data: np.ndarray, sampling_rate: float, channel_names: Sequence[str], *, units: str, channels, min_channels: int,
    target_sampling_rate: int,
) -> tuple[np.ndarray, list[str]]:
    """(N, C, T) epochs -> float32 (N, C_kept, T') in mV, resampled and average-referenced, unfiltered."""
    if len(channel_names) != data.shape[1]:
        raise ValueError(
            f"{len(channel_names)} channel names for epochs with {data.shape[1]} channel rows; expected one name per row."
        )
    factor = _mv_factor(units)
    rows, names = select_channels(channel_names, channels, min_channels)
    eeg = data[:, rows]
    _check_finite(eeg, names)
    _warn_flat(names, (eeg.max(axis=(0, 2)) - eeg.min(axis=(0, 2))) == 0)
    eeg = _resample(eeg, _resample_ratio(sampling_rate, target_sampling_rate)) * factor
    eeg -= eeg.mean(axis=1, keepdims=True)
    _check_amplitude(eeg, units)
    return eeg.astype(np.float32), names


class E2LLMFeatureExtractor(FeatureExtractionMixin):
    """EEG feature extractor for E2LLM: recordings in, EEGPT windows out.

    Call it on one of:
    - a numpy (C, T) array, a list of them, or an (N, C, T) array of epochs, with
      `channel_names` (C names), `sampling_rate` (Hz) and `units` ("V", "mV", "uV";
      arrays default to uV, the unit EEG files usually hold);
    - an `mne.io.Raw` or `mne.Epochs` (names, rate and units, volts, come from MNE), or a list of Raws.

    Which electrodes it keeps: `channels`, in vocabulary order. A bare `E2LLMFeatureExtractor()`
    (`channels=None`) keeps every electrode of EEGPT's 62-name vocabulary the recording has,
    AF7, AF8, PO5 and PO6 included, which EEGPT's pretraining and the paper leave out. The
    processor saved with a trained E2LLM model keeps the electrodes it was trained on
    (`EEGPT_58_CHANNELS`, recorded in its `processor_config.json`), so SEED-VII's 62 channels reach
    the model as the same 58, average-referenced over those 58, as in training.

    Each recording is reduced to those channels, scaled to mV,
    resampled with an anti-aliasing polyphase filter to 256 Hz, band-passed (continuous recordings
    only, see the module docstring), average-referenced, and cut into 4 s windows:
    `windowing="consecutive"` (inference: every whole window from the start, the remainder dropped),
    `"center"` or `"random"` (training: one crop per recording or epoch; `seed` fixes the random crops).

    An `mne.io.Raw`'s windows that overlap annotations starting with "BAD" are left out (a warning
    names them), as MNE's epoching does with `reject_by_annotation`. Refused with a ValueError: a
    single electrode (the average reference would leave zeros), a rate outside
    `SAMPLING_RATE_RANGE`, and EEG whose amplitude no scalp recording has (`PLAUSIBLE_SPREAD_MV`,
    the message naming the unit the numbers look like); flat channels are warned about by name.

    Returns a `BatchFeature` with `eeg_values` (W, C, 1024) float32 in mV and `eeg_channel_ids`
    (W, C) int64 indices into `EEGPT_CHANNELS`; windows follow the recordings' order. Recordings
    with different channel counts in one call are refused (pass `channels` to pick a common set);
    equal counts with different electrodes are fine, as the ids are per window.
    """

    model_input_names = ["eeg_values", "eeg_channel_ids"]

    def __init__(
        self,
        target_sampling_rate: int = TARGET_SAMPLING_RATE,
        window_size: int = WINDOW_SECONDS * TARGET_SAMPLING_RATE,
        l_freq: float | None = 0.1,
        h_freq: float | None = 70.0,
        notch_freq: float | None = 50.0,
        apply_filters: bool = True,
        channels: list[str] | None = None,
        min_channels: int = 1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.target_sampling_rate = target_sampling_rate
        self.window_size = window_size
        self.l_freq = l_freq
        self.h_freq = h_freq
        self.notch_freq = notch_freq
        self.apply_filters = apply_filters
        self.channels = None if channels is None else [normalize_channel_name(c) for c in channels]
        self.min_channels = min_channels

    def __call__(
        self,
        eeg,
        sampling_rate: float | None = None,
        channel_names: Sequence[str] | None = None,
        units: str = "uV",
        windowing: str = "consecutive",
        seed: int | None = None,
        apply_filters: bool | None = None,
        return_tensors=None,
    ) -> BatchFeature:
        if windowing not in ("consecutive", "center", "random"):
            raise ValueError(f"windowing must be 'consecutive', 'center' or 'random'; got {windowing!r}.")
        apply_filters = self.apply_filters if apply_filters is None else apply_filters
        rng = np.random.default_rng(seed)
        values, ids = [], []
        for recording, names, bad in self._recordings(eeg, sampling_rate, channel_names, units, apply_filters):
            windows = self._windows(recording, windowing, rng, bad)
            values.append(windows)
            ids.append(np.broadcast_to(np.array([CHANNEL_INDEX[n] for n in names], np.int64), windows.shape[:2]))
        counts = {v.shape[1] for v in values}
        if len(counts) > 1:
            raise ValueError(
                f"Recordings in one batch keep different channel counts {sorted(counts)}; pass channels=[...] "
                "to keep the same electrodes in each."
            )
        data = {"eeg_values": np.concatenate(values), "eeg_channel_ids": np.concatenate(ids)}
        return BatchFeature(data=data, tensor_type=return_tensors)

    def _recordings(self, eeg, sampling_rate, channel_names, units, apply_filters):
        """Yield (eeg (C, T') or (N, C, T') in mV at 256 Hz, channel names, bad) per recording; `bad`
        is None, or for an `mne.io.Raw` its samples under `BAD_` annotations (a boolean mask at the
        Raw's own rate)."""
        options = dict(channels=self.channels, min_channels=self.min_channels,
                       target_sampling_rate=self.target_sampling_rate)  # fmt: skip
        filters = dict(l_freq=self.l_freq, h_freq=self.h_freq, notch_freq=self.notch_freq, apply_filters=apply_filters)
        for item in eeg if isinstance(eeg, (list, tuple)) else [eeg]:
            kind = _mne_kind(item)
            if kind is not None:
                if sampling_rate is not None or channel_names is not None:
                    raise ValueError(
                        f"An MNE {kind} carries its own sampling rate and channel names; do not pass "
                        "sampling_rate or channel_names with it."
                    )
                # MNE's EEG channels, bad channels excluded; MNE stores volts.
                picks = _import_mne().pick_types(item.info, eeg=True, exclude="bads")
                data = item.get_data(picks=picks)
                names = [item.ch_names[p] for p in picks]
                self._check_duration(data.shape[-1], item.info["sfreq"])
                if kind == "raw":
                    # MNE marks the samples under annotations starting with "bad" as NaN, as its
                    # epoching rejects them (`reject_by_annotation`); the filters see the whole recording.
                    bad = np.isnan(item.get_data(picks=picks[:1], reject_by_annotation="NaN")[0])
                    yield (*preprocess_continuous(data, item.info["sfreq"], names, units="V", **filters, **options),
                           bad if bad.any() else None)  # fmt: skip
                else:
                    yield (*_preprocess_epochs(data, item.info["sfreq"], names, units="V", **options), None)
                continue
            if sampling_rate is None:
                raise ValueError("sampling_rate is required for EEG arrays: the recording's rate in Hz.")
            if channel_names is None:
                raise ValueError("channel_names are required for EEG arrays: one electrode name per row.")
            data = np.asarray(item)
            if not np.issubdtype(data.dtype, np.number):
                raise ValueError(f"EEG arrays must hold numbers; got dtype {data.dtype}.")
            if data.ndim not in (2, 3):
                raise ValueError(
                    f"EEG arrays must be (channels, samples) or (epochs, channels, samples); got shape {data.shape}."
                )
            self._check_duration(data.shape[-1], sampling_rate)
            if data.ndim == 3:
                yield (*_preprocess_epochs(data, sampling_rate, channel_names, units=units, **options), None)
            else:
                yield (*preprocess_continuous(data, sampling_rate, channel_names, units=units, **filters, **options),
                       None)  # fmt: skip

    def _check_duration(self, samples: int, sampling_rate: float) -> None:
        # Checked before any work, so that a short recording fails fast and unfiltered.
        _check_sampling_rate(sampling_rate)
        seconds, window = samples / sampling_rate, self.window_size / self.target_sampling_rate
        if seconds < window:
            raise ValueError(f"EEG of {seconds:.2f} s is shorter than one window of {window:g} s.")

    def _windows(
        self, eeg: np.ndarray, windowing: str, rng: np.random.Generator, bad: np.ndarray | None = None
    ) -> np.ndarray:
        """(C, T) or (N, C, T) -> (W, C, window_size).

        `bad` (continuous EEG only): a boolean mask of the recording's samples at its own rate that
        no window may overlap. "consecutive" drops the windows that do (with a warning naming
        them); "center" takes the clean window nearest the centre, "random" one of the clean ones.
        """
        size = self.window_size
        epochs = eeg[None] if eeg.ndim == 2 else eeg
        length = epochs.shape[-1]
        if length < size:
            raise ValueError(
                f"EEG of {length / self.target_sampling_rate:.2f} s is shorter than one window of "
                f"{size / self.target_sampling_rate:g} s ({size} samples at {self.target_sampling_rate} Hz)."
            )
        if bad is not None:
            return self._clean_windows(eeg, windowing, rng, bad)
        if windowing == "consecutive":
            count = length // size
            windows = epochs[..., : count * size].reshape(*epochs.shape[:2], count, size)
            return np.ascontiguousarray(windows.transpose(0, 2, 1, 3).reshape(-1, epochs.shape[1], size))
        if windowing == "center":
            starts = np.full(len(epochs), (length - size) // 2)
        else:
            starts = rng.integers(0, length - size + 1, size=len(epochs))
        return np.stack([epoch[:, start : start + size] for epoch, start in zip(epochs, starts)])

    def _clean_windows(self, eeg: np.ndarray, windowing: str, rng: np.random.Generator, bad: np.ndarray) -> np.ndarray:
        """`_windows` of continuous (C, T) EEG with no window over a `bad` sample (see there)."""
        size, rate = self.window_size, self.target_sampling_rate
        starts = np.arange(eeg.shape[-1] - size + 1)
        if windowing == "consecutive":
            starts = starts[::size]
        # Bad samples before each sample of the recording's rate; a window spans [first, last).
        before = np.concatenate([[0], np.cumsum(bad)])
        scale = len(bad) / eeg.shape[-1]
        first = np.clip(np.floor(starts * scale).astype(np.int64), 0, len(bad))
        last = np.clip(np.ceil((starts + size) * scale).astype(np.int64), 0, len(bad))
        clean = starts[before[last] == before[first]]
        if not len(clean):
            raise ValueError(
                f"Every {size / rate:g} s window of the recording overlaps a BAD annotation; no clean EEG to read."
            )
        if windowing == "consecutive":
            dropped = sorted(set(starts.tolist()) - set(clean.tolist()))
            if dropped:
                spans = ", ".join(f"{start / rate:g}-{(start + size) / rate:g} s" for start in dropped[:10])
                warnings.warn(
                    f"Dropped {len(dropped)} of {len(starts)} windows that overlap BAD annotations ({spans}"
                    + (", ..." if len(dropped) > 10 else "") + "), as MNE's reject_by_annotation does.",
                    stacklevel=4,
                )
        elif windowing == "center":
            clean = clean[[np.argmin(np.abs(clean - (eeg.shape[-1] - size) // 2))]]
        else:
            clean = rng.choice(clean, size=1)
        return np.stack([eeg[:, start : start + size] for start in clean])


def _mne_kind(item) -> str | None:
    """'raw', 'epochs' or None, without importing MNE for plain arrays."""
    module = type(item).__module__
    if not module.startswith("mne"):
        return None
    mne = _import_mne()
    if isinstance(item, mne.io.BaseRaw):
        return "raw"
    if isinstance(item, mne.BaseEpochs):
        return "epochs"
    return None


def _read_eeg_file(path: str | os.PathLike):
    """An EEG file as MNE reads it: epochs for MNE's epochs files (`*-epo.fif`), a raw recording for
    every format `mne.io.read_raw` knows (FIF, EDF, BDF, EEGLAB, BrainVision, ...)."""
    mne = _import_mne()
    name = os.fspath(path)
    if name.endswith(("-epo.fif", "_epo.fif", "-epo.fif.gz", "_epo.fif.gz")):
        return mne.read_epochs(name, preload=True, verbose="error")
    return mne.io.read_raw(name, preload=True, verbose="error")


def _has_token(tokenizer, token: str) -> bool:
    token_id = tokenizer.convert_tokens_to_ids(token)
    return token_id is not None and (tokenizer.unk_token_id is None or token_id != tokenizer.unk_token_id)


class E2LLMProcessor(ProcessorMixin):
    """E2LLM's processor: an `E2LLMFeatureExtractor` and a Qwen3 tokenizer.

    `__call__(text, eeg, sampling_rate, channel_names, return_tensors, **kwargs)`:
    - `eeg` is raw EEG for the feature extractor (see `E2LLMFeatureExtractor`; extra keyword
      arguments such as `units`, `windowing`, `seed` go to it), or model-ready windows: a mapping
      or `BatchFeature` with `eeg_values` (W, C, 1024) and `eeg_channel_ids` (W, C) or (C,),
      passed through unchanged.
    - `text` (a string or a list) holds one `<eeg>` per window, in window order; each becomes
      `<eeg_start>` + `<eeg>` x `num_eeg_tokens` + `<eeg_end>`. A count mismatch is a ValueError.
    - the tokenizer's keyword arguments (`padding`, `truncation`, ...) go to it; any other keyword
      argument (another modality's `images=`, a misspelt name) is a TypeError.
    Returns a `BatchFeature` with `input_ids`, `attention_mask`, `eeg_values`, `eeg_channel_ids`.

    The chat template is ChatML (Qwen3's format, no thinking block); content items
    `{"type": "text", "text": ...}` and `{"type": "eeg"}` (renders `<eeg>`). An EEG item may carry
    its EEG, and `apply_chat_template(messages, tokenize=True, return_dict=True)` then returns the
    model inputs (see `apply_chat_template`); or render with `tokenize=False` and call the processor
    on the string with `eeg=`. A tokenizer without the three EEG tokens gets them added.

    The processor pads on the left, as batched generation with a decoder-only model needs: it sets
    its tokenizer's `padding_side` to "left", and saves it so (a call may pass `padding_side="right"`).

    Attributes, as transformers' processors name them for images: `eeg_token` (`<eeg>`),
    `eeg_start_token`, `eeg_end_token` and their ids `eeg_token_id`, `eeg_start_token_id`,
    `eeg_end_token_id`; `num_eeg_tokens`, the `<eeg>` tokens of one window.
    """

    eeg_token = EEG_TOKEN
    eeg_start_token = EEG_START_TOKEN
    eeg_end_token = EEG_END_TOKEN

    def __init__(self, feature_extractor=None, tokenizer=None, chat_template=None, num_eeg_tokens: int = 16, **kwargs):
        if feature_extractor is None or tokenizer is None:
            raise ValueError("E2LLMProcessor needs a feature_extractor (E2LLMFeatureExtractor) and a tokenizer.")
        if chat_template is None:
            chat_template = CHAT_TEMPLATE
        self.num_eeg_tokens = num_eeg_tokens
        missing = [t for t in (EEG_TOKEN, EEG_START_TOKEN, EEG_END_TOKEN) if not _has_token(tokenizer, t)]
        if missing:
            tokenizer.add_tokens([AddedToken(t, normalized=False, special=True) for t in missing], special_tokens=True)
        # The attribute pads; `init_kwargs` is what the tokenizer's save_pretrained writes.
        tokenizer.padding_side = tokenizer.init_kwargs["padding_side"] = "left"
        self.eeg_token_id = tokenizer.convert_tokens_to_ids(EEG_TOKEN)
        self.eeg_start_token_id = tokenizer.convert_tokens_to_ids(EEG_START_TOKEN)
        self.eeg_end_token_id = tokenizer.convert_tokens_to_ids(EEG_END_TOKEN)
        super().__init__(feature_extractor, tokenizer, chat_template=chat_template, **kwargs)

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "eeg_values", "eeg_channel_ids"]

    def __call__(
        self,
        text: str | list[str] | None = None,
        eeg=None,
        sampling_rate: float | None = None,
        channel_names: Sequence[str] | None = None,
        return_tensors=None,
        **kwargs,
    ) -> BatchFeature:
        if text is None and eeg is None:
            raise ValueError("Give text, eeg or both.")
        self._refuse_unknown(kwargs)
        eeg_kwargs = {k: kwargs.pop(k) for k in EEG_OPTIONS if k in kwargs}
        data = {}
        if eeg is not None:
            data.update(self._eeg_inputs(eeg, sampling_rate, channel_names, eeg_kwargs))
        if text is not None:
            texts = [text] if isinstance(text, str) else list(text)
            num_windows = 0 if eeg is None else len(data["eeg_values"])
            data.update(self._text_inputs(texts, num_windows, kwargs))
        return BatchFeature(data=data, tensor_type=return_tensors)

    def _refuse_unknown(self, kwargs: dict) -> None:
        """Refuses keyword arguments neither the feature extractor nor the tokenizer takes, such as
        another modality's input (`images=...`), instead of letting them pass unread. Those given as
        None are dropped: transformers' chat-template code passes `images=None` and the like."""
        parameters = inspect.signature(self.tokenizer.__call__).parameters
        known = {name for name, p in parameters.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
        unknown = [key for key in kwargs if key not in known and key not in EEG_OPTIONS]
        given = sorted(key for key in unknown if kwargs[key] is not None)
        if given:
            raise TypeError(
                f"E2LLMProcessor got unexpected keyword argument(s) {given}. It takes text, eeg, sampling_rate, "
                f"channel_names, return_tensors, the feature extractor's {list(EEG_OPTIONS)} and the tokenizer's "
                f"{sorted(known - {'self', 'text', 'return_tensors'})}."
            )
        for key in unknown:
            del kwargs[key]

    def apply_chat_template(self, conversation, chat_template=None, tokenize: bool = False, **kwargs):
        """Renders a conversation (or a list of them) with the chat template, as transformers' processors do.

        With `tokenize=True` the EEG may travel in the messages: an item `{"type": "eeg", "eeg": ...}`
        carries an array ((C, T) recording or (N, C, T) epochs, with `sampling_rate`, `channel_names` and
        `units` in the item or as keyword arguments), an `mne.io.Raw`/`mne.Epochs`, model-ready windows
        (a mapping with `eeg_values` and `eeg_channel_ids`) or a file path; `{"type": "eeg", "path": ...}`
        a file MNE reads (`*-epo.fif` as epochs, any raw format `mne.io.read_raw` knows). Each such item
        renders one `<eeg>` per window its EEG gives: one for a recording (its centre 4 s, as
        `windowing="center"`, the default here), one per epoch, W for W model-ready windows. The result,
        `return_dict=True`, holds `input_ids`, `attention_mask`, `eeg_values`, `eeg_channel_ids` in the
        items' order. The feature extractor's options (`units`, `windowing`, `seed`, `apply_filters`) and
        `sampling_rate`/`channel_names` apply to every item that does not set its own. Items without EEG
        need it as `processor_kwargs={"eeg": ...}`, as before; EEG in both places is refused.
        """
        if not tokenize:
            return super().apply_chat_template(conversation, chat_template=chat_template, **kwargs)
        batched = isinstance(conversation[0], (list, tuple))
        conversations = conversation if batched else [conversation]
        options = {key: kwargs[key] for key in ("sampling_rate", "channel_names", *EEG_OPTIONS) if key in kwargs}
        rendered, windows = [], []
        for messages in conversations:
            rendered.append([self._with_eeg_windows(message, options, windows) for message in messages])
        if windows:
            processor_kwargs = dict(kwargs.pop("processor_kwargs", None) or {})
            if processor_kwargs.get("eeg") is not None:
                raise ValueError("EEG came both in the messages and as eeg=; give it once.")
            for key in options:
                kwargs.pop(key)
            counts = {values.shape[1] for values, _ in windows}
            if len(counts) > 1:
                raise ValueError(
                    f"The EEG items of one call keep different channel counts {sorted(counts)}; give every "
                    "recording the same electrodes (channels=[...] on the feature extractor picks a common set)."
                )
            processor_kwargs["eeg"] = {
                "eeg_values": np.concatenate([values for values, _ in windows]),
                "eeg_channel_ids": np.concatenate([ids for _, ids in windows]),
            }
            kwargs["processor_kwargs"] = processor_kwargs
        return super().apply_chat_template(
            rendered if batched else rendered[0], chat_template=chat_template, tokenize=True, **kwargs
        )

    def _with_eeg_windows(self, message: dict, options: dict, windows: list) -> dict:
        """The message with each EEG-carrying item replaced by one bare `{"type": "eeg"}` per window of
        its EEG; those windows, (values (W, C, T), channel ids (W, C)), are appended to `windows`."""
        content = message.get("content")
        if not isinstance(content, list):
            return message
        items = []
        for item in content:
            if item.get("type") != "eeg" or (item.get("eeg") is None and item.get("path") is None):
                items.append(item)
                continue
            unknown = sorted(set(item) - {"type", *EEG_ITEM_KEYS})
            if unknown:
                raise ValueError(f"An EEG item holds unknown keys {unknown}; expected some of {list(EEG_ITEM_KEYS)}.")
            eeg = item.get("eeg") if item.get("eeg") is not None else item["path"]
            if isinstance(eeg, (str, os.PathLike)):
                eeg = _read_eeg_file(eeg)
            item_options = {"windowing": "center", **options}
            if _mne_kind(eeg) is not None:
                # An MNE object carries its own rate and names; the shared ones are for arrays.
                item_options = {k: v for k, v in item_options.items() if k not in ("sampling_rate", "channel_names")}
            item_options.update({key: item[key] for key in ("sampling_rate", "channel_names", "units") if key in item})
            sampling_rate = item_options.pop("sampling_rate", None)
            channel_names = item_options.pop("channel_names", None)
            ready = self._eeg_inputs(eeg, sampling_rate, channel_names, item_options)
            values = np.asarray(ready["eeg_values"], dtype=np.float32)
            ids = np.broadcast_to(np.asarray(ready["eeg_channel_ids"], dtype=np.int64), values.shape[:2])
            windows.append((values, ids))
            items += [{"type": "eeg"}] * len(values)
        return {**message, "content": items}

    def _eeg_inputs(self, eeg, sampling_rate, channel_names, eeg_kwargs) -> dict:
        if isinstance(eeg, Mapping):
            if "eeg_values" not in eeg or "eeg_channel_ids" not in eeg:
                raise ValueError(
                    f"Model-ready EEG needs 'eeg_values' and 'eeg_channel_ids'; got keys {sorted(eeg.keys())}."
                )
            values, ids = eeg["eeg_values"], eeg["eeg_channel_ids"]
            if not hasattr(values, "shape") or not hasattr(ids, "shape"):
                values, ids = np.asarray(values, dtype=np.float32), np.asarray(ids, dtype=np.int64)
            size = self.feature_extractor.window_size
            if len(values.shape) != 3 or values.shape[-1] != size:
                raise ValueError(f"eeg_values must be (windows, channels, {size}); got shape {tuple(values.shape)}.")
            if tuple(ids.shape) not in (tuple(values.shape[:2]), tuple(values.shape[1:2])):
                raise ValueError(
                    f"eeg_channel_ids must be (windows, channels) {tuple(values.shape[:2])} or (channels,); "
                    f"got shape {tuple(ids.shape)}."
                )
            return {"eeg_values": values, "eeg_channel_ids": ids}
        features = self.feature_extractor(eeg, sampling_rate=sampling_rate, channel_names=channel_names, **eeg_kwargs)
        return dict(features)

    @classmethod
    def _get_arguments_from_pretrained(cls, pretrained_model_name_or_path, processor_dict=None, **kwargs):
        # The feature extractor is this module's own class, whichever copy of the module runs (the
        # installed package or a Hub folder's remote code), so loading it needs no trust_remote_code
        # and never mixes two copies of the code.
        from transformers import AutoTokenizer

        feature_extractor = E2LLMFeatureExtractor.from_pretrained(pretrained_model_name_or_path, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(pretrained_model_name_or_path, **kwargs)
        return [feature_extractor, tokenizer]

    def expand_eeg_placeholders(self, text: str) -> str:
        """Replace each `<eeg>` with `<eeg_start>` + `<eeg>` x num_eeg_tokens + `<eeg_end>`."""
        if EEG_START_TOKEN in text or EEG_END_TOKEN in text:
            raise ValueError(
                f"Text already holds {EEG_START_TOKEN}/{EEG_END_TOKEN}; write one {EEG_TOKEN} per EEG window and "
                "the processor expands it."
            )
        return (EEG_START_TOKEN + EEG_TOKEN * self.num_eeg_tokens + EEG_END_TOKEN).join(text.split(EEG_TOKEN))

    def _text_inputs(self, texts: list[str], num_windows: int, tokenizer_kwargs: dict) -> dict:
        placeholders = sum(t.count(EEG_TOKEN) for t in texts)
        if placeholders != num_windows:
            raise ValueError(
                f"EEG placeholders and EEG windows do not match: {EEG_TOKEN} placeholders: {placeholders}, "
                f"windows: {num_windows}. Write one {EEG_TOKEN} per 4 s window."
            )
        encoded = self.tokenizer([self.expand_eeg_placeholders(t) for t in texts], **tokenizer_kwargs)
        ids = encoded["input_ids"]
        found = sum(list(row).count(self.eeg_token_id) for row in ids)
        if found != num_windows * self.num_eeg_tokens:
            raise ValueError(
                f"Tokenized text holds {found} {EEG_TOKEN} tokens; expected {num_windows * self.num_eeg_tokens} "
                f"({num_windows} windows x {self.num_eeg_tokens}). Was it truncated?"
            )
        return dict(encoded)


E2LLMFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")
E2LLMProcessor.register_for_auto_class("AutoProcessor")

__all__ = [
    "EEGPT_CHANNELS",
    "EEGPT_58_CHANNELS",
    "E2LLMFeatureExtractor",
    "E2LLMProcessor",
    "normalize_channel_name",
    "preprocess_continuous",
    "preprocess_continuous_chunks",
]
