"""E2LLMFeatureExtractor and preprocess_continuous: EEG recordings -> EEGPT windows."""

from __future__ import annotations

import warnings

import mne
import numpy as np
import pytest
import torch

from processing_e2llm import (
    EEGPT_58_CHANNELS,
    EEGPT_CHANNELS,
    E2LLMFeatureExtractor,
    normalize_channel_name,
    preprocess_continuous,
)
from train.data.seed_vii import SEED_VII_CHANNELS

# Most recordings here are seconds long; the 0.1 Hz high-pass is longer (a tested warning).
pytestmark = pytest.mark.filterwarnings("ignore:The filter .* is longer than the recording")



def recording(channels: int = 8, seconds: float = 10.0, rate: float = 1000.0, seed: int = 0) -> np.ndarray:
    """Random EEG-like data in uV, (channels, samples)."""
    return np.random.default_rng(seed).standard_normal((channels, int(seconds * rate))) * 20.0


def amplitude_at(signal: np.ndarray, rate: float, frequency: float) -> float:
    """Peak amplitude of `frequency` in `signal` (a whole number of cycles long)."""
    spectrum = np.abs(np.fft.rfft(signal)) * 2 / len(signal)
    return float(spectrum[int(round(frequency * len(signal) / rate))])


def sine(rate: float, seconds: float, frequency: float, amplitude: float) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return amplitude * np.sin(2 * np.pi * frequency * t)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Fc5.", "FC5"),
        ("fp1", "FP1"),
        ("Cz..", "CZ"),
        ("T3", "T7"),
        ("T4", "T8"),
        ("T5", "P7"),
        ("t6", "P8"),
        ("EEG Fp1-REF", "FP1"),
        ("EEG T3-LE", "T7"),
        ("O2-A1", "O2"),
        ("Fp1-F7", "FP1-F7"),
        ("ECG", "ECG"),
    ],
)
def test_normalize_channel_name(name, expected):
    assert normalize_channel_name(name) == expected


def test_channel_vocabularies():
    assert len(EEGPT_CHANNELS) == 62 and EEGPT_CHANNELS[0] == "FP1" and EEGPT_CHANNELS[-1] == "O2"
    assert EEGPT_CHANNELS.index("T7") == 25 and EEGPT_CHANNELS.index("CZ") == 29
    assert len(EEGPT_58_CHANNELS) == 58
    assert set(EEGPT_CHANNELS) - set(EEGPT_58_CHANNELS) == {"AF7", "AF8", "PO5", "PO6"}
    assert set(EEGPT_58_CHANNELS) == set(SEED_VII_CHANNELS) - {"PO5", "PO6", "CB1", "CB2"}


def test_preprocess_continuous_shapes_units_and_rate():
    data = recording(62, seconds=10.0)
    eeg, names = preprocess_continuous(data, 1000, SEED_VII_CHANNELS, channels=EEGPT_58_CHANNELS)
    assert eeg.dtype == np.float32 and eeg.shape == (58, 2560)
    assert names == list(EEGPT_58_CHANNELS)
    # 20 uV noise -> about 0.02 mV after the 0.1-70 Hz band keeps ~14 % of the 500 Hz band.
    assert 0.002 < eeg.std() < 0.02


def test_ten_hertz_sine_keeps_frequency_and_amplitude_at_256_hz():
    data = np.zeros((8, 20000))
    data[3] = sine(1000, 20, 10.0, 50.0)  # 50 uV on one channel
    names = ["FP1", "FP2", "F3", "CZ", "C3", "C4", "O1", "O2"]
    eeg, kept = preprocess_continuous(data, 1000, names)
    cz = eeg[kept.index("CZ")]
    assert len(cz) == 5120
    middle = cz[1024:4096]  # 12 s, 120 cycles, away from the filter edges
    spectrum = np.abs(np.fft.rfft(middle))
    assert np.argmax(spectrum) * 256 / len(middle) == pytest.approx(10.0)
    # The average reference removes 1/8 of the only active channel.
    assert amplitude_at(middle, 256, 10.0) == pytest.approx(0.050 * 7 / 8, rel=0.01)


