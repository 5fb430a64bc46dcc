"""`e2llm prepare`: preprocessing, segments, splits, resume, raw and own-recording paths."""

from __future__ import annotations

import shutil

import mne
import numpy as np
import pytest
from datasets import load_from_disk

from processing_e2llm import EEGPT_58_CHANNELS, preprocess_continuous, preprocess_continuous_chunks
from train.data import prepare as prepare_module
from train.data.prepare import PAPER_TEST_FRACTION, list_jobs, main, split_indices, write_shard
from train.data.qa import EMOTIONS
from train.data.recordings import Clip, cut_segments, filter_pad_seconds, raw_clip_eeg, raw_clips_eeg
from train.data.seed_vii import SEED_VII_CHANNELS, clip_emotion
from train.data.claims import salient_claims
from train.data.features import BANDS, FEATURE_NAMES, REGIONS, measure_features
from train.data.synthesize import emotion_patterns, synthesize, synthesize_subject_raw

QA_SIZES = ["--qa-train", "28", "--qa-stage3", "7", "--qa-test-multi", "6", "--qa-test-esr", "3"]


@pytest.fixture(scope="module")
def seed_root(tmp_path_factory):
    """Two synthetic subjects with 10 s clips: one segment per clip, 160 in all."""
    return synthesize(tmp_path_factory.mktemp("seed"), subjects=2, clip_seconds=10)


@pytest.fixture(scope="module")
def prepared(seed_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared") / "out"
    assert main(["--root", str(seed_root), "--out", str(out), "--num-workers", "2", *QA_SIZES]) == 0
    return out


def _sine_raw(freqs_amplitudes, seconds=120.0, sfreq=1000.0):
    """62 SEED-VII channels of low noise (volts); FP1 also carries the given sines."""
    times = np.arange(int(seconds * sfreq)) / sfreq
    data = np.random.default_rng(0).normal(0, 1e-7, (62, len(times)))
    for freq, amplitude in freqs_amplitudes:
        data[0] += amplitude * np.sin(2 * np.pi * freq * times)
    return mne.io.RawArray(data, mne.create_info(SEED_VII_CHANNELS, sfreq, "eeg"), verbose="error")


def _amplitude(signal, freq, sfreq=256.0):
    """Least-squares amplitude of one frequency in a signal."""
    times = np.arange(signal.shape[-1]) / sfreq
    basis = np.stack([np.sin(2 * np.pi * freq * times), np.cos(2 * np.pi * freq * times), np.ones_like(times)], 1)
    coefficients = np.linalg.lstsq(basis, signal, rcond=None)[0]
    return float(np.hypot(*coefficients[:2]))


@pytest.fixture(scope="module")
def filtered_sines():
    components = [(0.05, 100e-6), (10.0, 100e-6), (50.0, 100e-6), (90.0, 100e-6)]
    raw = _sine_raw(components)
    eeg = raw_clip_eeg(raw, Clip(30.0, 90.0, "happy", 1), "sines")
    return eeg[EEGPT_58_CHANNELS.index("FP1")] - eeg.mean(axis=0) * 0


def test_band_pass_keeps_10_hz_in_mv(filtered_sines):
    # 100 µV on one channel of 58: the average reference leaves 57/58 of it.
    assert _amplitude(filtered_sines, 10.0) == pytest.approx(0.1 * 57 / 58, rel=0.02)


def test_high_pass_attenuates_0_05_hz(filtered_sines):
    # MNE's 0.1 Hz high-pass has its -6 dB point at 0.05 Hz.
    assert _amplitude(filtered_sines, 0.05) < 0.55 * 0.1


def test_low_pass_removes_90_hz(filtered_sines):
    assert _amplitude(filtered_sines, 90.0) < 0.01 * 0.1


def test_notch_removes_50_hz(filtered_sines):
    assert _amplitude(filtered_sines, 50.0) < 0.02 * 0.1


def test_a_clip_read_with_filter_context_equals_the_whole_recording_preprocessed():
    raw = _sine_raw([(0.3, 50e-6), (7.0, 20e-6)], seconds=150.0)
    whole, _ = preprocess_continuous(raw.get_data(), 1000.0, raw.ch_names, units="V", channels=EEGPT_58_CHANNELS)
    clip = raw_clip_eeg(raw, Clip(50.0, 80.0, "sad", 1), "whole")
    assert filter_pad_seconds() >= 17
    np.testing.assert_allclose(clip, whole[:, 50 * 256 : 80 * 256], atol=1e-4 * np.abs(whole).max())


@pytest.mark.parametrize("rate, samples", [(1000.0, 250_000), (1000.0, 250_123), (200.0, 41_000), (256.0, 60_000)])
@pytest.mark.parametrize("apply_filters", [True, False])
def test_preprocessing_in_pieces_equals_the_whole_recording_at_once(rate, samples, apply_filters):
    rng = np.random.default_rng(0)
    data = rng.normal(0, 20, (62, samples)).cumsum(1) * 0.05 + rng.normal(0, 20, (62, samples)) + 300.0
    options = dict(units="uV", apply_filters=apply_filters, channels=EEGPT_58_CHANNELS)
    whole, _ = preprocess_continuous(data, rate, SEED_VII_CHANNELS, **options)
    pieces = list(
        preprocess_continuous_chunks(lambda a, b: data[:, a:b], samples, rate, SEED_VII_CHANNELS, **options,
                                     chunk_seconds=47.0, read_seconds=13.0)
    )  # fmt: skip
    assert len(pieces) > 3
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), whole, rtol=0, atol=1e-6 * np.abs(whole).max())
    # Both are the recording processed at once by scipy's resampler and MNE's band-pass and notch.
    from scipy.signal import resample_poly

    from processing_e2llm import _resample_ratio, select_channels

    rows, _ = select_channels(SEED_VII_CHANNELS, EEGPT_58_CHANNELS, 1)
    ratio = _resample_ratio(rate, 256)
    reference = resample_poly(data[rows], ratio.numerator, ratio.denominator, axis=-1, padtype="line") * 1e-3
    if apply_filters:
        reference = mne.filter.filter_data(reference, 256, 0.1, 70.0, verbose="error")
        reference = mne.filter.notch_filter(reference, 256, [50.0], verbose="error")
    reference -= reference.mean(axis=0)
    np.testing.assert_allclose(whole, reference, rtol=0, atol=1e-5 * np.abs(reference).max())


