"""Synthetic EEG in SEED-VII's layout, for the demo and the tests. The data are not real.

    e2llm synthesize --out data/synthetic --subjects 3 --clip-seconds 30
    e2llm synthesize --out data/synthetic --subjects 2 --clip-seconds 20 --raw --raw-sessions 1

writes, under ``--out``:

``EEG_preprocessed/{subject}.mat``   keys ``'1'..'80'``: float64 ``(62, T)`` in µV at 200 Hz,
                                     SEED-VII's channel order, T = 200 x clip seconds
``continuous_labels/{subject}.mat``  keys ``'1'..'80'``: the clip's intensity trace, 1 value/s
``EEG_raw/{subject}_{date}_{session}.fif``   with ``--raw``: 1000 Hz sessions (62 EEG channels
                                     plus M1 M2 ECG HEO VEO, in volts), a 5 s lead and 5 s rest
                                     after each clip, annotations "1"/"2" at clip start/end,
                                     slow drift and 50 Hz line noise the preprocessing removes
``save_info/{stem}_trigger_info.csv``   the same clip times as ``code, date time`` rows
``README.txt``                       says that all of it is synthetic and how it was made

The generative model. Each channel is a sum of five band-limited noise rhythms (delta 1-4,
theta 4-8, alpha 8-13 around the subject's own alpha peak, beta 13-30, gamma 30-45 Hz) on a
1/f background, mixed across neighbouring electrodes (volume conduction). A clip's emotion
scales the rhythms' amplitudes, following the EEG literature on emotion:

- approach/withdrawal (Davidson; Harmon-Jones): approach (happy, anger) lowers left-frontal
  alpha relative to right; withdrawal (fear, disgust, sad) does the opposite;
- arousal: beta and gamma rise everywhere and posterior alpha falls with arousal
  (fear, anger, surprise high; neutral, sad low);
- valence: lateral temporal beta and gamma rise with positive valence (Zheng and Lu, SEED);
- and one mark each: frontal theta for surprise (orienting), frontal-midline theta for
  fear, frontal delta for disgust, posterior delta and alpha for sad, posterior alpha for
  neutral.

The effect follows the clip's intensity trace second by second. Every subject has its own
channel gains, baseline band powers, alpha peak frequency, effect strength and a
subject-specific distortion of each emotion's pattern, plus eye blinks.

Beside the emotion, each scalp region of ``train.data.features.REGIONS`` has a state of its own
in every band (``STATE_SPREAD``): a log-amplitude offset that drifts linearly from one random
level at the start of a stretch to another at its end. It makes the measured features vary
within an emotion, between clips and between the 10 s segments of one clip, as the
moment-to-moment state of a real person does, so that an explanation copied from another
segment of the same emotion states features this segment does not have, and one that reads
the EEG does better (README, Measured: the same-emotion baseline of the evaluation). In the
demo's data (3 subjects, 30 s clips), the claims of the reference explanation of another segment
with the same emotion hold for 54 % (their own segment's: 100 %; 63 % without these states),
and logistic regression on the z-scored features still names the emotion of 88 % of held-out
segments.

The effects are far larger than any real EEG shows (a fully felt high-arousal emotion
multiplies beta amplitude about threefold), so that the demo's tiny EEGPT, trained from random
weights on one CPU core, learns them within minutes. Logistic regression on 10 s log band
powers separates the seven emotions almost perfectly, within subjects (99 %, 3-fold) and for an
unseen subject (99 %; 4 subjects, 20 s clips). With gains a third of these it is 68 % for an
unseen subject, but the tiny encoder then reaches only about 60 % balanced accuracy in the
demo's stage 1, against about 85 % after 15 epochs here.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import tempfile
from pathlib import Path

import numpy as np

from train.data.features import BAND_EDGES, BANDS, REGIONS
from train.data.qa import EMOTIONS
from train.data.seed_vii import (
    CLIPS_PER_SESSION,
    NUM_VIDEOS,
    PREPROCESSED_SAMPLING_RATE,
    RAW_SAMPLING_RATE,
    SEED_VII_CHANNELS,
    clip_emotion,
    video_number,
)

# Resting amplitudes in µV RMS per band, before subject variation (posterior alpha is doubled).
BAND_AMPLITUDE_UV = {"delta": 12.0, "theta": 8.0, "alpha": 10.0, "beta": 6.0, "gamma": 3.0}
BACKGROUND_UV = 6.0

# (valence, arousal, approach) of each emotion, each in -1..1.
EMOTION_AXES = {
    "happy": (0.8, 0.5, 0.7),
    "surprise": (0.3, 0.8, 0.2),
    "neutral": (0.0, -0.6, 0.0),
    "disgust": (-0.6, 0.3, -0.6),
    "fear": (-0.8, 0.8, -0.8),
    "sad": (-0.7, -0.6, -0.4),
    "anger": (-0.7, 0.9, 0.6),
}
# Log-amplitude gains per unit of each axis and for each emotion's own mark (deliberately large,
# see the module docstring).
ASYMMETRY_GAIN, AROUSAL_GAIN, VALENCE_GAIN, MARK_GAIN = 1.8, 1.5, 1.5, 1.8
# Spread (log-amplitude) of each subject's baseline band powers and of its own distortion of
# every emotion's pattern: what makes a new subject harder than a new clip.
SUBJECT_BASELINE_SPREAD, SUBJECT_PATTERN_SPREAD = 0.35, 0.3
# Spread of each clip's own deviation from its emotion's pattern (the film's particular content).
CLIP_VARIATION = 0.15
# Spread (log-amplitude) of the moment-to-moment state of each scalp region and band, independent
# of the emotion: it drifts from one random level at a stretch's start to another at its end, so
# the measured features (train/data/features.py) vary between clips and between the segments of
# one clip of the same emotion. An explanation can only state them by reading the EEG.
STATE_SPREAD = 0.45

LEAD_SECONDS, REST_SECONDS = 5, 5
EXTRA_RAW_CHANNELS = ("M1", "M2", "ECG", "HEO", "VEO")
README = """SYNTHETIC DATA - NOT REAL EEG.