def test_average_reference_makes_each_channel_mean_zero():
    eeg, _ = preprocess_continuous(recording(8) + 100.0, 1000, list(EEGPT_58_CHANNELS[:8]))
    np.testing.assert_allclose(eeg.mean(axis=0), 0.0, atol=1e-6)


@pytest.mark.parametrize(("units", "scale"), [("uV", 1.0), ("µV", 1.0), ("mV", 1e-3), ("V", 1e-6)])
def test_units_convert_to_millivolts(units, scale):
    data = recording(8, seconds=4.0, rate=256)
    names = ["F3", "F4", "C3", "C4", "P3", "P4", "O1", "O2"]
    eeg, _ = preprocess_continuous(data * scale, 256, names, units=units, apply_filters=False)
    expected = (data - data.mean(axis=0)) * 1e-3
    np.testing.assert_allclose(eeg, expected, rtol=1e-5, atol=1e-8)


def test_band_pass_removes_line_noise_and_high_frequencies():
    names = ["F3", "F4", "C3", "C4", "P3", "P4", "O1", "O2"]
    data = np.zeros((8, 20000))
    data[0] = sine(1000, 20, 50.0, 40.0) + sine(1000, 20, 100.0, 40.0) + sine(1000, 20, 10.0, 40.0)
    eeg, _ = preprocess_continuous(data, 1000, names)
    middle = eeg[0, 1024:4096]
    assert amplitude_at(middle, 256, 50.0) < 0.01 * 0.035
    assert amplitude_at(middle, 256, 100.0) < 0.01 * 0.035
    assert amplitude_at(middle, 256, 10.0) == pytest.approx(0.035, rel=0.01)


def test_sixty_hertz_notch_is_configurable():
    names = ["F3", "F4", "C3", "C4", "P3", "P4", "O1", "O2"]
    data = np.zeros((8, 20000))
    data[0] = sine(1000, 20, 60.0, 40.0)
    notched, _ = preprocess_continuous(data, 1000, names, notch_freq=60.0)
    kept, _ = preprocess_continuous(data, 1000, names, notch_freq=50.0)
    assert amplitude_at(notched[0, 1024:4096], 256, 60.0) < 0.01 * 0.035
    assert amplitude_at(kept[0, 1024:4096], 256, 60.0) > 0.9 * 0.035


def test_low_sampling_rate_warns_and_keeps_the_high_pass():
    names = ["F3", "F4", "C3", "C4", "P3", "P4", "O1", "O2"]
    data = recording(8, seconds=10, rate=128) + 500.0
    with pytest.warns(UserWarning, match="Nyquist"):
        eeg, _ = preprocess_continuous(data, 128, names)
    assert eeg.shape == (8, 2560)


def test_combined_filter_equals_mne_band_pass_then_notch():
    names = list(EEGPT_58_CHANNELS[:8])
    data = np.cumsum(recording(8, 60.0, rate=256), axis=1) + 30 * np.sin(2 * np.pi * 50 * np.arange(60 * 256) / 256)
    eeg, _ = preprocess_continuous(data, 256, names)
    reference = mne.filter.filter_data(data * 1e-3, 256, 0.1, 70.0, verbose="error")
    reference = mne.filter.notch_filter(reference, 256, [50.0], verbose="error")
    reference -= reference.mean(axis=0)
    np.testing.assert_allclose(eeg, reference, rtol=0, atol=1e-6 * np.abs(reference).max())


def test_short_filtered_recordings_warn_about_edge_distortion():
    with pytest.warns(RuntimeWarning, match="longer than the recording"):
        preprocess_continuous(recording(8, 10.0), 1000, list(EEGPT_58_CHANNELS[:8]))


def test_channels_follow_vocabulary_order_whatever_the_input_order():
    names = ["O2", "CZ", "FP1", "T3", "PZ", "F4", "C3", "OZ"]
    data = recording(8, seconds=4, rate=256)
    eeg, kept = preprocess_continuous(data, 256, names, apply_filters=False)
    assert kept == ["FP1", "F4", "T7", "C3", "CZ", "PZ", "OZ", "O2"]
    order = [names.index(n) for n in ["FP1", "F4", "T3", "C3", "CZ", "PZ", "OZ", "O2"]]
    reordered, _ = preprocess_continuous(data[order], 256, [names[i] for i in order], apply_filters=False)
    np.testing.assert_array_equal(eeg, reordered)


