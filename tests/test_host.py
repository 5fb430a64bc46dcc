"""`train.host`: glibc's malloc settings for CPU training steps, and the signal that gives a step every core."""

import ctypes
import ctypes.util
import sys

import pytest

from train.host import OPT_OUT, retain_freed_memory


def test_opting_out_leaves_malloc_alone(monkeypatch):
    monkeypatch.setenv(OPT_OUT, "1")
    assert retain_freed_memory() is False


def test_values_mallopt_cannot_take_are_refused(monkeypatch):
    monkeypatch.delenv(OPT_OUT, raising=False)
    if not sys.platform.startswith("linux"):
        pytest.skip("mallopt is glibc's")
    with pytest.raises(ValueError, match="2\\*\\*31 - 1"):
        retain_freed_memory(trim_threshold=2**34)


def test_glibc_accepts_the_settings(monkeypatch):
    monkeypatch.delenv(OPT_OUT, raising=False)
    if not sys.platform.startswith("linux") or not hasattr(ctypes.CDLL(ctypes.util.find_library("c")), "mallopt"):
        pytest.skip("mallopt is glibc's")
    assert retain_freed_memory() is True


_SIGNAL_SELF = """
import os, sys, time
from train.host import MORE_THREADS_SIGNAL, more_threads_on_signal
with more_threads_on_signal() as installed:
    assert installed
    if sys.argv[1] == "before-torch":
        os.kill(os.getpid(), MORE_THREADS_SIGNAL)
        time.sleep(0.1)
    import torch
    print(torch.get_num_threads(), flush=True)
    os.kill(os.getpid(), MORE_THREADS_SIGNAL)
    time.sleep(0.1)
    print(torch.get_num_threads(), flush=True)
# After the block a late request is ignored, also while the interpreter shuts down.
os.kill(os.getpid(), MORE_THREADS_SIGNAL)
time.sleep(0.1)
"""


@pytest.mark.parametrize("when", ["after-torch", "before-torch"])
def test_the_signal_gives_a_one_thread_process_every_cpu(when):
    import os
    import subprocess

    from train.host import MORE_THREADS_SIGNAL, usable_cpus

    if MORE_THREADS_SIGNAL is None:
        pytest.skip("no SIGUSR1 on this system")
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-c", _SIGNAL_SELF, when], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    first, then = map(int, result.stdout.split())
    assert then == usable_cpus()
    # Sent before torch was imported, the request sets the count torch starts with.
    assert first == (usable_cpus() if when == "before-torch" else 1)


def test_side_by_side_steps_survive_the_signal_sent_when_one_ends(tmp_path, capsys):
    from train import demo
    from train.host import MORE_THREADS_SIGNAL

    if MORE_THREADS_SIGNAL is None:
        pytest.skip("no SIGUSR1 on this system")
    # `synthesize` installs no handler. The help ends within the first second; the synthesis
    # (a few seconds) is still running then, gets the signal, and must ignore it, not die of it.
    steps = {
        "help": ("train.data.synthesize", ["--help"]),
        "data": ("train.data.synthesize", ["--out", str(tmp_path / "data"), "--subjects", "1", "--clip-seconds", "20"]),
    }
    demo._run_side_by_side(tmp_path, steps, demo.DemoState(tmp_path, restart=True))
    printed = capsys.readouterr().out
    assert printed.index("help/ done") < printed.index("data now uses every core") < printed.index("data/ done")
    assert set(demo.DemoState(tmp_path, restart=False).done) == {"help", "data"}