def test_clips_read_together_equal_clips_read_one_by_one():
    # Neighbouring clips share context, one clip crosses piece boundaries, one is shorter
    # than its filter, one ends the recording, and the list is not in time order.
    raw = _sine_raw([(0.3, 50e-6), (7.0, 20e-6), (50.0, 10e-6)], seconds=400.0)
    clips = [Clip(3.0, 40.5, "happy", 1), Clip(45.0, 100.0, "sad", 2), Clip(190.0, 260.3, "sad", 3),
             Clip(140.0, 150.0, "fear", 4), Clip(385.0, 400.0, "anger", 5)]  # fmt: skip
    with pytest.warns(RuntimeWarning, match="longer than the recording"):
        together = list(raw_clips_eeg(raw, clips, "together", chunk_seconds=50.0))
    assert [clip for clip, _ in together] == clips
    with pytest.warns(RuntimeWarning, match="longer than the recording"):
        one_by_one = [raw_clip_eeg(raw, clip, "one") for clip in clips]
    for (_, eeg), reference in zip(together, one_by_one):
        assert eeg.shape == reference.shape and eeg.dtype == np.float32
        # Equal up to float32 rounding; the first clip, 3 s after the recording's start, also
        # sees the resampler's edge extension drawn to a different last sample (1e-5).
        np.testing.assert_allclose(eeg, reference, rtol=0, atol=1e-5 * np.abs(reference).max())


def test_segments_are_average_referenced_58_channels_in_mv(prepared):
    segments = load_from_disk(str(prepared / "segments"))["train"].with_format("numpy")
    eeg = segments[0]["eeg"]
    assert eeg.shape == (58, 2560) and eeg.dtype == np.float32
    assert np.abs(eeg.mean(axis=0)).max() < 1e-6
    assert 0.003 < np.median(eeg.std(axis=1)) < 0.1


def test_segment_count_follows_clip_duration():
    eeg = np.zeros((58, 256 * 35))
    assert [index for index, _, _ in cut_segments(eeg)] == [0, 1, 2]
    assert list(cut_segments(np.zeros((58, 2559)))) == []


def test_segment_intensity_is_the_mean_of_its_stretch_of_the_trace():
    values = [value for _, _, value in cut_segments(np.zeros((58, 2560 * 2)), np.array([0.0, 0.2, 0.6, 1.0]))]
    assert values == pytest.approx([0.1, 0.8])