def test_feature_extractor_returns_consecutive_windows():
    fe = E2LLMFeatureExtractor()
    data = recording(62, seconds=13.0)
    out = fe(data, sampling_rate=1000, channel_names=SEED_VII_CHANNELS, return_tensors="pt")
    assert out["eeg_values"].shape == (3, 60, 1024) and out["eeg_values"].dtype == torch.float32
    assert out["eeg_channel_ids"].shape == (3, 60) and out["eeg_channel_ids"].dtype == torch.int64
    expected_ids = [EEGPT_CHANNELS.index(n) for n in EEGPT_CHANNELS if n in SEED_VII_CHANNELS]
    assert out["eeg_channel_ids"][0].tolist() == expected_ids
    continuous, _ = preprocess_continuous(data, 1000, SEED_VII_CHANNELS)
    np.testing.assert_array_equal(out["eeg_values"][1].numpy(), continuous[:, 1024:2048])


def test_feature_extractor_drops_channels_outside_the_vocabulary():
    names = ["FP1", "FP2", "C3", "CZ", "C4", "PZ", "O1", "O2", "M1", "M2", "ECG", "HEO", "VEO", "CB1"]
    out = E2LLMFeatureExtractor()(recording(len(names), 5.0), sampling_rate=1000, channel_names=names)
    assert [EEGPT_CHANNELS[i] for i in out["eeg_channel_ids"][0]] == names[:8]


def test_old_and_dotted_names_map_to_vocabulary_ids():
    names = ["Fp1.", "T3", "t4.", "T5", "T6", "Cz.", "Oz", "Fc5."]
    out = E2LLMFeatureExtractor()(recording(8, 5.0), sampling_rate=1000, channel_names=names)
    got = [EEGPT_CHANNELS[i] for i in out["eeg_channel_ids"][0]]
    assert got == ["FP1", "FC5", "T7", "CZ", "T8", "P7", "P8", "OZ"]


def test_channels_setting_selects_the_58_electrodes():
    fe = E2LLMFeatureExtractor(channels=list(EEGPT_58_CHANNELS))
    out = fe(recording(62, 5.0), sampling_rate=1000, channel_names=SEED_VII_CHANNELS)
    assert out["eeg_channel_ids"][0].tolist() == [EEGPT_CHANNELS.index(n) for n in EEGPT_58_CHANNELS]


def test_center_and_random_crops():
    fe = E2LLMFeatureExtractor(apply_filters=False)
    names = list(EEGPT_58_CHANNELS[:8])
    data = recording(8, seconds=10.0, rate=256)
    continuous, _ = preprocess_continuous(data, 256, names, apply_filters=False)
    center = fe(data, sampling_rate=256, channel_names=names, windowing="center")["eeg_values"]
    np.testing.assert_array_equal(center[0], continuous[:, 768:1792])
    first = fe(data, sampling_rate=256, channel_names=names, windowing="random", seed=3)["eeg_values"]
    again = fe(data, sampling_rate=256, channel_names=names, windowing="random", seed=3)["eeg_values"]
    np.testing.assert_array_equal(first, again)
    starts = {
        int(np.flatnonzero((continuous[0] == w[0, 0]))[0])
        for w in (fe(data, sampling_rate=256, channel_names=names, windowing="random", seed=s)["eeg_values"][0]
                  for s in range(6))
    }  # fmt: skip
    assert len(starts) > 1 and all(0 <= s <= 2560 - 1024 for s in starts)


def test_list_of_recordings_concatenates_windows_in_order():
    fe = E2LLMFeatureExtractor()
    names = list(EEGPT_58_CHANNELS[:8])
    a, b = recording(8, 8.5, seed=1), recording(8, 4.2, seed=2)
    both = fe([a, b], sampling_rate=1000, channel_names=names)["eeg_values"]
    assert both.shape == (3, 8, 1024)
    np.testing.assert_array_equal(both[2], fe(b, sampling_rate=1000, channel_names=names)["eeg_values"][0])


def raw_with_extras(data_uv: np.ndarray, names: list[str], rate: float) -> mne.io.RawArray:
    extra = np.random.default_rng(9).standard_normal((2, data_uv.shape[1])) * 1e-4
    info = mne.create_info(names + ["ECG", "HEOG"], rate, ch_types=["eeg"] * len(names) + ["ecg", "eog"])
    return mne.io.RawArray(np.concatenate([data_uv * 1e-6, extra]), info, verbose="error")


