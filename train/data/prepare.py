"""``e2llm prepare``: SEED-VII or your own recordings -> 10 s segments and the five QA sets.

    e2llm prepare --dataset seed-vii --root /data/SEED-VII --out prepared/
    e2llm prepare --dataset seed-vii --root /data/SEED-VII --source raw --cnt-data-format int32 --out prepared/
    e2llm prepare --dataset recordings --root /data/faced-bids --label-map "1=happy,5=sad" --out prepared/
    e2llm prepare --dataset seed-vii --root data/synthetic --out prepared/ --split cross-subject \\
        --qa-train 2000 --qa-stage3 600 --qa-test-multi 150 --qa-test-esr 60

writes

``DIR/segments``  ``datasets.DatasetDict`` (``load_from_disk``), splits ``train`` and ``test``, one
                  row per 10 s segment: ``id``, ``eeg`` (58 x 2560 float32, mV, 256 Hz,
                  ``EEGPT_58_CHANNELS`` order, average reference), ``subject``, ``session``,
                  ``video``, ``segment`` (index within its clip), ``emotion``, ``label`` (index in
                  ``train.data.qa.EMOTIONS``), ``intensity`` (mean continuous label over the segment,
                  null where unknown), and the measured features of :mod:`train.data.features`
                  (``power_alpha_occipital``, ``de_beta_frontal``, ``asymmetry_alpha_frontal``, ...;
                  61 float32 columns), each a z-score against all segments of the same subject
                  and session
``DIR/qa``        ``DatasetDict`` with ``train``, ``stage3``, ``test_ied``, ``test_multi``,
                  ``test_esr``: ``id``, ``task``, ``messages``, ``segment_ids``, ``answer``
                  (see :mod:`train.data.qa`)
``DIR/prepare.json``  the settings the folder was prepared with

Splits (``--split``): ``paper`` (default) draws test segments at random, stratified by emotion,
``--test-fraction`` of them (default 2,761 / 27,205 as in the paper); neighbouring seconds of one
clip then sit on both sides. ``cross-subject`` holds out whole subjects and ``cross-clip`` whole
videos (for every subject), stratified by emotion, so no subject (or no clip) is on both sides.

How: recordings are processed in parallel (``--num-workers`` processes, one recording at a time
each, so memory does not grow with the dataset), each into its own shard written to a temporary
folder and renamed into place when complete. A rerun after an interruption skips finished
shards and gives the same dataset, byte for byte in its values. ``--out`` is held by one run at a
time (``train.io.output_lock``), a worker ends when a killed ``prepare`` does, and a non-empty
``--out`` that ``prepare`` did not write is refused unless ``--overwrite``. The features are
measured clip by clip in the same pass (the shards hold them as measured); assembling the shards
turns them into z-scores per subject and session.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from train.children import end_with_parent
from train.data import features, qa, seed_vii
from train.data.recordings import (
    SEGMENT_SAMPLES,
    Clip,
    clips_from_annotations,
    cut_segments,
    filter_pad_seconds,
    find_recording_files,
    open_recording,
    parse_label_map,
    preprocess_clip,
    raw_clips_eeg,
    read_events_table,
)
from train.io import LOCK_FILE, check_folder, output_lock, write_atomic

PAPER_TEST_FRACTION = 2761 / 27205
SPLITS = ("paper", "cross-subject", "cross-clip")
SPLIT_DESCRIPTIONS = {
    "paper": "the paper's: test segments drawn at random over all 10 s segments, stratified by emotion",
    "cross-subject": "leak-free: whole subjects held out",
    "cross-clip": "whole clips held out: each test video unseen for every subject",
}
SHARD_FILE = "data.arrow"
# Rows per Arrow record batch: 16 segments are ~10 MB, which bounds a worker's buffer.
WRITER_BATCH_SIZE = 16


def segment_features():
    """The ``datasets.Features`` of a segments split."""
    from datasets import Array2D, ClassLabel, Features, Value

    return Features(
        {
            "id": Value("string"),
            "eeg": Array2D((len(seed_vii.SEED_VII_CHANNELS) - 4, SEGMENT_SAMPLES), "float32"),
            "subject": Value("int32"),
            "session": Value("int32"),
            "video": Value("int32"),
            "segment": Value("int32"),
            "emotion": Value("string"),
            "label": ClassLabel(names=list(qa.EMOTIONS)),
            "intensity": Value("float32"),
            **{name: Value("float32") for name in features.FEATURE_NAMES},
        }
    )


@dataclass(frozen=True)
class Job:
    """One recording to turn into a shard (picklable, for the worker processes)."""

    kind: str
    key: str
    path: str
    subject: int
    session: int
    root: str
    data_format: str = "auto"
    label_map: dict = field(default_factory=dict)
    events: str | None = None


def list_jobs(dataset: str, root: str, *, source: str = "auto", subjects=None, data_format: str = "auto",
              label_map: dict | None = None) -> list[Job]:
    """The recordings to prepare, in the order their shards are concatenated."""
    if dataset == "seed-vii":
        if seed_vii.verify_stimuli_order(root):
            print("clip table checked against emotion_label_and_stimuli_order.xlsx")
        return [
            Job("seed-vii-" + r.kind, r.key, str(r.path), r.subject, r.session or 0, str(root), data_format)
            for r in seed_vii.find_recordings(root, source, subjects)
        ]
    if dataset == "recordings":
        found = find_recording_files(root)
        if subjects is not None:
            found = [r for r in found if r.subject in set(subjects)]
        return [
            Job("recording", r.key, str(r.path), r.subject, r.session, str(root), data_format, dict(label_map or {}),
                None if r.events is None else str(r.events))
            for r in found
        ]
    raise ValueError(f"dataset must be 'seed-vii' or 'recordings', got {dataset!r}")


def _clips_and_eeg(job: Job) -> Iterator[tuple[Clip, np.ndarray]]:
    """Each clip of a job's recording with its preprocessed EEG (58, T) at 256 Hz."""
    if job.kind == "seed-vii-preprocessed":
        labels = seed_vii.read_continuous_labels(job.root, job.subject) or {}
        for video, data in seed_vii.read_preprocessed_clips(job.path):
            clip = Clip(0.0, data.shape[1] / seed_vii.PREPROCESSED_SAMPLING_RATE, seed_vii.clip_emotion(video), video,
                        labels.get(video))
            eeg = preprocess_clip(data, seed_vii.PREPROCESSED_SAMPLING_RATE, seed_vii.SEED_VII_CHANNELS, units="uV",
                                  apply_filters=False, source=f"{job.path} video {video}")
            yield clip, eeg
        return
    if job.kind == "seed-vii-raw":
        raw = seed_vii.read_raw_recording(job.path, job.data_format)
        seed_vii.check_amplitudes(raw, job.path)
        labels = seed_vii.read_continuous_labels(job.root, job.subject) or {}
        bounds = seed_vii.session_clip_bounds(raw, Path(job.path).stem, job.root, job.path)
        clips = []
        for clip_index, (start, stop) in enumerate(bounds):
            video = seed_vii.video_number(job.session, clip_index)
            clips.append(Clip(start, stop, seed_vii.clip_emotion(video), video, labels.get(video)))
    else:
        raw = open_recording(job.path)
        if job.events:
            clips = read_events_table(job.events, job.label_map)
        else:
            clips = clips_from_annotations(raw, job.label_map, job.path)
    yield from raw_clips_eeg(raw, clips, job.path)


