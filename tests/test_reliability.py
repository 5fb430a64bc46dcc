"""Resume survives any crash, nothing of the user's is overwritten, concurrent runs are refused,
no child process outlives a killed parent, and wrong input is refused or warned about by name."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mne
import numpy as np
import psutil
import pytest
import torch

from processing_e2llm import EEGPT_58_CHANNELS, E2LLMFeatureExtractor, preprocess_continuous
from train.io import FolderInUseError, output_lock

REPO = Path(__file__).resolve().parents[1]
QUIET = ["--report_to", "none", "--gradient_checkpointing", "false", "--disable_tqdm", "true"]
QA_SIZES = ["--qa-train", "8", "--qa-stage3", "4", "--qa-test-multi", "3", "--qa-test-esr", "3"]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def seed_root(tmp_path_factory) -> Path:
    from train.data import synthesize

    root = tmp_path_factory.mktemp("reliability") / "seed-vii"
    synthesize.main(["--out", str(root), "--subjects", "2", "--clip-seconds", "10"])
    return root


@pytest.fixture(scope="module")
def data(seed_root, tmp_path_factory) -> Path:
    from train.data import prepare

    out = tmp_path_factory.mktemp("reliability-prepared") / "prepared"
    assert prepare.main(["--root", str(seed_root), "--out", str(out), "--num-workers", "1", *QA_SIZES]) == 0
    return out


def holding_lock(folder: Path, command: str) -> subprocess.Popen:
    """A separate process holding `folder`'s output lock until it is killed."""
    code = f"from train.io import output_lock\nimport time\nwith output_lock({str(folder)!r}, {command!r}):\n" \
           "    print('held', flush=True)\n    time.sleep(600)\n"  # fmt: skip
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=ENV, cwd=REPO)
    assert process.stdout.readline().strip() == "held"
    return process


# 4. Resume takes the newest complete checkpoint


def test_resume_passes_over_half_written_checkpoints_and_says_which_it_takes(tmp_path, capsys):
    from train.stages.stage2 import last_checkpoint

    for step, state in ((2, "{}"), (4, None), (6, '{"log_hist')):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"weights")
        if state is not None:
            (folder / "trainer_state.json").write_text(state)
    (tmp_path / "checkpoint-x").mkdir()
    assert last_checkpoint(str(tmp_path), resume=True) == str(tmp_path / "checkpoint-2")
    assert f"Resuming from {tmp_path / 'checkpoint-2'}" in capsys.readouterr().out
    assert last_checkpoint(str(tmp_path), resume=False) is None
    assert last_checkpoint(str(tmp_path / "nowhere"), resume=True) is None


@pytest.fixture(scope="module")
def parts(make_parts) -> tuple[Path, Path]:
    """(a tiny EEGPT in the official checkpoint format, a tiny Qwen3 folder with its tokenizer)."""
    return make_parts("parts", "llm")


def stage2_args(data, parts, out, *extra):
    encoder, llm = parts
    return [
        "--config", str(REPO / "train" / "recipes" / "demo" / "stage2.yaml"), "--data", str(data),
        "--encoder", str(encoder), "--encoder_preset", "tiny", "--llm", str(llm), "--output_dir", str(out),
        "--max_steps", "4", "--per_device_train_batch_size", "2", "--max_train_samples", "4", "--save_strategy",
        "steps", "--save_steps", "2", "--train_crop", "center", "--span_code_weight", "0", *QUIET, *extra,
    ]  # fmt: skip  (the LM is no warm-up: no span codes to pull the projector towards)


