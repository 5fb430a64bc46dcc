"""SEED-VII: the clip table, both readers, and each refusal."""

from __future__ import annotations

import datetime as dt
import zipfile
from collections import Counter
from xml.sax.saxutils import escape

import mne
import numpy as np
import pytest
from scipy.io import savemat

from train.data import seed_vii
from train.data.seed_vii import (
    SEED_VII_CHANNELS,
    check_amplitudes,
    check_stimuli_order,
    clip_bounds_from_annotations,
    clip_bounds_from_trigger_csv,
    clip_emotion,
    find_recordings,
    read_continuous_labels,
    read_preprocessed_clips,
    read_raw_recording,
    read_xlsx_cells,
    session_clip_bounds,
    verify_stimuli_order,
)

SESSIONS = {
    1: "Happy Neutral Disgust Sad Anger Anger Sad Disgust Neutral Happy",
    2: "Anger Sad Fear Neutral Surprise Surprise Neutral Fear Sad Anger",
    3: "Happy Surprise Disgust Fear Anger Anger Fear Disgust Surprise Happy",
    4: "Disgust Sad Fear Surprise Happy Happy Surprise Fear Sad Disgust",
}


def _write_mat(path, samples=400, channels=62, videos=range(1, 81)):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    savemat(path, {str(v): rng.normal(0, 20, (channels, samples)) for v in videos})


def _session_raw(clip_seconds=4.0, gap=2.0, n_triggers=40, scale=1e-6, sfreq=250.0):
    """A 62-channel RawArray (volts) with start/end annotations, as read_raw_cnt would return."""
    duration = gap + (clip_seconds + gap) * 20
    rng = np.random.default_rng(1)
    data = rng.normal(0, 20, (64, int(duration * sfreq))) * scale
    raw = mne.io.RawArray(data, mne.create_info([*SEED_VII_CHANNELS, "HEO", "VEO"], sfreq, ["eeg"] * 62 + ["eog"] * 2),
                          verbose="error")
    onsets = [gap + i * (clip_seconds + gap) + offset for i in range(20) for offset in (0.0, clip_seconds)]
    raw.set_annotations(mne.Annotations(onsets[:n_triggers], 0.0, ["1", "2"] * 20 if n_triggers == 40 else "1"))
    return raw


def test_clip_table_matches_the_published_session_patterns():
    for session, names in SESSIONS.items():
        pattern = [n.lower() for n in names.split()] * 2
        videos = range((session - 1) * 20 + 1, session * 20 + 1)
        assert [clip_emotion(v) for v in videos] == pattern


def test_each_emotion_has_12_clips_and_neutral_8():
    counts = Counter(clip_emotion(v) for v in range(1, 81))
    assert counts == {"happy": 12, "surprise": 12, "disgust": 12, "fear": 12, "sad": 12, "anger": 12, "neutral": 8}


@pytest.mark.parametrize("video", [0, 81, 2.0, True])
def test_clip_emotion_refuses_videos_outside_1_80(video):
    with pytest.raises(ValueError, match="1..80"):
        clip_emotion(video)