def segment_rows(job: Job) -> Iterator[dict]:
    """The segment rows of one job's recording, clip by clip."""
    from processing_e2llm import EEGPT_58_CHANNELS, TARGET_SAMPLING_RATE

    for clip, eeg in _clips_and_eeg(job):
        pieces = list(cut_segments(eeg, clip.intensity))
        if not pieces:
            continue
        measured = features.measure_features(np.stack([p[1] for p in pieces]), TARGET_SAMPLING_RATE, EEGPT_58_CHANNELS)
        for (index, segment, intensity), values in zip(pieces, measured):
            if job.kind.startswith("seed-vii"):
                segment_id = f"s{job.subject:02d}_v{clip.video:02d}_{index:03d}"
                session = (clip.video - 1) // seed_vii.CLIPS_PER_SESSION + 1
            else:
                segment_id = f"{job.key}_v{clip.video:03d}_{index:03d}"
                session = job.session
            yield {
                "id": segment_id,
                "eeg": segment,
                "subject": job.subject,
                "session": session,
                "video": clip.video,
                "segment": index,
                "emotion": clip.emotion,
                "label": qa.EMOTIONS.index(clip.emotion),
                "intensity": intensity,
                **dict(zip(features.FEATURE_NAMES, values.tolist())),
            }


def write_shard(job: Job, shards: str) -> tuple[str, int]:
    """Write one job's segments to ``shards/<key>/data.arrow``, atomically; skip a finished shard."""
    from datasets.arrow_writer import ArrowWriter

    final = Path(shards) / job.key
    if (final / SHARD_FILE).is_file():
        return job.key, -1
    temporary = Path(shards) / f".tmp-{job.key}-{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    count = 0
    with ArrowWriter(features=segment_features(), path=str(temporary / SHARD_FILE),
                     writer_batch_size=WRITER_BATCH_SIZE) as writer:
        for row in segment_rows(job):
            writer.write(row)
            count += 1
        writer.finalize()
    os.replace(temporary, final)
    return job.key, count


