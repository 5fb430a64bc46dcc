"""Speed and peak memory of E2LLMFeatureExtractor against a straightforward MNE pipeline.

    python benchmarks/feature_extraction.py --minutes 5 --repeats 3

Both turn the same synthetic 62-channel 1000 Hz recording (SEED-VII's montage, in uV) into
4 s windows at 256 Hz in mV, average-referenced, after a 0.1-70 Hz band-pass and a 50 Hz
notch. The baseline does it the way an MNE tutorial would: `RawArray`, `raw.filter`,
`raw.notch_filter`, `raw.resample`, `set_eeg_reference("average")`, then a loop that reads
one window at a time. Both run in this process, alternately, and the best of `--repeats`
runs counts (the machine is shared, so the best run is the least disturbed one).

Prints seconds of EEG processed per wall-clock second for each, the CPU seconds they took
(steadier than wall time when other work shares the cores), peak memory traced by
`tracemalloc` (numpy buffers included), and the ratios.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

from processing_e2llm import EEGPT_CHANNELS, E2LLMFeatureExtractor
from train.data.seed_vii import SEED_VII_CHANNELS

RATE = 1000.0


def synthetic_recording(seconds: float, seed: int = 0) -> np.ndarray:
    """(62, T) float64 in uV: pink-ish noise, a 10 Hz rhythm, 50 Hz line noise and a DC offset."""
    rng = np.random.default_rng(seed)
    samples = int(seconds * RATE)
    t = np.arange(samples) / RATE
    data = np.cumsum(rng.standard_normal((62, samples)), axis=1) * 0.5
    data += 20 * np.sin(2 * np.pi * 10 * t) + 15 * np.sin(2 * np.pi * 50 * t) + 300.0
    return data


def baseline(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import mne

    keep = [i for i, name in enumerate(SEED_VII_CHANNELS) if name in EEGPT_CHANNELS]
    ch_types = ["eeg" if i in keep else "misc" for i in range(len(SEED_VII_CHANNELS))]
    info = mne.create_info(list(SEED_VII_CHANNELS), RATE, ch_types)
    raw = mne.io.RawArray(data * 1e-6, info, verbose="error")
    raw.pick([SEED_VII_CHANNELS[i] for i in keep])
    raw.filter(0.1, 70.0, verbose="error")
    raw.notch_filter(50.0, verbose="error")
    raw.resample(256, verbose="error")
    raw.set_eeg_reference("average", projection=False, verbose="error")
    order = sorted(range(len(raw.ch_names)), key=lambda i: EEGPT_CHANNELS.index(raw.ch_names[i]))
    windows = []
    for start in range(0, raw.n_times - 1024 + 1, 1024):
        window = raw.get_data(picks=order, start=start, stop=start + 1024) * 1e3
        windows.append(window.astype(np.float32))
    ids = np.array([EEGPT_CHANNELS.index(raw.ch_names[i]) for i in order], dtype=np.int64)
    return np.stack(windows), np.broadcast_to(ids, (len(windows), len(ids)))


def processor(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    out = E2LLMFeatureExtractor()(data, sampling_rate=RATE, channel_names=SEED_VII_CHANNELS, units="uV")
    return out["eeg_values"], out["eeg_channel_ids"]


def measure(function, data: np.ndarray) -> tuple[float, float, int, tuple[np.ndarray, np.ndarray]]:
    tracemalloc.start()
    start, start_cpu = time.perf_counter(), time.process_time()
    result = function(data)
    seconds, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return seconds, cpu, peak, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="length of the synthetic recording")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each pipeline; the fastest counts")
    args = parser.parse_args(argv)

    data = synthetic_recording(args.minutes * 60)
    eeg_seconds = data.shape[1] / RATE
    input_mb = data.nbytes / 2**20
    print(f"input: 62 channels x {eeg_seconds:.0f} s at {RATE:.0f} Hz, float64 ({input_mb:.0f} MiB)")
    best = {"baseline": (np.inf, np.inf, 0), "processor": (np.inf, np.inf, 0)}
    results = {}
    for _ in range(args.repeats):
        for name, function in (("baseline", baseline), ("processor", processor)):
            seconds, cpu, peak, results[name] = measure(function, data)
            best[name] = (min(best[name][0], seconds), min(best[name][1], cpu), max(best[name][2], peak))

    (base_values, base_ids), (values, ids) = results["baseline"], results["processor"]
    assert values.shape == base_values.shape and np.array_equal(ids, base_ids), (values.shape, base_values.shape)
    # Compare away from the recording's ends, where each pipeline pads in its own way.
    inner = slice(10, len(values) - 10)
    difference = np.abs(values[inner] - base_values[inner]).max() / np.abs(base_values[inner]).max()

    print(f"windows: {values.shape} float32; max difference to baseline (inner windows): {difference:.2e} of peak")
    print(f"{'pipeline':<10} {'wall s':>8} {'EEG s / wall s':>15} {'CPU s':>7} {'peak MiB':>9}")
    for name, (seconds, cpu, peak) in best.items():
        print(f"{name:<10} {seconds:>8.2f} {eeg_seconds / seconds:>15.0f} {cpu:>7.2f} {peak / 2**20:>9.0f}")
    (wall, cpu, peak), (base_wall, base_cpu, base_peak) = best["processor"], best["baseline"]
    print(
        f"processor vs baseline: {base_wall / wall:.1f}x the throughput (wall), {base_cpu / cpu:.1f}x less CPU time, "
        f"{peak / base_peak:.2f}x the peak memory"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