def test_prepare_writes_one_row_per_segment_with_labels_from_the_clip_table(prepared):
    segments = load_from_disk(str(prepared / "segments"))
    assert len(segments["train"]) + len(segments["test"]) == 160
    rows = segments["train"].select_columns(["id", "subject", "session", "video", "segment", "emotion", "label"])
    for row in rows:
        assert row["emotion"] == clip_emotion(row["video"]) == EMOTIONS[row["label"]]
        assert row["session"] == (row["video"] - 1) // 20 + 1
        assert row["id"] == f"s{row['subject']:02d}_v{row['video']:02d}_{row['segment']:03d}"


def test_intensity_comes_from_continuous_labels(prepared):
    intensity = load_from_disk(str(prepared / "segments"))["train"]["intensity"]
    assert all(value is not None and 0 <= value <= 1 for value in intensity)


def test_paper_split_is_stratified_by_emotion(prepared):
    segments = load_from_disk(str(prepared / "segments"))
    test = segments["test"]["emotion"]
    assert len(test) == sum(round(PAPER_TEST_FRACTION * n) for n in (24, 24, 16, 24, 24, 24, 24))
    assert set(segments["train"]["id"]).isdisjoint(segments["test"]["id"])


def _all_segments(prepared) -> tuple[dict, np.ndarray]:
    """Every segment's metadata and feature columns as arrays, and their EEG ``(n, 58, 2560)``."""
    from datasets import concatenate_datasets

    segments = load_from_disk(str(prepared / "segments"))
    everything = concatenate_datasets([segments["train"], segments["test"]]).with_format("numpy")
    columns = {name: np.asarray(everything[name]) for name in ("subject", "session", "emotion", *FEATURE_NAMES)}
    return columns, np.asarray(everything["eeg"], dtype=np.float64)


def test_feature_columns_are_the_direct_mne_computation_z_scored_within_subject_and_session(prepared):
    everything, eeg = _all_segments(prepared)
    rows = np.flatnonzero((everything["subject"] == 2) & (everything["session"] == 3))
    eeg = eeg[rows]
    occipital = [EEGPT_58_CHANNELS.index(n) for n in REGIONS["occipital"] if n in EEGPT_58_CHANNELS]
    f4, f3 = EEGPT_58_CHANNELS.index("F4"), EEGPT_58_CHANNELS.index("F3")
    direct = {"power_alpha_occipital": [], "de_beta_frontal": [], "f4_f3_alpha": []}
    frontal = [EEGPT_58_CHANNELS.index(n) for n in REGIONS["frontal"] if n in EEGPT_58_CHANNELS]
    for segment in eeg:
        raw = mne.io.RawArray(segment, mne.create_info(list(EEGPT_58_CHANNELS), 256.0, "eeg"), verbose="error")
        spectrum = raw.compute_psd(method="welch", fmin=1, fmax=45, n_fft=512, n_overlap=256, verbose="error")
        psd, freqs = spectrum.get_data(return_freqs=True)
        def band(low, high):
            return psd[:, (freqs >= low) & (freqs < high)].sum(axis=1) * (freqs[1] - freqs[0])
        alpha, beta = band(8, 13), band(13, 30)
        direct["power_alpha_occipital"].append(np.log(alpha[occipital].mean()))
        direct["de_beta_frontal"].append(np.mean(0.5 * np.log(2 * np.pi * np.e * beta[frontal])))
        direct["f4_f3_alpha"].append(np.log(alpha[f4]) - np.log(alpha[f3]))
    measured = measure_features(eeg, 256.0, EEGPT_58_CHANNELS)
    for name in ("power_alpha_occipital", "de_beta_frontal"):
        assert measured[:, FEATURE_NAMES.index(name)] == pytest.approx(direct[name], rel=1e-5)
        values = np.asarray(direct[name])
        stored = everything[name][rows]
        assert stored == pytest.approx((values - values.mean()) / values.std(), abs=1e-4)
    # The asymmetry averages seven mirror pairs; F4/F3, the classic one, moves with it.
    asymmetry = everything["asymmetry_alpha_frontal"][rows]
    assert np.corrcoef(asymmetry, direct["f4_f3_alpha"])[0, 1] > 0.5
    scores = np.stack([everything[name] for name in FEATURE_NAMES], axis=1)
    assert np.abs(scores[rows].mean(axis=0)).max() < 1e-4 and np.abs(scores[rows].std(axis=0) - 1).max() < 1e-3