def test_mne_raw_and_the_same_array_give_the_same_windows():
    names = ["Fp1", "Fp2", "C3", "Cz", "C4", "P3", "P4", "O1", "O2"]
    data = recording(9, 9.0, rate=500)
    raw = raw_with_extras(data, names, 500)
    fe = E2LLMFeatureExtractor()
    from_raw = fe(raw, return_tensors="pt")
    from_array = fe(data, sampling_rate=500, channel_names=names, units="uV", return_tensors="pt")
    assert from_raw["eeg_values"].shape == (2, 9, 1024)
    torch.testing.assert_close(from_raw["eeg_values"], from_array["eeg_values"], rtol=1e-5, atol=1e-7)
    assert torch.equal(from_raw["eeg_channel_ids"], from_array["eeg_channel_ids"])


def test_mne_epochs_match_epoched_array_without_filtering():
    names = ["Fp1", "Fp2", "C3", "Cz", "C4", "P3", "P4", "O1", "O2"]
    data = recording(9, 30.0, rate=500)
    raw = raw_with_extras(data, names, 500)
    epochs = mne.make_fixed_length_epochs(raw, duration=5.0, preload=True, verbose="error")
    fe = E2LLMFeatureExtractor()
    out = fe(epochs)
    assert out["eeg_values"].shape == (6, 9, 1024)
    array_epochs = epochs.get_data(picks="eeg") * 1e6
    same = fe(array_epochs, sampling_rate=500, channel_names=names)
    np.testing.assert_allclose(out["eeg_values"], same["eeg_values"], rtol=1e-5, atol=1e-7)
    # Epochs are resampled and re-referenced, never filtered: the first epoch's DC survives.
    offset = np.zeros_like(array_epochs)
    offset[:, 0] = 100.0
    shifted = fe(array_epochs + offset, sampling_rate=500, channel_names=names)["eeg_values"]
    np.testing.assert_allclose(shifted[:, 0] - same["eeg_values"][:, 0], 0.1 * 8 / 9, atol=1e-4)


def test_same_channel_count_with_different_electrodes_share_a_batch():
    fe = E2LLMFeatureExtractor()
    out = fe(
        [recording(8, 4.5), recording(8, 4.5)],
        sampling_rate=1000,
        channel_names=list(EEGPT_58_CHANNELS[:8]),
    )
    assert out["eeg_values"].shape == (2, 8, 1024)
    raw_a = raw_with_extras(recording(8, 4.5), list(EEGPT_58_CHANNELS[:8]), 1000)
    raw_b = raw_with_extras(recording(8, 4.5), list(EEGPT_58_CHANNELS[10:18]), 1000)
    ids = fe([raw_a, raw_b])["eeg_channel_ids"]
    assert ids[0].tolist() != ids[1].tolist()
    assert [EEGPT_CHANNELS[i] for i in ids[1]] == list(EEGPT_58_CHANNELS[10:18])


def test_mne_raw_bad_and_non_eeg_channels_are_left_out():
    names = ["Fp1", "Fp2", "C3", "Cz", "C4", "P3", "P4", "O1", "O2"]
    raw = raw_with_extras(recording(9, 5.0), names, 1000)
    raw.info["bads"] = ["Cz"]
    ids = E2LLMFeatureExtractor()(raw)["eeg_channel_ids"][0]
    assert [EEGPT_CHANNELS[i] for i in ids] == ["FP1", "FP2", "C3", "C4", "P3", "P4", "O1", "O2"]


# Refusals: each a ValueError naming the problem.


def test_refuses_different_channel_counts_in_one_batch():
    raw_a = raw_with_extras(recording(8, 4.5), list(EEGPT_58_CHANNELS[:8]), 1000)
    raw_b = raw_with_extras(recording(9, 4.5), list(EEGPT_58_CHANNELS[:9]), 1000)
    with pytest.raises(ValueError, match=r"different channel counts \[8, 9\]"):
        E2LLMFeatureExtractor()([raw_a, raw_b])


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_refuses_nan_and_inf(bad):
    data = recording(8, 5.0)
    data[2, 100] = bad
    with pytest.raises(ValueError, match="NaN or inf"):
        E2LLMFeatureExtractor()(data, sampling_rate=1000, channel_names=list(EEGPT_58_CHANNELS[:8]))


