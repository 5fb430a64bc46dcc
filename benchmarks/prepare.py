"""Throughput and peak memory of `e2llm prepare` on raw 62-channel 1000 Hz EEG.

    python benchmarks/prepare.py --subjects 1 --sessions 2 --clip-seconds 60 --num-workers 2

Writes synthetic raw SEED-VII sessions (FIF, 1000 Hz, 62 EEG + 5 other channels), then, each
in a fresh process so peak memory is its own:

- baseline: a straightforward per-clip MNE script: crop each clip, load it, `filter(0.1, 70)`,
  `notch_filter(50)`, `resample(256)`, pick the 58 electrodes, average reference, cut 10 s
  segments, measure their features (`train.data.features.measure_features`, per clip), save them
  with `datasets`;
- prepare, 1 worker and `--num-workers` workers: `train.data.prepare.prepare(..., source="raw")`,
  segments with their measured features and a small QA set;
- prepare, 1 worker, with the feature measurement replaced by zeros: what the features cost
  (`e2llm prepare` measures them in the same pass, clip by clip), printed as the ratio of the
  two runs' throughputs;
- prepare from the same subjects' `EEG_preprocessed/*.mat` (200 Hz, already filtered), the form
  most users of SEED-VII start from.

It prints seconds of clip EEG prepared per wall second and per CPU second (this process and its
workers; CPU time holds on a shared machine, wall time does not), peak memory of the process
tree (proportional set size, so pages that forked workers share count once), the ratios to the
baseline, and projections for all of SEED-VII (75.6 hours of clips: 27,205 segments of 10 s,
about 170 s per clip): this run's fastest wall rate scaled up (fixed costs such as imports and
the QA sets included, so an overestimate for small runs), and, with two or more sessions, the
steady-state rate of one warm worker (CPU seconds per recording after the first) for 2 free cores
plus this run's fixed costs. `prepare` reads each recording once, with ~21 s of filter context
around each clip where clips are further apart than that.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from multiprocessing import get_context
from pathlib import Path

SEED_VII_CLIP_SECONDS = 27_205 * 10


def _measured(function, *args) -> tuple[float, float, float]:
    """Run ``function(*args)``; return (wall seconds, CPU seconds, peak MiB of this process and its children).

    CPU seconds count this process and the worker processes it waited for, so they hold on a
    machine shared with other work, where wall time does not. Memory is sampled every 200 ms over
    the process tree as proportional set size (pages shared between forked workers counted once
    in all, not once per worker), so parallel workers count together. The sampler's own CPU time
    is left out.
    """
    import resource

    import psutil

    process, peak, sampler_cpu, done = psutil.Process(), [0], [0.0], threading.Event()

    def sample():
        while not done.is_set():
            total = 0
            for member in [process, *process.children(recursive=True)]:
                try:
                    total += member.memory_full_info().pss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            peak[0] = max(peak[0], total)
            sampler_cpu[0] = time.thread_time()
            done.wait(0.2)

    def cpu() -> float:
        own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start, cpu_start = time.perf_counter(), cpu()
    function(*args)
    seconds, cpu_seconds = time.perf_counter() - start, cpu() - cpu_start
    done.set()
    sampler.join()
    return seconds, cpu_seconds - sampler_cpu[0], peak[0] / 2**20


def steady_state(root: str, out: str) -> tuple[float, int]:
    """CPU seconds per raw recording once a worker is warm: the first recording is processed
    untimed (imports, filter design), the others timed. Returns (CPU seconds, clip seconds timed)."""
    from train.data.prepare import list_jobs, write_shard
    from train.data.recordings import filter_pad_seconds
    from train.data.seed_vii import read_raw_recording, session_clip_bounds

    jobs = list_jobs("seed-vii", root, source="raw")
    Path(out).mkdir(parents=True, exist_ok=True)
    filter_pad_seconds()
    write_shard(jobs[0], out)
    start = time.process_time()
    for job in jobs[1:]:
        write_shard(job, out)
    seconds = time.process_time() - start
    clips = 0.0
    for job in jobs[1:]:
        raw = read_raw_recording(job.path)
        clips += sum(stop - start for start, stop in session_clip_bounds(raw, Path(job.path).stem, root, job.path))
    return seconds, int(round(clips))


def baseline(root: str, out: str) -> None:
    import mne
    import numpy as np
    from datasets import Dataset

    from processing_e2llm import EEGPT_58_CHANNELS
    from train.data.features import FEATURE_NAMES, measure_features
    from train.data.prepare import segment_features
    from train.data.qa import EMOTIONS
    from train.data.seed_vii import clip_bounds_from_annotations, clip_emotion, video_number

    def rows():
        for path in sorted(Path(root, "EEG_raw").glob("*.fif")):
            subject, _, session = (int(p) for p in path.stem.split("_"))
            raw = mne.io.read_raw_fif(path, preload=False, verbose="error")
            for index, (begin, end) in enumerate(clip_bounds_from_annotations(raw, str(path))):
                clip = raw.copy().crop(begin, end, include_tmax=False).load_data(verbose="error")
                clip.pick(list(EEGPT_58_CHANNELS))
                clip.filter(0.1, 70.0, verbose="error")
                clip.notch_filter(50.0, verbose="error")
                clip.resample(256, verbose="error")
                clip.set_eeg_reference("average", verbose="error")
                data = clip.get_data(units="mV").astype(np.float32)
                video = video_number(session, index)
                count = data.shape[1] // 2560
                if not count:
                    continue
                segments = data[:, : count * 2560].reshape(len(EEGPT_58_CHANNELS), count, 2560).transpose(1, 0, 2)
                measured = measure_features(segments, 256.0, EEGPT_58_CHANNELS)
                for segment in range(count):
                    yield {
                        "id": f"s{subject:02d}_v{video:02d}_{segment:03d}",
                        "eeg": segments[segment],
                        "subject": subject, "session": session, "video": video, "segment": segment,
                        "emotion": clip_emotion(video), "label": EMOTIONS.index(clip_emotion(video)), "intensity": None,
                        **dict(zip(FEATURE_NAMES, measured[segment].tolist())),
                    }  # fmt: skip

    Dataset.from_generator(rows, features=segment_features(), cache_dir=out).save_to_disk(str(Path(out) / "segments"))


def run_prepare(root: str, out: str, num_workers: int, source: str = "raw") -> None:
    from train.data.prepare import prepare

    sizes = {"train": 200, "stage3": 50, "test_multi": 30, "test_esr": 10}
    prepare("seed-vii", root, out, source=source, num_workers=num_workers, sizes=sizes)


def run_prepare_unmeasured(root: str, out: str, num_workers: int) -> None:
    """`run_prepare` with every feature left at zero instead of measured: the cost of the features."""
    import numpy as np

    from train.data import features

    def zeros(segments, sampling_rate, channel_names):
        return np.zeros((len(segments), len(features.FEATURE_NAMES)))

    features.measure_features = zeros
    run_prepare(root, out, num_workers)


def _with_default_start_method(function, *args):
    # A spawned process inherits "spawn" as its start method; `e2llm prepare` run from a shell
    # gets the platform's default (fork on Linux with Python < 3.14), so its workers do too.
    import multiprocessing

    multiprocessing.set_start_method(None, force=True)
    return function(*args)


def _isolated(function, *args):
    """Run in a fresh small process, so neither memory nor imports carry over between runs."""
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(_with_default_start_method, function, *args).result()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subjects", type=int, default=1)
    parser.add_argument("--sessions", type=int, default=2, help="raw sessions per subject (1-4)")
    parser.add_argument("--clip-seconds", type=int, default=60)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--workdir", default=None, help="folder for the synthetic data (default: a temporary one)")
    args = parser.parse_args()

    from train.data.synthesize import synthesize

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="e2llm-bench-"))
    root = workdir / "seed"
    if not (root / "EEG_raw").is_dir():
        sessions = tuple(range(1, args.sessions + 1))
        _isolated(partial(synthesize, raw=True, raw_sessions=sessions), root, args.subjects, args.clip_seconds)
    clip_seconds = args.subjects * args.sessions * 20 * args.clip_seconds
    print(f"{args.subjects} subject(s) x {args.sessions} session(s) x 20 clips x {args.clip_seconds} s = "
          f"{clip_seconds} s of 62-channel 1000 Hz EEG in clips")

    results, cpu = {}, {}
    for name, function, extra in (
        ("baseline: per-clip MNE script", baseline, ()),
        ("prepare, 1 worker, no features", run_prepare_unmeasured, (1,)),
        ("prepare, 1 worker", run_prepare, (1,)),
        (f"prepare, {args.num_workers} workers", run_prepare, (args.num_workers,)),
    ):
        out = workdir / f"out-{len(results)}"
        shutil.rmtree(out, ignore_errors=True)
        seconds, cpu_seconds, peak = _isolated(_measured, function, str(root), str(out), *extra)
        results[name], cpu[name] = seconds, cpu_seconds
        shutil.rmtree(out, ignore_errors=True)
        ratio = results["baseline: per-clip MNE script"] / seconds
        cpu_ratio = cpu["baseline: per-clip MNE script"] / cpu_seconds
        print(f"{name:32s} {seconds:7.1f} s wall  {clip_seconds / seconds:6.1f} EEG-s/s  x{ratio:5.2f} vs baseline  "
              f"{cpu_seconds:6.1f} CPU-s  {clip_seconds / cpu_seconds:6.1f} EEG-s per CPU-s  x{cpu_ratio:5.2f}  "
              f"peak memory {peak:6.0f} MiB (process and workers)")
    with_features, without = "prepare, 1 worker", "prepare, 1 worker, no features"
    print(f"the features measured in the same pass keep {100 * results[without] / results[with_features]:.1f} % of "
          f"the throughput without them ({100 * cpu[without] / cpu[with_features]:.1f} % in CPU time)")
    rate = clip_seconds / min(results.values())
    print(f"projection for all of SEED-VII ({SEED_VII_CLIP_SECONDS / 3600:.1f} h of clips) from EEG_raw, this run's "
          f"fastest wall rate scaled: {SEED_VII_CLIP_SECONDS / rate / 60:.1f} min at {rate:.0f} EEG-s/s")
    if args.sessions > 1:
        out = workdir / "out-steady"
        shutil.rmtree(out, ignore_errors=True)
        steady_cpu, steady_clips = _isolated(steady_state, str(root), str(out))
        shutil.rmtree(out, ignore_errors=True)
        per_core = steady_clips / steady_cpu
        fixed = results["prepare, 1 worker"] - clip_seconds / per_core
        minutes = (max(fixed, 0.0) + SEED_VII_CLIP_SECONDS / per_core / 2) / 60
        print(f"steady state, one warm worker: {per_core:.0f} EEG-s per CPU-s ({steady_clips} s of clips in "
              f"{steady_cpu:.1f} CPU-s); projection for all of SEED-VII from EEG_raw on 2 free cores "
              f"(this run's fixed costs, {max(fixed, 0.0):.0f} s, plus 2 workers at that rate): {minutes:.1f} min")
    # The synthetic .mat files hold all 80 videos of each subject, whatever --sessions says.
    mat_seconds = args.subjects * 80 * args.clip_seconds
    out = workdir / "out-mat"
    seconds, cpu_seconds, peak = _isolated(_measured, run_prepare, str(root), str(out), args.num_workers,
                                           "preprocessed")
    shutil.rmtree(out, ignore_errors=True)
    rate = mat_seconds / seconds
    print(f"{'prepare from .mat, ' + str(args.num_workers) + ' workers':32s} {seconds:7.1f} s wall  {rate:6.1f} EEG-s/s"
          f"  {cpu_seconds:6.1f} CPU-s  ({mat_seconds} s of 200 Hz clips)  peak memory {peak:6.0f} MiB")
    print(f"projection for all of SEED-VII from EEG_preprocessed: {SEED_VII_CLIP_SECONDS / rate / 60:.1f} min")
    if not args.workdir:
        shutil.rmtree(workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