def test_features_follow_the_synthetic_emotion_signatures(prepared):
    """Mean z-score per emotion against the generator's own emotion pattern, region by region."""
    everything, _ = _all_segments(prepared)
    patterns = emotion_patterns(SEED_VII_CHANNELS)
    agreement = []
    for band in ("alpha", "beta", "gamma"):
        for region, members in REGIONS.items():
            channels = [SEED_VII_CHANNELS.index(n) for n in members if n in SEED_VII_CHANNELS]
            truth = [patterns[e][channels, BANDS.index(band)].mean() for e in EMOTIONS]
            if np.std(truth) < 0.3:  # no emotion moves this band over this region much
                continue
            measured = [everything[f"power_{band}_{region}"][everything["emotion"] == e].mean() for e in EMOTIONS]
            agreement.append(np.corrcoef(truth, measured)[0, 1])
    assert len(agreement) >= 10 and np.median(agreement) > 0.8 and min(agreement) > 0.3
    approach = everything["asymmetry_alpha_frontal"][np.isin(everything["emotion"], ["happy", "anger"])].mean()
    withdrawal = everything["asymmetry_alpha_frontal"][np.isin(everything["emotion"], ["fear", "disgust"])].mean()
    assert approach > 0.5 > -0.5 > withdrawal


def test_features_vary_within_an_emotion_so_copied_claims_are_often_false(prepared):
    everything, _ = _all_segments(prepared)
    scores = [{name: float(everything[name][row]) for name in FEATURE_NAMES} for row in range(len(everything["emotion"]))]
    emotions = everything["emotion"]
    held = total = 0
    for row, own in enumerate(scores):
        donor = next(r for r in range(row + 1, row + len(scores)) if emotions[r % len(scores)] == emotions[row])
        claims = salient_claims(scores[donor % len(scores)])
        assert all(claim.holds(own) for claim in salient_claims(own))
        held, total = held + sum(claim.holds(own) for claim in claims), total + len(claims)
    assert 0.3 < held / total < 0.7


def test_qa_sets_are_written_beside_the_segments(prepared):
    qa = load_from_disk(str(prepared / "qa"))
    segments = load_from_disk(str(prepared / "segments"))
    assert {name: len(qa[name]) for name in qa} == {
        "train": 28, "stage3": 7, "test_ied": len(segments["test"]), "test_multi": 6, "test_esr": 3,
    }  # fmt: skip
    assert set(qa["train"].column_names) == {"id", "task", "messages", "segment_ids", "answer"}
    test_ids = set(segments["test"]["id"])
    assert all(set(ids) <= test_ids for ids in qa["test_multi"]["segment_ids"])


def test_cross_subject_split_keeps_each_subject_on_one_side():
    subjects = np.repeat([1, 2, 3, 4, 5], 70)
    emotions = np.tile(EMOTIONS, 50)
    train, test = split_indices(subjects, np.zeros(350), emotions, "cross-subject", 0.2, seed=0)
    assert set(subjects[train]).isdisjoint(subjects[test]) and len(set(subjects[test])) == 1
    assert len(train) + len(test) == 350


def test_cross_clip_split_keeps_each_video_on_one_side_for_every_subject():
    videos = np.tile(np.arange(1, 81), 3)
    emotions = np.array([clip_emotion(int(v)) for v in videos])
    train, test = split_indices(np.repeat([1, 2, 3], 80), videos, emotions, "cross-clip", 0.1, seed=0)
    assert set(videos[train]).isdisjoint(videos[test])
    assert set(emotions[test]) == set(EMOTIONS)
    assert len(test) == 3 * len(set(videos[test]))