def build_shards(jobs: list[Job], shards: Path, num_workers: int) -> None:
    """Write every missing shard, ``num_workers`` recordings at a time, with a progress bar."""
    from tqdm.auto import tqdm

    shards.mkdir(parents=True, exist_ok=True)
    for leftover in shards.glob(".tmp-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    todo = [job for job in jobs if not (shards / job.key / SHARD_FILE).is_file()]
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc="recordings", unit="recording")
    if any(job.kind != "seed-vii-preprocessed" for job in todo):
        filter_pad_seconds()  # designs the band-pass once, before the workers fork
    if num_workers <= 1:
        for job in todo:
            write_shard(job, str(shards))
            bar.update()
    else:
        # A worker outlives a killed `e2llm prepare` by at most a moment (`train.children`).
        with ProcessPoolExecutor(max_workers=num_workers, initializer=end_with_parent) as pool:
            futures = [pool.submit(write_shard, job, str(shards)) for job in todo]
            for future in as_completed(futures):
                future.result()
                bar.update()
    bar.close()


def split_indices(subjects, videos, emotions, split: str = "paper", test_fraction: float = PAPER_TEST_FRACTION,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Row indices ``(train, test)`` for a split, both sorted.

    ``paper``: within each emotion, ``round(test_fraction * n)`` random segments go to test.
    ``cross-subject``: ``max(1, round(test_fraction * subjects))`` random subjects go to test.
    ``cross-clip``: within each emotion, ``max(1, round(test_fraction * videos))`` random videos
    go to test, for every subject (an emotion with a single video stays in train).
    """
    subjects, videos, emotions = np.asarray(subjects), np.asarray(videos), np.asarray(emotions)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test fraction must lie between 0 and 1, got {test_fraction}")
    rng = np.random.default_rng(seed)
    test = np.zeros(len(emotions), dtype=bool)
    if split == "paper":
        for emotion in qa.EMOTIONS:
            rows = np.flatnonzero(emotions == emotion)
            test[rng.permutation(rows)[: int(round(test_fraction * len(rows)))]] = True
    elif split == "cross-subject":
        unique = np.unique(subjects)
        if len(unique) < 2:
            raise ValueError(f"a cross-subject split needs at least 2 subjects, got {unique.tolist()}")
        count = min(len(unique) - 1, max(1, int(round(test_fraction * len(unique)))))
        test = np.isin(subjects, rng.choice(unique, size=count, replace=False))
    else:
        for emotion in qa.EMOTIONS:
            unique = np.unique(videos[emotions == emotion])
            if len(unique) < 2:
                continue
            count = min(len(unique) - 1, max(1, int(round(test_fraction * len(unique)))))
            test |= (emotions == emotion) & np.isin(videos, rng.choice(unique, size=count, replace=False))
    return np.flatnonzero(~test), np.flatnonzero(test)


def split_leakage(train_subjects, train_videos, test_subjects, test_videos) -> dict:
    """What a test split shares with its training split, from each segment's subject and video.

    A clip is one subject's recording of one video. Returns the counts of test subjects, clips
    and videos, how many of each also have training segments (``*_shared``), and the percentage
    of test segments whose own clip has training segments (``test_segments_in_shared_clips``):
    under the paper's split nearly all, their neighbouring seconds trained on; 0 under
    ``cross-subject`` and ``cross-clip``. Videos (the stimuli) are shared under ``cross-subject``,
    where every subject watched the same ones.
    """
    train_clips = set(zip(train_subjects, train_videos))
    test_clips = list(zip(test_subjects, test_videos))
    shared_segments = sum(clip in train_clips for clip in test_clips)
    return {
        "test_subjects": len(set(test_subjects)),
        "subjects_shared": len(set(test_subjects) & set(train_subjects)),
        "test_clips": len(set(test_clips)),
        "clips_shared": len(set(test_clips) & train_clips),
        "test_videos": len(set(test_videos)),
        "videos_shared": len(set(test_videos) & set(train_videos)),
        "test_segments_in_shared_clips": 100 * shared_segments / max(len(test_clips), 1),
    }


def _save_atomic(dataset_dict, path: Path) -> None:
    temporary = path.with_name(f".tmp-{path.name}")
    shutil.rmtree(temporary, ignore_errors=True)
    dataset_dict.save_to_disk(str(temporary))
    shutil.rmtree(path, ignore_errors=True)
    os.replace(temporary, path)


def assemble_segments(jobs: list[Job], shards: Path, out: Path, split: str, test_fraction: float, seed: int):
    """Concatenate the shards in job order, z-score the features per subject and session, split them
    and save ``out/segments``."""
    from datasets import Dataset, DatasetDict, Features, Value, concatenate_datasets

    parts = [Dataset.from_file(str(shards / job.key / SHARD_FILE)) for job in jobs]
    parts = [part for part in parts if len(part)]
    if not parts:
        raise ValueError("no 10 s segment came out of the recordings: are the clips shorter than 10 s?")
    everything = concatenate_datasets(parts)
    meta = everything.select_columns(["subject", "session", "video", "emotion"]).to_dict()
    columns = everything.select_columns(list(features.FEATURE_NAMES)).with_format("numpy")[:]
    measured = np.stack([columns[name] for name in features.FEATURE_NAMES], axis=1)
    scores = features.zscore(measured, [f"{s}-{t}" for s, t in zip(meta["subject"], meta["session"])])
    zscored = Dataset.from_dict({name: scores[:, i] for i, name in enumerate(features.FEATURE_NAMES)},
                                features=Features({name: Value("float32") for name in features.FEATURE_NAMES}))
    everything = concatenate_datasets([everything.remove_columns(list(features.FEATURE_NAMES)), zscored], axis=1)
    train_rows, test_rows = split_indices(meta["subject"], meta["video"], meta["emotion"], split, test_fraction, seed)
    if len(train_rows) == 0 or len(test_rows) == 0:
        raise ValueError(
            f"the {split} split with test fraction {test_fraction:g} leaves {len(train_rows)} training and "
            f"{len(test_rows)} test segments of {len(everything)}; both must hold some: change --test-fraction "
            "or prepare more recordings"
        )
    segments = DatasetDict({"train": everything.select(train_rows), "test": everything.select(test_rows)})
    _save_atomic(segments, out / "segments")
    subjects, videos = np.asarray(meta["subject"]), np.asarray(meta["video"])
    leak = split_leakage(subjects[train_rows], videos[train_rows], subjects[test_rows], videos[test_rows])
    print(f"split {split}: {len(test_rows)} test segments, {leak['test_segments_in_shared_clips']:.1f} % of them "
          f"from clips with training segments; {leak['subjects_shared']} of {leak['test_subjects']} test subjects "
          "in training")  # fmt: skip


def build_qa(out: Path, sizes: dict, cot: bool, seed: int) -> None:
    """Build ``out/qa`` from the metadata of ``out/segments``."""
    from datasets import Dataset, DatasetDict, load_from_disk

    segments = load_from_disk(str(out / "segments"))
    wanted = ["id", "emotion", "intensity", *(features.FEATURE_NAMES if cot else ())]
    columns = {name: segments[name].select_columns(wanted).to_dict() for name in ("train", "test")}
    sets = qa.build_qa_sets(columns["train"], columns["test"], sizes=sizes, cot=cot, seed=seed)
    schema = qa.qa_features()
    _save_atomic(DatasetDict({name: Dataset.from_list(rows, features=schema) for name, rows in sets.items()}),
                 out / "qa")


def prepare(dataset: str, root: str, out: str, *, source: str = "auto", split: str = "paper",
            test_fraction: float = PAPER_TEST_FRACTION, seed: int = 0, num_workers: int = 1, subjects=None,
            data_format: str = "auto", label_map: dict | None = None, sizes: dict | None = None, cot: bool = True,
            keep_shards: bool = False, overwrite: bool = False) -> Path:
    """Prepare segments and QA sets under ``out`` (see the module docstring); returns ``out``.

    ``out`` must be new, empty, or written by this function; ``overwrite`` replaces what it holds.
    """
    out = check_folder(out, "--out")
    settings = {
        "dataset": dataset, "root": str(Path(root).resolve()), "source": source, "subjects": subjects,
        "data_format": data_format, "label_map": label_map or {}, "split": split, "test_fraction": test_fraction,
        "seed": seed, "sizes": sizes or {}, "cot": cot,
    }  # fmt: skip
    shard_settings = {k: settings[k] for k in ("dataset", "root", "source", "data_format", "label_map")}
    segment_settings = {k: v for k, v in settings.items() if k not in ("sizes", "cot")}
    manifest, shards = out / "prepare.json", out / "shards"
    shard_manifest = shards / "settings.json"
    if not overwrite and out.is_dir() and not manifest.is_file() and not shards.is_dir():
        # Neither a finished nor an interrupted run of this tool: someone else's files, never
        # replaced without being asked.
        foreign = next((p for p in out.rglob("*") if p.is_file() and p.name != LOCK_FILE), None)
        if foreign is not None:
            raise ValueError(
                f"{out} holds files that e2llm prepare did not write (e.g. {foreign}; no prepare.json): pass "
                "--overwrite to replace its segments/ and qa/, or choose another --out"
            )
    if overwrite:
        for path in (out / "segments", out / "qa", shards, manifest):
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    previous = json.loads(manifest.read_text()) if manifest.is_file() else None
    if previous is not None and (out / "segments").is_dir():
        if previous == settings and (out / "qa").is_dir():
            print(f"{out} is already prepared with these settings")
            return out
        if {k: v for k, v in previous.items() if k not in ("sizes", "cot")} != segment_settings:
            raise ValueError(f"{out} was prepared with other settings ({manifest}); pass --overwrite or another --out")
        # Same segments, other QA sizes or answer style: only the QA sets are rebuilt.
        build_qa(out, sizes or {}, cot, seed)
        write_atomic(manifest, json.dumps(settings, indent=1))
        return out
    if shard_manifest.is_file() and json.loads(shard_manifest.read_text()) != shard_settings:
        raise ValueError(f"{shards} holds segments made with other settings; pass --overwrite or another --out")
    jobs = list_jobs(dataset, root, source=source, subjects=subjects, data_format=data_format, label_map=label_map)
    write_atomic(shard_manifest, json.dumps(shard_settings, indent=1))
    build_shards(jobs, shards, num_workers)
    assemble_segments(jobs, shards, out, split, test_fraction, seed)
    build_qa(out, sizes or {}, cot, seed)
    write_atomic(manifest, json.dumps(settings, indent=1))
    if not keep_shards:
        shutil.rmtree(shards)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="e2llm prepare",
        description="SEED-VII or your own recordings -> DIR/segments (10 s segments) and DIR/qa (the five task sets).",
    )
    parser.add_argument("--dataset", choices=("seed-vii", "recordings"), default="seed-vii")
    parser.add_argument("--root", required=True, help="the SEED-VII folder, or a folder of recordings MNE reads")
    parser.add_argument("--out", required=True, help="output folder DIR")
    parser.add_argument("--source", choices=("auto", "preprocessed", "raw"), default="auto",
                        help="SEED-VII form to read: EEG_preprocessed/*.mat or EEG_raw/*.cnt (auto: .mat if present)")
    parser.add_argument("--cnt-data-format", choices=("auto", "int16", "int32"), default="auto",
                        help="Neuroscan sample format for read_raw_cnt (default auto)")
    parser.add_argument("--label-map", default=None,
                        help="recordings: annotation or trial_type labels to emotions, e.g. 'T1=happy,T2=sad'")
    parser.add_argument("--subjects", default=None, help="only these subject numbers, e.g. '1,2,3'")
    parser.add_argument("--split", choices=SPLITS, default="paper")
    parser.add_argument("--test-fraction", type=float, default=PAPER_TEST_FRACTION)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-workers", type=int, default=os.cpu_count() or 1, help="parallel recordings")
    parser.add_argument("--qa-train", type=int, default=10_000)
    parser.add_argument("--qa-stage3", type=int, default=3_000)
    parser.add_argument("--qa-test-multi", type=int, default=500)
    parser.add_argument("--qa-test-esr", type=int, default=167)
    parser.add_argument("--no-cot", action="store_true", help="answers without chain of thought (ablation)")
    parser.add_argument("--keep-shards", action="store_true", help="keep DIR/shards after assembling")
    parser.add_argument("--overwrite", action="store_true", help="discard what DIR holds and prepare again")
    args = parser.parse_args(argv)
    sizes = {"train": args.qa_train, "stage3": args.qa_stage3, "test_multi": args.qa_test_multi,
             "test_esr": args.qa_test_esr}
    for name, value in sizes.items():
        if value < 0:
            raise ValueError(f"QA size for {name} must be >= 0, got {value}")
    subjects = None if args.subjects is None else [int(s) for s in args.subjects.split(",") if s.strip()]
    with output_lock(args.out, "e2llm prepare"):
        prepare(args.dataset, args.root, args.out, source=args.source, split=args.split,
                test_fraction=args.test_fraction, seed=args.seed, num_workers=args.num_workers, subjects=subjects,
                data_format=args.cnt_data_format, label_map=parse_label_map(args.label_map), sizes=sizes,
                cot=not args.no_cot, keep_shards=args.keep_shards, overwrite=args.overwrite)
    print(f"segments and QA sets written to {args.out}")
    return 0
