"""Measured EEG features per segment: what a grounded explanation may claim about an EEG.

Computed by ``e2llm prepare`` in the same pass that cuts the segments, stored as columns of
``prepared/segments``, and public here for any recording (:func:`recording_features`), so a
user can compute what the model should see in their own EEG.

Spectra: MNE's Welch estimate (:func:`mne.time_frequency.psd_array_welch`, 2 s Hamming
windows overlapping by half, 0.5 Hz resolution) of each channel of a segment, as the segment
arrives (mV, average reference, 256 Hz in ``e2llm prepare``).

Bands (Hz, lower edge included, upper excluded): delta 1-4, theta 4-8, alpha 8-13,
beta 13-30, gamma 30-45 (SEED's gamma runs to 50 Hz; 45 keeps clear of the 50 Hz notch).

Regions (10-10 names; a recording without some of them leaves that region's features NaN):

=================  ========================================================================
``frontal``        FP1 FPZ FP2 AF3 AF4 AF7 AF8 F7 F5 F3 F1 FZ F2 F4 F6 F8
``central``        FC5 FC3 FC1 FCZ FC2 FC4 FC6 C5 C3 C1 CZ C2 C4 C6 CP5 CP3 CP1 CPZ CP2 CP4 CP6
``left_temporal``  FT7 T7 TP7
``right_temporal`` FT8 T8 TP8
``parietal``       P7 P5 P3 P1 PZ P2 P4 P6 P8
``occipital``      PO7 PO5 PO3 POZ PO4 PO6 PO8 O1 OZ O2
=================  ========================================================================

Features (61 columns, :data:`FEATURE_NAMES`):

- ``power_{band}_{region}``: log of the band power (the PSD integrated over the band), averaged
  over the region's electrodes;
- ``de_{band}_{region}``: differential entropy, SEED's standard feature: for a band-limited
  Gaussian signal of variance s, 0.5 ln(2 pi e s), per electrode with s its band power, then
  averaged over the region;
- ``asymmetry_alpha_frontal``: frontal alpha asymmetry, ln(right) - ln(left) alpha power averaged
  over the mirror pairs FP2/FP1, AF4/AF3, AF8/AF7, F2/F1, F4/F3, F6/F5, F8/F7 (Davidson): positive
  when alpha is higher on the right, i.e. the left frontal cortex is the more active
  (approach), negative for withdrawal.

Every feature is then a z-score against a baseline of the same person: in ``e2llm prepare``
all segments of the same subject and session (:func:`zscore`), in :func:`recording_features`
the recording itself. A feature is constant over its baseline, or the baseline has a single
segment: its z-score is 0. The z-scores are what the chain of thought states and what
``e2llm evaluate`` checks its claims against (:mod:`train.data.claims`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BANDS = ("delta", "theta", "alpha", "beta", "gamma")
BAND_EDGES = {
    "delta": (1.0, 4.0), "theta": (4.0, 8.0), "alpha": (8.0, 13.0), "beta": (13.0, 30.0), "gamma": (30.0, 45.0),
}  # fmt: skip
REGIONS = {
    "frontal": ("FP1", "FPZ", "FP2", "AF3", "AF4", "AF7", "AF8", "F7", "F5", "F3", "F1", "FZ", "F2", "F4", "F6", "F8"),
    "central": ("FC5", "FC3", "FC1", "FCZ", "FC2", "FC4", "FC6", "C5", "C3", "C1", "CZ", "C2", "C4", "C6",
                "CP5", "CP3", "CP1", "CPZ", "CP2", "CP4", "CP6"),
    "left_temporal": ("FT7", "T7", "TP7"),
    "right_temporal": ("FT8", "T8", "TP8"),
    "parietal": ("P7", "P5", "P3", "P1", "PZ", "P2", "P4", "P6", "P8"),
    "occipital": ("PO7", "PO5", "PO3", "POZ", "PO4", "PO6", "PO8", "O1", "OZ", "O2"),
}  # fmt: skip
FRONTAL_PAIRS = (("FP2", "FP1"), ("AF4", "AF3"), ("AF8", "AF7"), ("F2", "F1"), ("F4", "F3"), ("F6", "F5"), ("F8", "F7"))
ASYMMETRY = "asymmetry_alpha_frontal"
POWER_FEATURES = tuple(f"power_{band}_{region}" for band in BANDS for region in REGIONS)
DE_FEATURES = tuple(f"de_{band}_{region}" for band in BANDS for region in REGIONS)
FEATURE_NAMES = (*POWER_FEATURES, *DE_FEATURES, ASYMMETRY)
WELCH_SECONDS = 2.0
# The Welch windows' length in seconds sets the frequency resolution (0.5 Hz), fine enough
# for the 1 Hz-wide edges of delta; power below it is floored so an empty band stays finite.
POWER_FLOOR = 1e-20


def _rows(channel_names: Sequence[str]) -> dict[str, int]:
    from processing_e2llm import normalize_channel_name

    rows = {}
    for row, name in enumerate(channel_names):
        rows.setdefault(normalize_channel_name(name), row)
    return rows


def band_powers(segments: np.ndarray, sampling_rate: float) -> np.ndarray:
    """Band power per segment, channel and band: ``(n, C, 5)`` in the input's unit squared.

    ``segments`` is ``(n, C, T)`` (or ``(C, T)``, one segment) at ``sampling_rate``; each
    segment needs at least :data:`WELCH_SECONDS` of samples.
    """
    from mne.time_frequency import psd_array_welch

    segments = np.asarray(segments)
    if segments.ndim == 2:
        segments = segments[None]
    if segments.ndim != 3:
        raise ValueError(f"segments must be (n, channels, samples) or (channels, samples), got shape {segments.shape}")
    n_fft = int(round(WELCH_SECONDS * sampling_rate))
    if segments.shape[-1] < n_fft:
        raise ValueError(
            f"segments of {segments.shape[-1]} samples at {sampling_rate} Hz are shorter than the {WELCH_SECONDS} s "
            "the spectra need"
        )
    if not np.isfinite(segments).all():
        raise ValueError("segments hold NaN or infinite values; expected finite EEG")
    low, high = BAND_EDGES[BANDS[0]][0], BAND_EDGES[BANDS[-1]][1]
    psd, freqs = psd_array_welch(segments, sampling_rate, fmin=low, fmax=high, n_fft=n_fft, n_overlap=n_fft // 2,
                                 verbose="error")  # fmt: skip
    step = freqs[1] - freqs[0]
    masks = np.stack([(freqs >= BAND_EDGES[band][0]) & (freqs < BAND_EDGES[band][1]) for band in BANDS], axis=1)
    return psd @ masks.astype(psd.dtype) * step


def measure_features(segments: np.ndarray, sampling_rate: float, channel_names: Sequence[str]) -> np.ndarray:
    """The raw (not yet z-scored) features of each segment: ``(n, len(FEATURE_NAMES))`` float64.

    ``segments`` ``(n, C, T)`` or ``(C, T)``, channels named by ``channel_names`` (10-10 names,
    matched as the processor matches them). Columns follow :data:`FEATURE_NAMES`; a region with
    none of its electrodes present gives NaN.
    """
    segments = np.asarray(segments)
    count = segments.shape[-2]
    if len(channel_names) != count:
        raise ValueError(f"{len(channel_names)} channel names for segments of {count} channels")
    rows = _rows(channel_names)
    if not any(name in rows for region in REGIONS.values() for name in region):
        raise ValueError(f"none of the channels {list(channel_names)[:8]}... lies in a scalp region; expected 10-10 names")
    power = np.maximum(band_powers(segments, sampling_rate), POWER_FLOOR)  # (n, C, 5)
    log_power = np.log(power)
    columns = {}
    for region, names in REGIONS.items():
        members = [rows[name] for name in names if name in rows]
        for index, band in enumerate(BANDS):
            if members:
                columns[f"power_{band}_{region}"] = np.log(power[:, members, index].mean(axis=1))
                columns[f"de_{band}_{region}"] = 0.5 * (np.log(2 * np.pi * np.e) + log_power[:, members, index].mean(axis=1))
            else:
                columns[f"power_{band}_{region}"] = columns[f"de_{band}_{region}"] = np.full(len(power), np.nan)
    pairs = [(rows[right], rows[left]) for right, left in FRONTAL_PAIRS if right in rows and left in rows]
    alpha = BANDS.index("alpha")
    if pairs:
        right, left = (list(side) for side in zip(*pairs))
        columns[ASYMMETRY] = (log_power[:, right, alpha] - log_power[:, left, alpha]).mean(axis=1)
    else:
        columns[ASYMMETRY] = np.full(len(power), np.nan)
    return np.stack([columns[name] for name in FEATURE_NAMES], axis=1)


def zscore(values: np.ndarray, groups: Sequence) -> np.ndarray:
    """``values`` ``(n, F)`` as z-scores within each group (``groups``: one key per row).

    Mean and standard deviation (ddof 0) of each group's rows; a constant column or a group of
    one row gives 0. NaN stays NaN.
    """
    values = np.asarray(values, dtype=np.float64)
    keys = np.asarray([str(g) for g in groups])
    if len(keys) != len(values):
        raise ValueError(f"{len(keys)} group keys for {len(values)} rows")
    scores = np.zeros_like(values)
    for key in np.unique(keys):
        rows = keys == key
        block = values[rows]
        mean, spread = block.mean(axis=0), block.std(axis=0)
        safe = np.where(spread > 1e-12, spread, 1.0)
        scores[rows] = np.where(spread > 1e-12, (block - mean) / safe, 0.0)
        scores[rows] = np.where(np.isnan(block), np.nan, scores[rows])
    return scores


def recording_features(eeg, sampling_rate: float | None = None, channel_names: Sequence[str] | None = None,
                       segment_seconds: float = 10.0) -> dict[str, np.ndarray]:  # fmt: skip
    """The features of each ``segment_seconds`` stretch of a recording, z-scored against the recording.

    ``eeg`` is an ``mne.io.Raw`` (names and rate from MNE; EEG channels only) or an array
    ``(C, T)`` with ``sampling_rate`` and ``channel_names``, or already cut segments
    ``(n, C, T)``. Give it preprocessed EEG (band-passed, average reference) as the model
    reads it. Returns ``{feature name: (n,) z-scores}`` for the ``n`` whole segments, in
    :data:`FEATURE_NAMES` order; with a single segment every z-score is 0.
    """
    if hasattr(eeg, "get_data") and hasattr(eeg, "info"):
        picks = eeg.copy().pick("eeg")
        channel_names, sampling_rate, eeg = picks.ch_names, picks.info["sfreq"], picks.get_data()
    if sampling_rate is None or channel_names is None:
        raise ValueError("an array needs sampling_rate and channel_names; an mne.io.Raw carries both")
    eeg = np.asarray(eeg, dtype=np.float64)
    if eeg.ndim == 2:
        length = int(round(segment_seconds * sampling_rate))
        count = eeg.shape[-1] // length
        if count == 0:
            raise ValueError(f"the recording holds {eeg.shape[-1] / sampling_rate:.1f} s; a segment needs {segment_seconds} s")
        eeg = eeg[:, : count * length].reshape(eeg.shape[0], count, length).transpose(1, 0, 2)
    values = measure_features(eeg, sampling_rate, channel_names)
    scores = zscore(values, np.zeros(len(values)))
    return {name: scores[:, column] for column, name in enumerate(FEATURE_NAMES)}