def test_stage2_resumes_after_a_checkpoint_cut_short_and_matches_an_uninterrupted_run(data, parts, tmp_path, capsys):
    from safetensors.torch import load_file

    from train.stages import stage2

    assert stage2.main(stage2_args(data, parts, tmp_path / "straight")) == 0
    # Killed while writing checkpoint-4: its weights are there, its trainer_state.json is not.
    shutil.copytree(tmp_path / "straight", tmp_path / "killed")
    (tmp_path / "killed" / "model.safetensors").unlink()
    (tmp_path / "killed" / "checkpoint-4" / "trainer_state.json").unlink()
    capsys.readouterr()
    assert stage2.main(stage2_args(data, parts, tmp_path / "killed", "--resume", "true")) == 0
    assert f"Resuming from {tmp_path / 'killed' / 'checkpoint-2'}" in capsys.readouterr().out
    straight, resumed = load_file(tmp_path / "straight" / "model.safetensors"), load_file(tmp_path / "killed" / "model.safetensors")
    for key in (k for k in straight if k.startswith("model.projector.")):
        assert torch.allclose(straight[key], resumed[key], atol=1e-6), key
    assert json.loads((tmp_path / "killed" / "checkpoint-4" / "trainer_state.json").read_text())["global_step"] == 4


def test_lm_warmup_resumes_after_a_checkpoint_cut_short(data, tmp_path, capsys):
    from train.stages import lm_warmup

    argv = [
        "--config", str(REPO / "train" / "recipes" / "demo" / "lm_warmup.yaml"), "--data", str(data),
        "--output_dir", str(tmp_path), "--max_steps", "4", "--save_strategy", "steps", "--save_steps", "2", *QUIET,
    ]  # fmt: skip
    assert lm_warmup.main(argv) == 0
    (tmp_path / "checkpoint-4" / "trainer_state.json").write_text('{"global_st')
    capsys.readouterr()
    assert lm_warmup.main([*argv, "--resume", "true"]) == 0
    assert f"Resuming from {tmp_path / 'checkpoint-2'}" in capsys.readouterr().out


# 5. prepare never replaces what it did not write


def test_prepare_refuses_a_folder_of_someone_elses_data_unless_told_to_overwrite(seed_root, tmp_path):
    from train.data import prepare

    out = tmp_path / "theirs"
    (out / "segments").mkdir(parents=True)
    (out / "qa").mkdir()
    (out / "segments" / "data-00000-of-00001.arrow").write_bytes(b"their segments")
    (out / "qa" / "notes.txt").write_text("their QA sets")
    argv = ["--root", str(seed_root), "--out", str(out), "--num-workers", "1", "--subjects", "1", *QA_SIZES]
    with pytest.raises(ValueError, match="holds files that e2llm prepare did not write .*--overwrite"):
        prepare.main(argv)
    assert (out / "segments" / "data-00000-of-00001.arrow").read_bytes() == b"their segments"
    assert (out / "qa" / "notes.txt").read_text() == "their QA sets"
    assert prepare.main([*argv, "--overwrite"]) == 0
    assert not (out / "qa" / "notes.txt").exists() and (out / "prepare.json").is_file()


# 6. evaluate never reuses results of other weights or data


def test_evaluate_answers_again_when_the_weights_at_the_same_path_changed(tiny_e2llm_folder, data, tmp_path, capsys):
    from transformers import Qwen3ForCausalLM

    from modeling_e2llm import E2LLMForConditionalGeneration, EEGPTConfig, EEGPTModel
    from train.evaluation import evaluate
    from train.stages.tiny import tiny_qwen3_config

    model, out = tmp_path / "model", tmp_path / "eval"
    shutil.copytree(tiny_e2llm_folder, model)
    argv = ["--model", str(model), "--data", str(data), "--out", str(out), "--limit", "1", "--max-new-tokens", "2"]

    def mark_stale():
        rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
        (out / "predictions.jsonl").write_text("".join(json.dumps({**row, "text": "STALE"}) + "\n" for row in rows))
        return len(rows)

    assert evaluate.main(argv) == 0
    count = mark_stale()
    assert evaluate.main(argv) == 0  # the same weights: the finished answers are kept
    assert (out / "predictions.jsonl").read_text().count("STALE") == count
    torch.manual_seed(1)
    E2LLMForConditionalGeneration.from_parts(
        EEGPTModel(EEGPTConfig.from_preset("tiny")), Qwen3ForCausalLM(tiny_qwen3_config())
    ).save_pretrained(model)  # retrained, same path
    capsys.readouterr()
    assert evaluate.main(argv) == 0
    assert "model's files changed" in capsys.readouterr().err
    assert "STALE" not in (out / "predictions.jsonl").read_text()
    assert len((out / "predictions.jsonl").read_text().splitlines()) == count