This folder mimics the layout of SEED-VII so that E2LLM's pipeline can be run and tested
without the licensed dataset. Every signal in it was generated by `e2llm synthesize`
(train/data/synthesize.py, whose docstring describes the generative model) with:

    subjects: {subjects}    clip seconds: {clip_seconds}    seed: {seed}    raw sessions: {raw}

The emotion labels follow SEED-VII's clip table, but the EEG carries only the artificial
emotion signatures the generator put there. Results on these data say nothing about how
a model reads real brains.
"""


def _electrode_layout(names) -> tuple[np.ndarray, np.ndarray]:
    """Approximate scalp coordinates from 10-10 names: x left(-)/right(+), y front(0) to back."""
    rows = {
        "FP": 0, "AF": 1, "F": 2, "FT": 3, "FC": 3, "T": 4, "C": 4, "TP": 5, "CP": 5, "P": 6, "PO": 7, "O": 8, "CB": 9,
    }  # fmt: skip
    x, y = [], []
    for name in names:
        prefix = name.rstrip("Z0123456789")
        suffix = name[len(prefix) :]
        y.append(rows[prefix])
        if suffix == "Z":
            x.append(0.0)
        else:
            number = int(suffix)
            x.append(-(number + 1) / 2 if number % 2 else number / 2)
    return np.array(x), np.array(y, dtype=float)


def emotion_patterns(names=SEED_VII_CHANNELS) -> dict[str, np.ndarray]:
    """Each emotion's log-amplitude gain per channel and band, ``(len(names), 5)``."""
    x, y = _electrode_layout(names)
    frontal = y <= 2
    left, right = frontal & (x < 0), frontal & (x > 0)
    midline_front = (np.abs(x) < 0.5) & (y <= 4)
    temporal = np.isin([n.rstrip("0123456789") for n in names], ["FT", "T", "TP"])
    posterior = y >= 6
    band = {b: i for i, b in enumerate(BANDS)}
    marks = {
        "surprise": [(frontal, "theta", 1.0), (frontal, "delta", 0.5)],
        "fear": [(midline_front, "theta", 1.2)],
        "disgust": [(frontal, "delta", 1.0)],
        "sad": [(posterior, "delta", 1.0), (posterior, "alpha", 0.6)],
        "neutral": [(posterior, "alpha", 0.8)],
        "happy": [],
        "anger": [],
    }
    patterns = {}
    for emotion in EMOTIONS:
        valence, arousal, approach = EMOTION_AXES[emotion]
        gain = np.zeros((len(names), len(BANDS)))
        gain[left, band["alpha"]] -= ASYMMETRY_GAIN * approach
        gain[right, band["alpha"]] += ASYMMETRY_GAIN * approach
        gain[:, band["beta"]] += AROUSAL_GAIN * arousal
        gain[:, band["gamma"]] += AROUSAL_GAIN * arousal
        gain[posterior, band["alpha"]] -= 0.8 * AROUSAL_GAIN * arousal
        gain[temporal, band["beta"]] += VALENCE_GAIN * valence
        gain[temporal, band["gamma"]] += VALENCE_GAIN * valence
        for region, name, weight in marks[emotion]:
            gain[region, band[name]] += MARK_GAIN * weight
        patterns[emotion] = gain
    return patterns