def test_split_leakage_counts_the_subjects_clips_and_videos_test_shares_with_training():
    from train.data.prepare import split_leakage

    leak = split_leakage([1, 1, 2], [1, 2, 1], [1, 1, 2, 3], [1, 1, 2, 1])
    assert leak == {
        "test_subjects": 3, "subjects_shared": 2, "test_clips": 3, "clips_shared": 1, "test_videos": 2,
        "videos_shared": 2, "test_segments_in_shared_clips": 50.0,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("split", "clips_shared_everywhere"), [("paper", True), ("cross-subject", False), ("cross-clip", False)]
)
def test_only_the_papers_split_puts_neighbouring_segments_of_a_clip_on_both_sides(split, clips_shared_everywhere):
    from train.data.prepare import split_leakage

    # 4 subjects x 80 videos x 6 segments of 10 s, SEED-VII's layout.
    subjects = np.repeat([1, 2, 3, 4], 80 * 6)
    videos = np.tile(np.repeat(np.arange(1, 81), 6), 4)
    emotions = np.array([clip_emotion(int(v)) for v in videos])
    train, test = split_indices(subjects, videos, emotions, split, PAPER_TEST_FRACTION, seed=0)
    leak = split_leakage(subjects[train], videos[train], subjects[test], videos[test])
    if clips_shared_everywhere:
        assert leak["subjects_shared"] == leak["test_subjects"] == 4
        assert leak["test_segments_in_shared_clips"] > 99
    else:
        assert leak["clips_shared"] == 0 and leak["test_segments_in_shared_clips"] == 0
    assert (leak["subjects_shared"] == 0) is (split == "cross-subject")
    assert (leak["videos_shared"] == 0) is (split == "cross-clip")


def test_splits_depend_only_on_the_seed():
    emotions = np.tile(EMOTIONS, 20)
    def split(seed):
        return split_indices(np.ones(140), np.arange(140), emotions, "paper", 0.25, seed=seed)

    assert all(np.array_equal(a, b) for a, b in zip(split(1), split(1)))
    assert not np.array_equal(split(1)[1], split(2)[1])


@pytest.mark.parametrize(
    ("split", "fraction", "message"), [("by-day", 0.1, "split must be"), ("paper", 1.5, "between 0 and 1")]
)
def test_bad_split_settings_are_refused(split, fraction, message):
    with pytest.raises(ValueError, match=message):
        split_indices([1], [1], ["happy"], split, fraction)


def test_cross_subject_needs_two_subjects():
    with pytest.raises(ValueError, match="at least 2 subjects"):
        split_indices([1, 1], [1, 2], ["happy", "sad"], "cross-subject")


def test_resume_after_an_interrupted_run_gives_an_identical_dataset(seed_root, prepared, tmp_path):
    out = tmp_path / "resumed"
    jobs = list_jobs("seed-vii", str(seed_root))
    shards = out / "shards"
    # A crash: the first subject's shard finished, the second left a partial temporary folder.
    write_shard(jobs[0], str(shards))
    (shards / f".tmp-{jobs[1].key}-999").mkdir()
    (shards / f".tmp-{jobs[1].key}-999" / "data.arrow").write_bytes(b"partial")
    finished = (shards / jobs[0].key / "data.arrow").stat().st_mtime_ns
    assert main(["--root", str(seed_root), "--out", str(out), "--num-workers", "1", "--keep-shards", *QA_SIZES]) == 0
    assert (shards / jobs[0].key / "data.arrow").stat().st_mtime_ns == finished
    assert not list(shards.glob(".tmp-*"))
    for name in ("segments", "qa"):
        fresh, resumed = load_from_disk(str(prepared / name)), load_from_disk(str(out / name))
        for split in fresh:
            assert fresh[split].to_dict() == resumed[split].to_dict(), (name, split)


def test_a_finished_folder_is_not_prepared_again_and_other_settings_are_refused(seed_root, prepared, capsys):
    assert main(["--root", str(seed_root), "--out", str(prepared), *QA_SIZES]) == 0
    assert "already prepared" in capsys.readouterr().out
    with pytest.raises(ValueError, match="prepared with other settings"):
        main(["--root", str(seed_root), "--out", str(prepared), "--split", "cross-clip", *QA_SIZES])