def test_evaluate_answers_again_when_the_prepared_data_changed(tiny_e2llm_folder, data, tmp_path, capsys):
    from datasets import load_from_disk

    from train.evaluation import evaluate

    prepared, out = tmp_path / "prepared", tmp_path / "eval"
    shutil.copytree(data, prepared)
    argv = ["--model", str(tiny_e2llm_folder), "--data", str(prepared), "--out", str(out), "--limit", "1",
            "--max-new-tokens", "2"]  # fmt: skip
    assert evaluate.main(argv) == 0
    qa = load_from_disk(str(prepared / "qa"))
    qa.map(lambda row: {"answer": "happy" if row["task"] == "IED" else row["answer"]}).save_to_disk(str(tmp_path / "qa"))
    shutil.rmtree(prepared / "qa")
    (tmp_path / "qa").rename(prepared / "qa")
    capsys.readouterr()
    assert evaluate.main(argv) == 0
    assert "prepared test data changed" in capsys.readouterr().err
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [row["gold"] for row in rows if row["task"] == "IED"] == ["happy"]


# 7. One command per output folder


def test_a_second_prepare_into_the_same_folder_is_refused_while_the_first_runs(seed_root, tmp_path):
    out, go_on = tmp_path / "prepared", tmp_path / "go-on"
    argv = ["prepare", "--root", str(seed_root), "--out", str(out), "--num-workers", "1", *QA_SIZES]
    # The first run stops after its shards, before it assembles them, until the test lets it go on.
    pause = (
        "import sys, time\nfrom pathlib import Path\nfrom train.cli import main\nfrom train.data import prepare\n"
        "assemble = prepare.assemble_segments\n"
        "def paused(*args):\n    print('paused', flush=True)\n"
        f"    while not Path({str(go_on)!r}).exists():\n        time.sleep(0.1)\n    return assemble(*args)\n"
        f"prepare.assemble_segments = paused\nsys.exit(main({argv!r}))\n"
    )
    first = subprocess.Popen([sys.executable, "-c", pause], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=ENV, cwd=REPO)  # fmt: skip
    assert first.stdout.readline().strip() == "paused", first.communicate()[1][-3000:]
    second = subprocess.run([sys.executable, "-m", "train.cli", *argv], capture_output=True, text=True, env=ENV,
                            cwd=REPO, timeout=300)  # fmt: skip
    go_on.touch()
    assert second.returncode != 0
    assert f"{out} is in use by another process (e2llm prepare, process {first.pid}" in second.stderr
    assert "FileNotFoundError" not in second.stderr
    assert first.wait(timeout=300) == 0, first.communicate()[1][-3000:]
    assert (out / "prepare.json").is_file() and not list((out / "shards").glob(".tmp-*"))


@pytest.mark.parametrize("stage", ["stage1", "stage2", "stage3", "lm_warmup"])
def test_a_training_into_a_folder_another_run_holds_is_refused(stage, tmp_path):
    from importlib import import_module

    out = tmp_path / "run"
    holder = holding_lock(out, "e2llm stage2")
    try:
        module = import_module(f"train.stages.{stage}")
        with pytest.raises(FolderInUseError, match=f"{out} is in use by another process \\(e2llm stage2, process {holder.pid}"):
            module.main(["--data", str(tmp_path / "data"), "--output_dir", str(out), *([] if stage == "stage1" else QUIET)])
    finally:
        holder.kill()
        holder.wait()
    assert list(out.iterdir()) == [out / ".e2llm.lock"]


