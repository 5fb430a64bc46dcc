"""The quickstart notebook runs top to bottom on a tiny published model and an MNE recording."""

from pathlib import Path

import mne
import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

from train.data.seed_vii import SEED_VII_CHANNELS

NOTEBOOK = Path(__file__).resolve().parent.parent / "examples" / "quickstart.ipynb"


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """20 s of 1000 Hz EEG in SEED-VII's montage plus an EOG channel, in volts, saved as FIF."""
    rng = np.random.default_rng(0)
    names = list(SEED_VII_CHANNELS) + ["VEO"]
    info = mne.create_info(names, 1000.0, ["eeg"] * len(SEED_VII_CHANNELS) + ["eog"])
    raw = mne.io.RawArray(rng.normal(0, 20e-6, (len(names), 20_000)), info, verbose="error")
    path = tmp_path_factory.mktemp("recording") / "subject_raw.fif"
    raw.save(path, verbose="error")
    return path


def test_quickstart_notebook_runs_and_answers(tiny_e2llm_folder, recording, tmp_path, monkeypatch):
    monkeypatch.setenv("E2LLM_MODEL", str(tiny_e2llm_folder))
    monkeypatch.setenv("E2LLM_RECORDING", str(recording))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel shows figures inline
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()

    printed = "".join(
        output.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
    )
    # 20 s at 256 Hz gives five whole 4 s windows of the 58 electrodes the model was trained on
    # (PO5, PO6, CB1, CB2 and the EOG channel dropped).
    assert "eeg_values (5, 58, 1024)" in printed
    assert "eeg_channel_ids (5, 58)" in printed
    assert "E2LLMForConditionalGeneration" in printed
    figures = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs if "image/png" in o.get("data", {})]
    assert len(figures) == 2  # the explanation beside its attribution map, and the windows read
    assert "strongest electrodes:" in printed