def test_stimuli_order_sheet_agreeing_with_the_table_passes():
    rows = [["Session", "Video", "Emotion"]] + [[1 + (v - 1) // 20, v, clip_emotion(v).title()] for v in range(1, 81)]
    check_stimuli_order(rows)


def test_stimuli_order_sheet_that_disagrees_names_the_video():
    rows = [[v, clip_emotion(v)] for v in range(1, 81)]
    rows[2][1] = "fear"
    with pytest.raises(ValueError, match="video 3 as 'fear'"):
        check_stimuli_order(rows)


def _column(index):
    letters = ""
    while index >= 0:
        letters = chr(ord("A") + index % 26) + letters
        index = index // 26 - 1
    return letters


def _write_xlsx(path, rows, inline=False):
    """A minimal workbook: strings shared (or inline), numbers as numbers, on the first sheet."""
    shared, cells_xml = [], []
    for r, row in enumerate(rows, start=1):
        cells = []
        for c, value in enumerate(row):
            ref = f"{_column(c)}{r}"
            if value is None:
                continue
            if isinstance(value, str) and inline:
                cells.append(f'<c r="{ref}" t="inlineStr"><is><t>{escape(value)}</t></is></c>')
            elif isinstance(value, str):
                shared.append(value)
                cells.append(f'<c r="{ref}" t="s"><v>{len(shared) - 1}</v></c>')
            else:
                cells.append(f'<c r="{ref}"><v>{value}</v></c>')
        cells_xml.append(f'<row r="{r}">{"".join(cells)}</row>')
    main = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
    rel = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
    package = "http://schemas.openxmlformats.org/package/2006/relationships"
    parts = {
        "[Content_Types].xml": (
            '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            '<Override PartName="/xl/workbook.xml" '
            'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
            '<Override PartName="/xl/worksheets/sheet1.xml" '
            'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
            '<Override PartName="/xl/sharedStrings.xml" '
            'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/></Types>'
        ),
        "xl/workbook.xml": (
            f'<workbook xmlns="{main}" xmlns:r="{rel}"><sheets>'
            '<sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets></workbook>'
        ),
        "xl/_rels/workbook.xml.rels": (
            f'<Relationships xmlns="{package}">'
            f'<Relationship Id="rId1" Type="{rel}/worksheet" Target="worksheets/sheet1.xml"/>'
            f'<Relationship Id="rId2" Type="{rel}/sharedStrings" Target="sharedStrings.xml"/></Relationships>'
        ),
        "xl/worksheets/sheet1.xml": f'<worksheet xmlns="{main}"><sheetData>{"".join(cells_xml)}</sheetData></worksheet>',
        "xl/sharedStrings.xml": (
            f'<sst xmlns="{main}" count="{len(shared)}" uniqueCount="{len(shared)}">'
            + "".join(f"<si><t>{escape(s)}</t></si>" for s in shared)
            + "</sst>"
        ),
    }
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in parts.items():
            archive.writestr(name, '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>' + text)
    return path


def _stimuli_rows():
    """One row per video: session, video number, emotion name, under a header row."""
    return [["Session", "Video index", "Emotion label"]] + [
        [1 + (v - 1) // 20, v, clip_emotion(v).title()] for v in range(1, 81)
    ]


def test_xlsx_reader_gives_shared_strings_and_numbers_in_place(tmp_path):
    path = _write_xlsx(tmp_path / "book.xlsx", [["a", None, 3], [None, 2.5, "b & c"]])
    assert read_xlsx_cells(path) == [["a", None, 3], [None, 2.5, "b & c"]]
    inline = _write_xlsx(tmp_path / "inline.xlsx", [["x", 1]], inline=True)
    assert read_xlsx_cells(inline) == [["x", 1]]


@pytest.mark.parametrize("inline", [False, True])
def test_stimuli_order_workbook_agreeing_with_the_table_is_checked(tmp_path, inline):
    _write_xlsx(tmp_path / "emotion_label_and_stimuli_order.xlsx", _stimuli_rows(), inline=inline)
    assert verify_stimuli_order(tmp_path) is True


def test_stimuli_order_workbook_by_session_rows_is_checked(tmp_path):
    # A row of video numbers above a row of emotion names, session by session.
    rows = []
    for session in range(1, 5):
        videos = list(range((session - 1) * 20 + 1, session * 20 + 1))
        rows += [[f"Session {session}", *videos], ["Emotion", *(clip_emotion(v).title() for v in videos)]]
    _write_xlsx(tmp_path / "emotion_label_and_stimuli_order.xlsx", rows)
    assert verify_stimuli_order(tmp_path) is True


def test_stimuli_order_workbook_that_disagrees_names_the_file_and_video(tmp_path):
    rows = _stimuli_rows()
    rows[3][2] = "Fear"  # video 3 is disgust
    _write_xlsx(tmp_path / "emotion_label_and_stimuli_order.xlsx", rows)
    with pytest.raises(ValueError, match=r"emotion_label_and_stimuli_order\.xlsx gives video 3 as 'fear'"):
        verify_stimuli_order(tmp_path)


def test_unreadable_stimuli_order_workbook_is_refused_naming_it(tmp_path):
    (tmp_path / "emotion_label_and_stimuli_order.xlsx").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"emotion_label_and_stimuli_order\.xlsx is not a readable \.xlsx"):
        verify_stimuli_order(tmp_path)
    assert verify_stimuli_order(tmp_path / "elsewhere") is False


def test_preprocessed_reader_yields_80_clips_in_video_order(tmp_path):
    _write_mat(tmp_path / "1.mat")
    clips = list(read_preprocessed_clips(tmp_path / "1.mat"))
    assert [v for v, _ in clips] == list(range(1, 81))
    assert clips[0][1].shape == (62, 400) and clips[0][1].dtype == np.float64


def test_preprocessed_reader_refuses_a_missing_video(tmp_path):
    _write_mat(tmp_path / "1.mat", videos=range(1, 80))
    with pytest.raises(ValueError, match=r"1\.mat is truncated or incomplete: videos 80 are missing"):
        list(read_preprocessed_clips(tmp_path / "1.mat"))


def test_preprocessed_reader_refuses_a_wrong_channel_count(tmp_path):
    _write_mat(tmp_path / "1.mat", channels=60)
    with pytest.raises(ValueError, match=r"video 1 has shape \(60, 400\); expected \(62, samples\)"):
        list(read_preprocessed_clips(tmp_path / "1.mat"))


def test_preprocessed_reader_refuses_a_truncated_file(tmp_path):
    _write_mat(tmp_path / "full.mat")
    content = (tmp_path / "full.mat").read_bytes()
    (tmp_path / "1.mat").write_bytes(content[: len(content) // 2])
    with pytest.raises(ValueError, match=r"1\.mat is (unreadable or truncated|truncated or incomplete)"):
        list(read_preprocessed_clips(tmp_path / "1.mat"))


def test_find_recordings_lists_subjects_in_order_and_filters(tmp_path):
    for subject in (2, 10, 1):
        _write_mat(tmp_path / "EEG_preprocessed" / f"{subject}.mat", videos=[1])
    found = find_recordings(tmp_path)
    assert [r.subject for r in found] == [1, 2, 10] and found[0].kind == "preprocessed"
    assert [r.subject for r in find_recordings(tmp_path, subjects=[10])] == [10]


def test_find_recordings_names_the_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="EEG_raw is missing"):
        find_recordings(tmp_path)
    with pytest.raises(ValueError, match="EEG_preprocessed is missing"):
        find_recordings(tmp_path, source="preprocessed")


def test_find_recordings_reads_raw_session_names(tmp_path):
    (tmp_path / "EEG_raw").mkdir()
    for name in ("3_20221009_2.cnt", "3_20221009_1.cnt", "notes.cnt"):
        (tmp_path / "EEG_raw" / name).write_bytes(b"")
    found = find_recordings(tmp_path, source="raw")
    assert [(r.subject, r.session, r.key) for r in found] == [
        (3, 1, "subject-03-session-1"), (3, 2, "subject-03-session-2"),
    ]  # fmt: skip


def test_continuous_labels_are_read_per_video(tmp_path):
    (tmp_path / "continuous_labels").mkdir()
    savemat(tmp_path / "continuous_labels" / "4.mat", {"1": np.array([[0.1, 0.5, 0.9]]), "2": np.zeros((1, 2))})
    labels = read_continuous_labels(tmp_path, 4)
    assert np.allclose(labels[1], [0.1, 0.5, 0.9]) and labels[2].shape == (2,)
    assert read_continuous_labels(tmp_path, 5) is None


def test_clip_boundaries_come_from_annotation_pairs():
    bounds = clip_bounds_from_annotations(_session_raw(), "s.cnt")
    assert len(bounds) == 20
    assert bounds[0] == pytest.approx((2.0, 6.0)) and bounds[19] == pytest.approx((116.0, 120.0))


def test_a_wrong_trigger_count_is_refused_naming_the_file():
    with pytest.raises(ValueError, match="7_20221001_2.cnt has 39 triggers; expected 40"):
        clip_bounds_from_annotations(_session_raw(n_triggers=39), "7_20221001_2.cnt")


def _write_triggers(path, start, onsets):
    lines = [f"{1 + i % 2},{(start + dt.timedelta(seconds=t)):%Y-%m-%d %H:%M:%S.%f}" for i, t in enumerate(onsets)]
    path.write_text("\n".join(lines) + "\n")


def test_trigger_file_gives_clip_times_relative_to_the_recording_start(tmp_path):
    start = dt.datetime(2022, 10, 15, 14, 25, 34)
    onsets = [10.5 + 7 * i for i in range(40)]
    _write_triggers(tmp_path / "t.csv", start, onsets)
    bounds = clip_bounds_from_trigger_csv(tmp_path / "t.csv", start.time())
    assert bounds[0] == pytest.approx((10.5, 17.5)) and bounds[-1] == pytest.approx((276.5, 283.5))


def test_known_bad_recordings_take_their_trigger_file_over_the_annotations(tmp_path):
    (tmp_path / "save_info").mkdir()
    start = dt.datetime.combine(dt.date(2022, 11, 11), seed_vii.WRONG_TRIGGER_RECORDINGS["9_20221111_3"])
    _write_triggers(tmp_path / "save_info" / "9_20221111_3_trigger_info.csv", start, [3.0 + 5 * i for i in range(40)])
    bounds = session_clip_bounds(_session_raw(), "9_20221111_3", tmp_path, "9_20221111_3.cnt")
    assert bounds[0] == pytest.approx((3.0, 8.0))
    assert session_clip_bounds(_session_raw(), "9_20221111_2", tmp_path, "x")[0] == pytest.approx((2.0, 6.0))


def test_trigger_file_with_a_wrong_row_count_is_refused(tmp_path):
    start = dt.datetime(2022, 10, 15, 14, 25, 34)
    _write_triggers(tmp_path / "t.csv", start, range(38))
    with pytest.raises(ValueError, match="t.csv has 38 triggers; expected 40"):
        clip_bounds_from_trigger_csv(tmp_path / "t.csv", start.time())


def test_amplitude_check_accepts_microvolt_eeg_in_volts():
    check_amplitudes(_session_raw(), "ok.cnt")


@pytest.mark.parametrize("scale", [1e-10, 1e-1])
def test_amplitude_check_refuses_a_wrong_sample_format(scale):
    with pytest.raises(ValueError, match="bad.cnt: .* set data_format to 'int16' or 'int32'"):
        check_amplitudes(_session_raw(scale=scale), "bad.cnt")


@pytest.mark.parametrize(("unit", "scale"), [("V", 1e-6), ("mV", 1e-3)])
def test_a_preprocessed_mat_in_the_wrong_unit_is_refused(tmp_path, unit, scale):
    path = tmp_path / "EEG_preprocessed" / "3.mat"
    path.parent.mkdir()
    savemat(path, {str(v): np.random.default_rng(v).normal(0, 20, (62, 400)) * scale for v in range(1, 81)})
    with pytest.raises(ValueError, match=r"3\.mat video 1: EEG amplitude spread .* EEG_preprocessed files hold µV"):
        next(read_preprocessed_clips(path))


def test_a_preprocessed_mat_in_microvolts_passes_the_amplitude_check(tmp_path):
    _write_mat(tmp_path / "3.mat")
    video, data = next(read_preprocessed_clips(tmp_path / "3.mat"))
    assert video == 1 and data.shape == (62, 400)


def test_raw_reader_names_a_missing_file(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        read_raw_recording(tmp_path / "1_20221001_1.cnt")


def test_raw_reader_turns_an_unreadable_cnt_into_a_clear_error(tmp_path):
    path = tmp_path / "1_20221001_1.cnt"
    path.write_bytes(b"not a neuroscan file" * 10)
    with pytest.raises(ValueError, match=r"1_20221001_1\.cnt could not be read by MNE .*'int16' or 'int32'"):
        read_raw_recording(path, data_format="int32")