def test_a_lock_is_free_again_once_its_holder_is_killed(tmp_path):
    holder = holding_lock(tmp_path, "e2llm evaluate")
    with pytest.raises(FolderInUseError):
        with output_lock(tmp_path, "e2llm evaluate"):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with output_lock(tmp_path, "e2llm evaluate"):
        assert f"process {os.getpid()}" in (tmp_path / ".e2llm.lock").read_text()


# 8. No child process outlives a killed parent


def wait_for_descendants(parent: psutil.Process, count: int, timeout: float = 120) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = parent.children(recursive=True)
        if len(found) >= count:
            return found
        time.sleep(0.2)
    raise AssertionError(f"{parent.pid} did not start {count} child processes")


def assert_all_end(processes: list[psutil.Process], timeout: float = 10) -> None:
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    for process in alive:
        process.kill()
    assert not alive, f"orphans still running: {[p.pid for p in alive]}"


def test_prepare_workers_end_when_prepare_is_killed(seed_root, tmp_path):
    from train.data import prepare

    out = tmp_path / "prepared"
    command = [sys.executable, "-m", "train.cli", "prepare", "--root", str(seed_root), "--out", str(out),
               "--num-workers", "2", *QA_SIZES]  # fmt: skip
    parent = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV, cwd=REPO)
    workers = wait_for_descendants(psutil.Process(parent.pid), 2)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    assert_all_end(workers)
    # The rerun finds the folder free and nothing else writing into it.
    assert prepare.main(["--root", str(seed_root), "--out", str(out), "--num-workers", "1", *QA_SIZES]) == 0


def test_demo_steps_end_when_the_demo_is_killed(seed_root, tmp_path):
    out = tmp_path / "demo"
    out.mkdir()
    step = ["--root", str(seed_root), "--out", str(out / "prepared"), "--num-workers", "2", *QA_SIZES]
    # The demo runs its steps in its own process; `prepare`'s workers are the processes a step starts.
    code = f"from train.demo import _run\n_run('train.data.prepare', {step!r})\n"
    demo = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=ENV, cwd=REPO)  # fmt: skip
    # The step's two workers.
    children = wait_for_descendants(psutil.Process(demo.pid), 2)
    demo.send_signal(signal.SIGKILL)
    demo.wait()
    assert_all_end(children)


# 9-11. Feature extractor input


def eeg(channels: int, seconds: float = 10.0, rate: float = 256.0, scale: float = 20.0, seed: int = 0) -> np.ndarray:
    """Random EEG-like data, `scale` uV spread, (channels, samples)."""
    return np.random.default_rng(seed).standard_normal((channels, int(seconds * rate))) * scale


def test_one_electrode_is_refused_and_a_few_are_warned_about():
    with pytest.raises(ValueError, match="average reference needs at least 2 electrodes .*leaves zeros"):
        E2LLMFeatureExtractor()(eeg(1), sampling_rate=256, channel_names=["CZ"])
    with pytest.warns(UserWarning, match="Only 3 EEG channels .*scalp-wide montage"):
        E2LLMFeatureExtractor()(eeg(3), sampling_rate=256, channel_names=["C3", "CZ", "C4"], apply_filters=False)


@pytest.mark.parametrize(
    ("scale", "units", "likely"),
    [(1.0, "V", "uV"), (1e-6, "uV", "V"), (1.0, "mV", "uV"), (1e-3, "uV", "mV"), (1e-6, "mV", "V")],
)
def test_eeg_in_another_unit_than_declared_is_refused_naming_the_likely_unit(scale, units, likely):
    data = eeg(8, scale=20.0 * scale)  # 20 uV EEG written in the unit `scale` stands for
    names = list(EEGPT_58_CHANNELS[:8])
    with pytest.raises(ValueError, match=f"outside what scalp EEG shows .*look like {likely}: pass units='{likely}'"):
        E2LLMFeatureExtractor(apply_filters=False)(data, sampling_rate=256, channel_names=names, units=units)
    windows = E2LLMFeatureExtractor(apply_filters=False)(data, sampling_rate=256, channel_names=names, units=likely)["eeg_values"]
    assert 0.002 < windows.std() < 0.05


