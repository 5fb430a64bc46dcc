"""The synthetic SEED-VII-layout data: layout, labelling, emotion signatures, learnability."""

from __future__ import annotations

import csv
from functools import lru_cache

import mne
import numpy as np
import pytest
from scipy.io import loadmat
from scipy.signal import welch

from train.data.qa import EMOTIONS
from train.data.seed_vii import SEED_VII_CHANNELS, clip_emotion
from train.data.synthesize import BAND_EDGES, BANDS, SubjectModel, intensity_trace, main


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    assert main(["--out", str(root), "--subjects", "1", "--clip-seconds", "10", "--raw", "--raw-sessions", "1"]) == 0
    return root


def test_preprocessed_files_hold_80_clips_of_62_channels_at_200_hz(synthetic):
    content = loadmat(synthetic / "EEG_preprocessed" / "1.mat")
    videos = sorted(int(k) for k in content if k.isdigit())
    assert videos == list(range(1, 81))
    assert all(content[str(v)].shape == (62, 2000) and content[str(v)].dtype == np.float64 for v in videos)


def test_amplitudes_are_in_microvolts(synthetic):
    clip = loadmat(synthetic / "EEG_preprocessed" / "1.mat", variable_names=["5"])["5"]
    spread = clip.std(axis=1)
    assert 5 < np.median(spread) < 100


def test_continuous_labels_give_one_intensity_per_second_in_0_1(synthetic):
    labels = loadmat(synthetic / "continuous_labels" / "1.mat")
    trace = labels["7"].ravel()
    assert trace.shape == (10,) and 0 <= trace.min() and trace.max() <= 1


def test_readme_says_the_data_are_synthetic(synthetic):
    assert (synthetic / "README.txt").read_text().startswith("SYNTHETIC DATA - NOT REAL EEG.")


def test_raw_session_is_1000_hz_with_seed_vii_channels_and_40_triggers(synthetic):
    (path,) = (synthetic / "EEG_raw").glob("*.fif")
    assert path.stem == "1_20221002_1"
    raw = mne.io.read_raw_fif(path, verbose="error")
    assert raw.info["sfreq"] == 1000
    assert raw.ch_names[:62] == SEED_VII_CHANNELS and raw.ch_names[62:] == ["M1", "M2", "ECG", "HEO", "VEO"]
    assert len(raw.annotations) == 40
    assert np.allclose(np.diff(raw.annotations.onset)[::2], 10.0)


def test_trigger_file_matches_the_annotations(synthetic):
    (path,) = (synthetic / "EEG_raw").glob("*.fif")
    raw = mne.io.read_raw_fif(path, verbose="error")
    with open(synthetic / "save_info" / f"{path.stem}_trigger_info.csv") as handle:
        rows = list(csv.reader(handle))
    assert [int(r[0]) for r in rows] == [1, 2] * 20
    assert rows[0][1] == "2022-10-02 14:00:05.000"
    assert raw.annotations.onset[0] == pytest.approx(5.0)


def test_raw_sessions_carry_line_noise_and_drift_for_the_filters_to_remove(synthetic):
    (path,) = (synthetic / "EEG_raw").glob("*.fif")
    raw = mne.io.read_raw_fif(path, verbose="error")
    data = raw.get_data(picks=["CZ"], start=0, stop=100_000)[0]
    freqs, power = welch(data, 1000, nperseg=20_000)
    line = power[np.argmin(np.abs(freqs - 50))]
    neighbours = np.median(power[(freqs > 45) & (freqs < 49)])
    assert line > 100 * neighbours
    assert power[(freqs > 0) & (freqs < 0.06)].max() > power[(freqs > 8) & (freqs < 13)].max()


def test_clip_labels_follow_the_seed_vii_table():
    assert [clip_emotion(v) for v in (1, 2, 3, 4, 5, 6)] == ["happy", "neutral", "disgust", "sad", "anger", "anger"]


def test_same_seed_same_data_other_subject_other_data():
    first = SubjectModel(1, seed=0).clip("fear", np.full(10, 0.8), 10, 200.0, np.random.default_rng(5))
    again = SubjectModel(1, seed=0).clip("fear", np.full(10, 0.8), 10, 200.0, np.random.default_rng(5))
    other = SubjectModel(2, seed=0).clip("fear", np.full(10, 0.8), 10, 200.0, np.random.default_rng(5))
    assert np.array_equal(first, again) and not np.allclose(first, other)


def test_intensity_trace_stays_in_0_1_and_is_deterministic():
    trace = intensity_trace(60, np.random.default_rng(1))
    assert trace.shape == (60,) and trace.min() >= 0 and trace.max() <= 1
    assert np.array_equal(trace, intensity_trace(60, np.random.default_rng(1)))


def _band_power(clip: np.ndarray, band: str) -> np.ndarray:
    clip = clip - clip.mean(axis=0)
    freqs, power = welch(clip, 200, nperseg=400)
    low, high = BAND_EDGES[band]
    return np.log(power[:, (freqs >= low) & (freqs < high)].mean(axis=1))


@lru_cache(maxsize=None)
def _clips(emotion: str, subjects=(1, 2), count: int = 3) -> list[np.ndarray]:
    clips = []
    for subject in subjects:
        model, rng = SubjectModel(subject), np.random.default_rng(subject)
        clips += [model.clip(emotion, np.full(10, 0.9), 10, 200.0, rng) for _ in range(count)]
    return clips


def test_approach_emotions_lower_left_frontal_alpha_relative_to_right():
    left, right = SEED_VII_CHANNELS.index("F3"), SEED_VII_CHANNELS.index("F4")

    def asymmetry(emotion):
        return np.mean([np.diff(_band_power(c, "alpha")[[left, right]])[0] for c in _clips(emotion)])

    assert asymmetry("happy") > asymmetry("neutral") > asymmetry("fear")


def test_arousal_raises_beta_and_gamma():
    def fast_power(emotion):
        return np.mean([(_band_power(c, "beta") + _band_power(c, "gamma")).mean() for c in _clips(emotion)])

    assert fast_power("anger") > fast_power("neutral") and fast_power("fear") > fast_power("sad")


def test_emotions_are_learnable_from_band_powers_within_subjects():
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features, labels = [], []
    model, rng = SubjectModel(4), np.random.default_rng(0)
    for label, emotion in enumerate(EMOTIONS):
        for _ in range(6):
            clip = model.clip(emotion, intensity_trace(10, rng), 10, 200.0, rng)
            features.append(np.concatenate([_band_power(clip, band) for band in BANDS]))
            labels.append(label)
    classifier = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    accuracy = cross_val_score(classifier, np.array(features), np.array(labels), cv=3).mean()
    assert accuracy > 3 / 7


@pytest.mark.parametrize(
    ("argv", "message"), [(["--subjects", "0"], "subjects"), (["--clip-seconds", "0"], "clip_seconds")]
)
def test_bad_sizes_are_refused(tmp_path, argv, message):
    with pytest.raises(ValueError, match=message):
        main(["--out", str(tmp_path), *argv])