class SubjectModel:
    """One synthetic subject: gains, rhythms and artefacts drawn from ``seed`` and ``subject``."""

    def __init__(self, subject: int, seed: int = 0, names=SEED_VII_CHANNELS):
        rng = np.random.default_rng([seed, subject])
        self.names = list(names)
        count = len(self.names)
        x, y = _electrode_layout(self.names)
        distance = np.hypot(x[:, None] - x[None, :], y[:, None] - y[None, :])
        mixing = np.exp(-((distance / 1.2) ** 2))
        self.mixing = mixing / mixing.sum(axis=1, keepdims=True)
        self.channel_gain = np.exp(rng.normal(0.0, 0.15, count))
        base = np.array([BAND_AMPLITUDE_UV[b] for b in BANDS])[None, :].repeat(count, axis=0)
        base[y >= 6, BANDS.index("alpha")] *= 2.0
        self.base = base * np.exp(rng.normal(0.0, SUBJECT_BASELINE_SPREAD, base.shape))
        self.alpha_peak = rng.uniform(9.0, 11.5)
        self.effect_scale = rng.uniform(0.7, 1.3)
        self.patterns = {
            e: p * self.effect_scale + rng.normal(0.0, SUBJECT_PATTERN_SPREAD, p.shape)
            for e, p in emotion_patterns(self.names).items()
        }
        self.blink_rate = rng.uniform(0.15, 0.4)
        self.regions = np.array([[name in members for members in REGIONS.values()] for name in self.names], dtype=np.float32)
        self.frontal = np.flatnonzero(y <= 1)
        self._rng = rng

    def _band_masks(self, freqs: np.ndarray) -> np.ndarray:
        edges = dict(BAND_EDGES)
        shift = self.alpha_peak - 10.5
        edges["alpha"] = (8.0 + shift, 13.0 + shift)
        edges["theta"] = (4.0, 8.0 + shift)
        edges["beta"] = (13.0 + shift, 30.0)
        masks = np.zeros((len(BANDS), len(freqs)))
        for i, band in enumerate(BANDS):
            low, high = edges[band]
            masks[i] = np.clip(np.minimum(freqs - low + 0.5, high - freqs + 0.5), 0.0, 1.0)
        return masks

    def clip(self, emotion: str | None, intensity: np.ndarray, seconds: float, sampling_rate: float, rng) -> np.ndarray:
        """EEG of one stretch, ``(channels, seconds * sampling_rate)`` float64 in µV (float32 precision).

        ``emotion`` None gives a resting stretch; ``intensity`` (1 value/s) scales the
        emotion's pattern over time.
        """
        from scipy import fft

        samples = int(round(seconds * sampling_rate))
        freqs = fft.rfftfreq(samples, 1.0 / sampling_rate)
        masks = self._band_masks(freqs).astype(np.float32)
        count = len(self.names)
        strength = rng.uniform(0.7, 1.2)
        clip_variation = rng.normal(0.0, CLIP_VARIATION, (count, len(BANDS)))
        seconds_axis = (np.arange(samples) + 0.5) / sampling_rate
        envelope = np.interp(seconds_axis, np.arange(len(intensity)) + 0.5, intensity).astype(np.float32)
        start, end = rng.normal(0.0, STATE_SPREAD, (2, len(REGIONS), len(BANDS))).astype(np.float32)
        ramp = np.linspace(0.0, 1.0, samples, dtype=np.float32)
        # float32 throughout: half the memory traffic, and far finer than the noise.
        signal = np.zeros((count, samples), dtype=np.float32)
        # The band masks do not overlap, so one white spectrum gives five independent rhythms.
        white = fft.rfft(rng.standard_normal((count, samples), dtype=np.float32), axis=-1)
        for i in range(len(BANDS)):
            rhythm = fft.irfft(white * masks[i], n=samples, axis=-1)
            rhythm /= rhythm.std(axis=-1, keepdims=True) + 1e-12
            state = self.regions @ (start[:, i : i + 1] + (end[:, i : i + 1] - start[:, i : i + 1]) * ramp[None, :])
            if emotion is not None:
                pattern = (self.patterns[emotion][:, i : i + 1] + clip_variation[:, i : i + 1]) * strength
                state += pattern.astype(np.float32) * envelope[None, :]
            gain = self.base[:, i : i + 1].astype(np.float32) * np.exp(state)
            signal += gain * rhythm
        pink = fft.rfft(rng.standard_normal((count, samples), dtype=np.float32), axis=-1)
        background = fft.irfft(pink / np.sqrt(np.maximum(freqs, 0.5)).astype(np.float32), n=samples, axis=-1)
        signal += BACKGROUND_UV * background / (background.std(axis=-1, keepdims=True) + 1e-12)
        signal = self.mixing.astype(np.float32) @ signal
        for onset in np.flatnonzero(rng.random(int(seconds)) < self.blink_rate):
            start = int((onset + rng.random() * 0.7) * sampling_rate)
            width = int(0.3 * sampling_rate)
            blink = 150.0 * np.hanning(width)[: max(0, min(width, samples - start))]
            signal[self.frontal, start : start + len(blink)] += blink
        return (signal * self.channel_gain[:, None]).astype(np.float64)


