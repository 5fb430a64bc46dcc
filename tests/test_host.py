"""`train.host.retain_freed_memory`: glibc's malloc settings for CPU training steps."""

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