def test_other_qa_sizes_rebuild_only_the_qa_sets(seed_root, prepared, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(prepared, out)
    segments_file = next((out / "segments" / "train").glob("*.arrow"))
    written = segments_file.stat().st_mtime_ns
    assert main(["--root", str(seed_root), "--out", str(out), "--no-cot", *QA_SIZES[:-1], "5"]) == 0
    assert segments_file.stat().st_mtime_ns == written
    qa = load_from_disk(str(out / "qa"))
    assert len(qa["test_esr"]) == 5
    assert qa["train"][0]["messages"][-1]["content"][0]["text"] == f"Answer: {qa['train'][0]['answer']}"


def test_raw_sessions_go_through_filters_and_annotations(tmp_path):
    synthesize_subject_raw(tmp_path, subject=1, session=2, clip_seconds=10)
    out = tmp_path / "out"
    args = ["--root", str(tmp_path), "--out", str(out), "--source", "raw", "--split", "cross-clip", *QA_SIZES]
    assert main(args) == 0
    segments = load_from_disk(str(out / "segments"))
    videos = sorted([*segments["train"]["video"], *segments["test"]["video"]])
    assert videos == list(range(21, 41))
    eeg = segments["train"].with_format("numpy")[0]["eeg"]
    assert np.abs(eeg.mean(axis=1)).max() < 0.005  # the 40 µV drift is gone


def _own_recording(path, descriptions, durations, sfreq=250.0, channels=SEED_VII_CHANNELS):
    rng = np.random.default_rng(3)
    data = rng.normal(0, 20e-6, (len(channels), int(100 * sfreq)))
    raw = mne.io.RawArray(data, mne.create_info(list(channels), sfreq, "eeg"), verbose="error")
    onsets = [5.0 + 30.0 * i for i in range(len(descriptions))]
    raw.set_annotations(mne.Annotations(onsets, durations, descriptions))
    raw.save(path, overwrite=True, verbose="error")


def test_own_recordings_map_annotations_to_emotions(tmp_path):
    root = tmp_path / "bids"
    for subject in (1, 2):
        folder = root / f"sub-0{subject}" / "eeg"
        folder.mkdir(parents=True)
        labels, durations = ["T1", "T2", "T3", "boundary"], [22.0, 21.0, 20.0, 0]
        _own_recording(folder / f"sub-0{subject}_task-film_eeg.fif", labels, durations)
    out = tmp_path / "out"
    argv = ["--dataset", "recordings", "--root", str(root), "--out", str(out), "--label-map", "T1=happy,T2=sad,T3=fear",
            "--split", "cross-subject", "--num-workers", "1", *QA_SIZES]  # fmt: skip
    assert main(argv) == 0
    segments = load_from_disk(str(out / "segments"))
    assert set(segments["train"]["subject"]).isdisjoint(segments["test"]["subject"])
    rows = segments["train"].select_columns(["emotion", "video", "segment"]).to_list()
    assert sorted((r["emotion"], r["video"], r["segment"]) for r in rows) == [
        ("fear", 3, 0), ("fear", 3, 1), ("happy", 1, 0), ("happy", 1, 1), ("sad", 2, 0), ("sad", 2, 1)
    ]


def test_own_recordings_take_clips_from_an_events_table(tmp_path):
    _own_recording(tmp_path / "p7.fif", [], [])
    (tmp_path / "p7_events.tsv").write_text("onset\tduration\ttrial_type\tvideo\n5\t25\tanger\t4\n40\t12\tneutral\t9\n")
    (job,) = list_jobs("recordings", str(tmp_path))
    rows = list(prepare_module.segment_rows(job))
    assert [(r["emotion"], r["video"], r["segment"], r["subject"]) for r in rows] == [
        ("anger", 4, 0, 7), ("anger", 4, 1, 7), ("neutral", 9, 0, 7)
    ]


def test_own_recordings_without_the_58_electrodes_are_refused_naming_them(tmp_path):
    channels = [c for c in SEED_VII_CHANNELS if c not in ("OZ", "FPZ")]
    _own_recording(tmp_path / "r1.fif", ["happy"], [20.0], channels=channels)
    (job,) = list_jobs("recordings", str(tmp_path))
    with pytest.raises(ValueError, match=r"r1\.fif lacks EEG channels \['FPZ', 'OZ'\]"):
        list(prepare_module.segment_rows(job))


def test_own_recordings_with_unmapped_labels_say_which_labels_exist(tmp_path):
    _own_recording(tmp_path / "r1.fif", ["S 1", "S 2"], [20.0, 20.0])
    (job,) = list_jobs("recordings", str(tmp_path))
    with pytest.raises(ValueError, match=r"labels found: \['S 1', 'S 2'\]"):
        list(prepare_module.segment_rows(job))


def test_bad_label_map_is_refused(tmp_path):
    with pytest.raises(ValueError, match="names 'joyful'"):
        main(["--dataset", "recordings", "--root", str(tmp_path), "--out", str(tmp_path / "o"),
              "--label-map", "1=joyful"])  # fmt: skip