def intensity_trace(seconds: int, rng) -> np.ndarray:
    """A felt-intensity trace, 1 value per second in 0..1, rising into the clip and wandering."""
    steps = np.cumsum(rng.normal(0.0, 0.25, seconds))
    rise = 1.0 - np.exp(-np.arange(seconds) / max(seconds / 6, 1.0))
    level = rng.uniform(0.4, 0.9)
    return np.clip(level * rise + 0.15 * np.tanh(steps), 0.0, 1.0)


def _write_atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=path.suffix)
    os.close(handle)
    try:
        write(temporary)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def synthesize_subject_mat(out: Path, subject: int, clip_seconds: int, seed: int = 0) -> None:
    """Write ``EEG_preprocessed/{subject}.mat`` and ``continuous_labels/{subject}.mat``."""
    from scipy.io import savemat

    model = SubjectModel(subject, seed)
    rng = np.random.default_rng([seed, subject, 1])
    clips, labels = {}, {}
    for video in range(1, NUM_VIDEOS + 1):
        trace = intensity_trace(clip_seconds, rng)
        clips[str(video)] = model.clip(clip_emotion(video), trace, clip_seconds, PREPROCESSED_SAMPLING_RATE, rng)
        labels[str(video)] = trace
    _write_atomic(out / "EEG_preprocessed" / f"{subject}.mat", lambda p: savemat(p, clips))
    _write_atomic(out / "continuous_labels" / f"{subject}.mat", lambda p: savemat(p, labels))