def test_epochs_in_the_wrong_unit_are_refused_too():
    epochs = np.stack([eeg(8, 4.0, seed=i) for i in range(3)])
    with pytest.raises(ValueError, match="look like uV"):
        E2LLMFeatureExtractor()(epochs, sampling_rate=256, channel_names=list(EEGPT_58_CHANNELS[:8]), units="V")


def test_prepare_refuses_own_recordings_in_the_wrong_unit_naming_the_file(tmp_path):
    from train.data import prepare
    from train.data.seed_vii import SEED_VII_CHANNELS

    data = np.random.default_rng(3).normal(0, 20.0, (len(SEED_VII_CHANNELS), 60 * 250))  # uV numbers stored as volts
    raw = mne.io.RawArray(data, mne.create_info(list(SEED_VII_CHANNELS), 250.0, "eeg"), verbose="error")
    raw.set_annotations(mne.Annotations([5.0], [22.0], ["happy"]))
    (tmp_path / "root").mkdir()
    raw.save(tmp_path / "root" / "p1_eeg.fif", verbose="error")
    argv = ["--dataset", "recordings", "--root", str(tmp_path / "root"), "--out", str(tmp_path / "out"),
            "--num-workers", "1", *QA_SIZES]  # fmt: skip
    with pytest.raises(ValueError, match=r"p1_eeg\.fif .*look like uV"):
        prepare.main(argv)


@pytest.mark.parametrize(("rate", "message"), [(300_000.0, "outside the 32-100000 Hz"), (1e-4, "outside the 32-100000 Hz"),
                                               (51461.65, "by a ratio of small integers")])  # fmt: skip
def test_rates_outside_a_sane_range_or_without_a_close_ratio_are_refused(rate, message):
    with pytest.raises(ValueError, match=message):
        preprocess_continuous(np.zeros((8, 4096)), rate, list(EEGPT_58_CHANNELS[:8]))


@pytest.mark.parametrize(("rate", "samples"), [(1000.0, 2560), (25_000.0, 2560), (44_100.0, 2560), (100.0, 2560)])
def test_resampling_lands_on_256_hz(rate, samples):
    out, _ = preprocess_continuous(eeg(8, 10.0, rate), rate, list(EEGPT_58_CHANNELS[:8]), apply_filters=False)
    assert out.shape == (8, samples)


def test_flat_channels_are_warned_about_by_name():
    data = eeg(8)
    data[2], data[5] = 0.0, 7.0
    with pytest.warns(UserWarning, match=r"EEG channels \['F3', 'F4'\] are flat"):
        preprocess_continuous(data, 256, ["FP1", "FP2", "F3", "C3", "C4", "F4", "O1", "O2"], apply_filters=False)


def test_windows_over_bad_annotations_are_left_out_as_mne_epoching_does():
    names = list(EEGPT_58_CHANNELS[:8])
    raw = mne.io.RawArray(eeg(8, 20.0) * 1e-6, mne.create_info(names, 256.0, "eeg"), verbose="error")
    extractor = E2LLMFeatureExtractor(apply_filters=False)
    clean = extractor(raw)["eeg_values"]
    raw.set_annotations(mne.Annotations([5.0, 17.5], [1.0, 0.1], ["BAD_blink", "bad_jump"]))
    with pytest.warns(UserWarning, match=r"Dropped 2 of 5 windows .*\(4-8 s, 16-20 s\)"):
        kept = extractor(raw)["eeg_values"]
    np.testing.assert_array_equal(kept, clean[[0, 2, 3]])
    # Over the centre (8-12 s): the clean window nearest it, 10-14 s.
    whole, _ = preprocess_continuous(raw.get_data(), 256, names, units="V", apply_filters=False)
    raw.set_annotations(mne.Annotations([9.0], [1.0], ["BAD_blink"]))
    np.testing.assert_array_equal(extractor(raw, windowing="center")["eeg_values"][0], whole[:, 2560:3584])
    for seed in range(5):
        window = extractor(raw, windowing="random", seed=seed)["eeg_values"][0]
        (start,) = [s for s in range(5120 - 1023) if np.array_equal(whole[:, s : s + 1024], window)]
        assert start + 1024 <= 9 * 256 or start >= 10 * 256
    raw.set_annotations(mne.Annotations([0.0], [20.0], ["BAD_all"]))
    with pytest.raises(ValueError, match="overlaps a BAD annotation"):
        extractor(raw)


