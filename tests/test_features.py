"""Measured features of any recording: band powers by region, asymmetry, z-scores against the recording."""

from __future__ import annotations

import mne
import numpy as np
import pytest

from train.data.features import FEATURE_NAMES, measure_features, recording_features, zscore

NAMES = ["FP1", "FP2", "F3", "F4", "C3", "CZ", "C4", "T7", "T8", "P3", "PZ", "P4", "O1", "OZ", "O2"]


def _recording(seconds=40, sfreq=256.0, alpha_from=20):
    """Noise with a strong 10 Hz rhythm over O1/OZ/O2 from `alpha_from` seconds on (volts)."""
    rng = np.random.default_rng(0)
    times = np.arange(int(seconds * sfreq)) / sfreq
    data = rng.normal(0, 5e-6, (len(NAMES), len(times)))
    for name in ("O1", "OZ", "O2"):
        data[NAMES.index(name)] += np.where(times >= alpha_from, 30e-6, 0.0) * np.sin(2 * np.pi * 10 * times)
    return mne.io.RawArray(data, mne.create_info(NAMES, sfreq, "eeg"), verbose="error")


def test_a_recording_is_cut_into_segments_and_scored_against_itself():
    features = recording_features(_recording())
    assert list(features) == list(FEATURE_NAMES) and all(len(v) == 4 for v in features.values())
    occipital_alpha = features["power_alpha_occipital"]
    assert (occipital_alpha[2:] > 0.9).all() and (occipital_alpha[:2] < -0.9).all()
    segments = _recording().get_data().reshape(len(NAMES), 4, 2560).transpose(1, 0, 2)
    measured = measure_features(segments, 256.0, NAMES)
    assert np.ptp(measured[:, FEATURE_NAMES.index("power_alpha_frontal")]) < 0.3  # noise only: no change
    assert np.ptp(measured[:, FEATURE_NAMES.index("power_alpha_occipital")]) > 2.0
    assert np.isnan(features["power_alpha_left_temporal"]).sum() == 0


def test_arrays_need_rate_and_names_and_the_same_values_come_out():
    raw = _recording()
    from_array = recording_features(raw.get_data(), 256.0, NAMES)
    np.testing.assert_allclose(from_array["de_alpha_occipital"], recording_features(raw)["de_alpha_occipital"])
    with pytest.raises(ValueError, match="sampling_rate and channel_names"):
        recording_features(raw.get_data())


def test_a_region_without_electrodes_is_nan_and_no_known_electrode_is_refused():
    values = measure_features(np.random.default_rng(0).normal(size=(2, 3, 1024)), 256.0, ["O1", "OZ", "O2"])
    assert np.isnan(values[:, FEATURE_NAMES.index("power_beta_frontal")]).all()
    assert np.isfinite(values[:, FEATURE_NAMES.index("power_beta_occipital")]).all()
    with pytest.raises(ValueError, match="scalp region"):
        measure_features(np.zeros((1, 2, 1024)), 256.0, ["ECG", "EOG"])
    with pytest.raises(ValueError, match="shorter than"):
        measure_features(np.zeros((1, 3, 100)), 256.0, ["O1", "OZ", "O2"])


def test_z_scores_are_per_group_and_a_constant_gives_zero():
    values = np.array([[1.0, 5.0], [3.0, 5.0], [10.0, 5.0], [20.0, 5.0]])
    scores = zscore(values, ["a", "a", "b", "b"])
    np.testing.assert_allclose(scores[:, 0], [-1, 1, -1, 1])
    np.testing.assert_allclose(scores[:, 1], 0)