def synthesize_subject_raw(out: Path, subject: int, session: int, clip_seconds: int, seed: int = 0) -> Path:
    """Write one 1000 Hz raw session as FIF with its annotations and trigger file; returns the FIF path."""
    import mne

    model = SubjectModel(subject, seed)
    rng = np.random.default_rng([seed, subject, 2, session])
    date = dt.date(2022, 10, 1) + dt.timedelta(days=subject)
    start = dt.datetime.combine(date, dt.time(14, 0, 0), tzinfo=dt.timezone.utc)
    stem = f"{subject}_{date:%Y%m%d}_{session}"
    from scipy.signal import resample_poly

    # The rhythms end at 45 Hz: generate them at 200 Hz and upsample, five times cheaper.
    sfreq, base_rate = RAW_SAMPLING_RATE, PREPROCESSED_SAMPLING_RATE
    pieces = [model.clip(None, np.zeros(LEAD_SECONDS), LEAD_SECONDS, base_rate, rng)]
    onsets = []
    position = LEAD_SECONDS
    for clip_index in range(CLIPS_PER_SESSION):
        emotion = clip_emotion(video_number(session, clip_index))
        pieces.append(model.clip(emotion, intensity_trace(clip_seconds, rng), clip_seconds, base_rate, rng))
        pieces.append(model.clip(None, np.zeros(REST_SECONDS), REST_SECONDS, base_rate, rng))
        onsets += [position, position + clip_seconds]
        position += clip_seconds + REST_SECONDS
    eeg = resample_poly(np.concatenate(pieces, axis=1), int(sfreq // base_rate), 1, axis=-1)
    del pieces
    samples = eeg.shape[1]
    times = np.arange(samples) / sfreq
    eeg += 40.0 * np.sin(2 * np.pi * 0.03 * times + rng.uniform(0, 2 * np.pi))
    eeg += rng.uniform(3.0, 10.0) * np.sin(2 * np.pi * 50.0 * times)
    temporal = [SEED_VII_CHANNELS.index(n) for n in ("TP7", "TP8")]
    extra = np.stack(
        [eeg[temporal[0]], eeg[temporal[1]], 300.0 * np.sin(2 * np.pi * 1.2 * times) ** 15,
         eeg[SEED_VII_CHANNELS.index("F7")] - eeg[SEED_VII_CHANNELS.index("F8")], eeg[SEED_VII_CHANNELS.index("FP1")]]
    )  # fmt: skip
    data = (np.concatenate([eeg, extra]) * 1e-6).astype(np.float32)
    del eeg, extra
    info = mne.create_info(
        list(SEED_VII_CHANNELS) + list(EXTRA_RAW_CHANNELS), sfreq, ["eeg"] * 64 + ["ecg", "eog", "eog"]
    )
    raw = mne.io.RawArray(data, info, verbose="error")
    raw.set_meas_date(start)
    raw.set_annotations(mne.Annotations(onsets, [0.0] * len(onsets), ["1", "2"] * CLIPS_PER_SESSION))
    path = out / "EEG_raw" / f"{stem}.fif"
    _write_atomic(path, lambda p: raw.save(p, fmt="single", overwrite=True, verbose="error"))

    def write_triggers(p):
        with open(p, "w", newline="") as handle:
            writer = csv.writer(handle)
            for number, onset in enumerate(onsets):
                stamp = start + dt.timedelta(seconds=onset)
                writer.writerow([1 + number % 2, f"{stamp:%Y-%m-%d %H:%M:%S.%f}"[:-3]])

    _write_atomic(out / "save_info" / f"{stem}_trigger_info.csv", write_triggers)
    return path


def synthesize(
    out: str | Path, subjects: int = 3, clip_seconds: int = 30, *, raw: bool = False,
    raw_sessions: tuple[int, ...] = (1, 2, 3, 4), seed: int = 0,
) -> Path:
    """Write a synthetic SEED-VII-layout dataset under ``out`` (see the module docstring)."""
    if subjects < 1:
        raise ValueError(f"subjects must be at least 1, got {subjects}")
    if clip_seconds < 1 or int(clip_seconds) != clip_seconds:
        raise ValueError(f"clip_seconds must be a whole number of seconds >= 1, got {clip_seconds}")
    if not set(raw_sessions) <= {1, 2, 3, 4}:
        raise ValueError(f"raw sessions must be among 1, 2, 3, 4, got {raw_sessions}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    from tqdm.auto import tqdm

    for subject in tqdm(range(1, subjects + 1), desc="synthetic subjects", unit="subject"):
        synthesize_subject_mat(out, subject, int(clip_seconds), seed)
        if raw:
            for session in raw_sessions:
                synthesize_subject_raw(out, subject, session, int(clip_seconds), seed)
    raw_text = list(raw_sessions) if raw else "none"
    text = README.format(subjects=subjects, clip_seconds=clip_seconds, seed=seed, raw=raw_text)
    (out / "README.txt").write_text(text)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="e2llm synthesize",
        description="Write SYNTHETIC EEG in SEED-VII's layout (EEG_preprocessed/*.mat, continuous_labels/*.mat, "
        "optionally EEG_raw/*.fif) with documented emotion signatures, for the demo and tests.",
    )
    parser.add_argument("--out", required=True, help="folder to write (created if needed)")
    parser.add_argument("--subjects", type=int, default=3, help="number of subjects (default 3)")
    parser.add_argument("--clip-seconds", type=int, default=30, help="length of every clip in seconds (default 30)")
    parser.add_argument("--raw", action="store_true", help="also write 1000 Hz raw sessions as FIF in EEG_raw/")
    parser.add_argument("--raw-sessions", default="1,2,3,4", help="sessions to write raw, e.g. '1' (default all)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sessions = tuple(int(s) for s in args.raw_sessions.split(",") if s.strip())
    synthesize(args.out, args.subjects, args.clip_seconds, raw=args.raw, raw_sessions=sessions, seed=args.seed)
    print(f"synthetic data written to {args.out}")
    return 0