# 12. Errors that say what is wrong


def test_nan_in_a_mat_file_names_the_file_the_video_and_the_channel(tmp_path):
    from scipy.io import loadmat, savemat

    from train.data import prepare, synthesize

    root = tmp_path / "seed-vii"
    synthesize.main(["--out", str(root), "--subjects", "1", "--clip-seconds", "10"])
    path = root / "EEG_preprocessed" / "1.mat"
    clips = {k: v for k, v in loadmat(path).items() if k.isdigit()}
    clips["3"][5, 100] = np.nan
    savemat(path, clips)
    with pytest.raises(ValueError, match=r"1\.mat video 3: EEG contains NaN or inf values in channels \['F7'\]"):
        prepare.main(["--root", str(root), "--out", str(tmp_path / "out"), "--num-workers", "1", *QA_SIZES])


def test_an_empty_test_split_is_refused_before_it_is_saved(seed_root, tmp_path):
    from train.data import prepare

    argv = ["--root", str(seed_root), "--out", str(tmp_path / "out"), "--num-workers", "1", "--subjects", "1",
            "--test-fraction", "0.001", *QA_SIZES]  # fmt: skip
    with pytest.raises(ValueError, match="leaves 80 training and 0 test segments of 80; both must hold some"):
        prepare.main(argv)


def test_a_checkpoint_value_that_is_not_a_tensor_is_named():
    from modeling_e2llm import EEGPTConfig, EEGPTModel, convert_eegpt_checkpoint

    state = EEGPTModel(EEGPTConfig.from_preset("tiny")).state_dict()
    state["blocks.0.attn.qkv.weight"] = [1.0, 2.0]
    with pytest.raises(ValueError, match=r"1 value\(s\) that are not tensors: \{'blocks.0.attn.qkv.weight': 'list'\}"):
        convert_eegpt_checkpoint({"state_dict": {f"target_encoder.{k}": v for k, v in state.items()}},
                                 EEGPTConfig.from_preset("tiny"))  # fmt: skip


def test_a_folder_without_tokenizer_json_is_refused_naming_the_file(tiny_e2llm_folder, tmp_path, parts):
    from train.evaluation.evaluate import load_processor
    from train.stages.parts import load_language_model

    shutil.copytree(tiny_e2llm_folder, tmp_path / "model")
    (tmp_path / "model" / "tokenizer.json").unlink()
    with pytest.raises(ValueError, match="holds no tokenizer.json; expected a folder saved by stage 2 or 3"):
        load_processor(tmp_path / "model")
    shutil.copytree(parts[1], tmp_path / "llm")
    (tmp_path / "llm" / "tokenizer.json").unlink()
    with pytest.raises(ValueError, match="holds no tokenizer \\(tokenizer.json\\)"):
        load_language_model(str(tmp_path / "llm"))


def test_an_output_folder_that_is_a_file_is_refused(seed_root, tmp_path):
    from train.data import prepare
    from train.evaluation import evaluate

    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(ValueError, match="is a file; expected a folder"):
        prepare.main(["--root", str(seed_root), "--out", str(tmp_path / "file")])
    with pytest.raises(ValueError, match="is a file; expected a folder"):
        evaluate.main(["--model", "m", "--data", "d", "--out", str(tmp_path / "file")])
    assert (tmp_path / "file").read_text() == "not a folder"


def test_a_label_map_naming_a_label_twice_is_refused():
    from train.data.recordings import parse_label_map

    with pytest.raises(ValueError, match="label map names 'T1' twice \\(T1=happy, T1=sad\\)"):
        parse_label_map("T1=happy,T1=sad")