def test_refuses_recordings_without_vocabulary_channels_and_names_them():
    with pytest.raises(ValueError, match=r"None of the channels \['ECG', 'EMG', 'ACC_X'\]"):
        E2LLMFeatureExtractor()(recording(3, 5.0), sampling_rate=1000, channel_names=["ECG", "EMG", "ACC_X"])


def test_refuses_fewer_channels_than_the_minimum():
    fe = E2LLMFeatureExtractor(min_channels=16)
    with pytest.raises(ValueError, match="Only 8 EEG channels .* at least 16"):
        fe(recording(8, 5.0), sampling_rate=1000, channel_names=list(EEGPT_58_CHANNELS[:8]))


def test_warns_below_eight_channels_by_default():
    with pytest.warns(UserWarning, match="Only 3 EEG channels"):
        out = E2LLMFeatureExtractor()(recording(3, 5.0), sampling_rate=1000, channel_names=["C3", "CZ", "C4"])
    assert out["eeg_values"].shape == (1, 3, 1024)


def test_no_warning_from_eight_channels():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        E2LLMFeatureExtractor()(recording(8, 60.0), sampling_rate=1000, channel_names=list(EEGPT_58_CHANNELS[:8]))


def test_refuses_recordings_shorter_than_one_window():
    with pytest.raises(ValueError, match=r"3.90 s is shorter than one window of 4 s"):
        E2LLMFeatureExtractor()(recording(8, 3.9), sampling_rate=1000, channel_names=list(EEGPT_58_CHANNELS[:8]))


def test_refuses_arrays_without_sampling_rate():
    with pytest.raises(ValueError, match="sampling_rate is required"):
        E2LLMFeatureExtractor()(recording(8, 5.0), channel_names=list(EEGPT_58_CHANNELS[:8]))


def test_refuses_non_positive_sampling_rate():
    with pytest.raises(ValueError, match="sampling_rate must be a positive number of Hz; got 0"):
        E2LLMFeatureExtractor()(recording(8, 5.0), sampling_rate=0, channel_names=list(EEGPT_58_CHANNELS[:8]))


def test_refuses_sampling_rate_beside_an_mne_raw():
    raw = raw_with_extras(recording(8, 5.0), list(EEGPT_58_CHANNELS[:8]), 1000)
    with pytest.raises(ValueError, match="carries its own sampling rate"):
        E2LLMFeatureExtractor()(raw, sampling_rate=1000)


def test_refuses_one_dimensional_arrays():
    with pytest.raises(ValueError, match=r"got shape \(5000,\)"):
        E2LLMFeatureExtractor()(np.zeros(5000), sampling_rate=1000, channel_names=["CZ"])


def test_refuses_arrays_without_channel_names():
    with pytest.raises(ValueError, match="channel_names are required"):
        E2LLMFeatureExtractor()(recording(8, 5.0), sampling_rate=1000)


def test_refuses_channel_name_count_not_matching_the_array():
    with pytest.raises(ValueError, match="7 channel names for an array with 8 channel rows"):
        E2LLMFeatureExtractor()(recording(8, 5.0), sampling_rate=1000, channel_names=list(EEGPT_58_CHANNELS[:7]))


def test_refuses_unknown_units():
    with pytest.raises(ValueError, match=r"Unknown EEG units 'nV'"):
        E2LLMFeatureExtractor()(
            recording(8, 5.0), sampling_rate=1000, channel_names=list(EEGPT_58_CHANNELS[:8]), units="nV"
        )


def test_refuses_two_rows_naming_one_electrode():
    with pytest.raises(ValueError, match="'T3' and 'T7' both name electrode T7"):
        preprocess_continuous(recording(3, 5.0), 1000, ["T3", "T7", "CZ"])


def test_refuses_unknown_windowing():
    with pytest.raises(ValueError, match="windowing must be"):
        E2LLMFeatureExtractor()(
            recording(8, 5.0), sampling_rate=1000, channel_names=list(EEGPT_58_CHANNELS[:8]), windowing="sliding"
        )
