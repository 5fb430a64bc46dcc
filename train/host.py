"""Host-memory settings for training and generating on a CPU.

A CPU training step with Qwen3's 151,936-word vocabulary allocates and frees a few hundred MB
of temporaries (logits, their gradients, the embedding's gradient). glibc hands freed blocks
that large back to the kernel at once (`mmap`/`munmap`, heap trimming), so the next step
page-faults all of it in again: on a 2-core machine that made the kernel's share of a demo
training step as large as the step's own arithmetic. `retain_freed_memory` asks glibc to keep
such blocks for reuse, which roughly halved the step time of the demo's warm-up (the
`e2llm` command does it for its CPU steps; set `E2LLM_KEEP_MALLOC_DEFAULTS=1` to opt out).

The process's resident memory then stays near its peak instead of shrinking between steps.
It changes nothing on other C libraries or systems, or when an accelerator does the work.

`more_threads_on_signal` lets a process that was started on one thread take the whole
machine later: `e2llm demo` runs stage 1 and the LM warm-up side by side on one core each, and
when one of them ends it sends the other `MORE_THREADS_SIGNAL` (SIGUSR1) so that the step still
running uses both cores.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import sys

# mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
OPT_OUT = "E2LLM_KEEP_MALLOC_DEFAULTS"
# Asks an `e2llm` process to use every CPU it may run on (None where the system has no SIGUSR1).
MORE_THREADS_SIGNAL = getattr(signal, "SIGUSR1", None)


def usable_cpus() -> int:
    """The number of CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _take_more_threads(signum, frame) -> None:
    # Runs between two bytecodes of the main thread, so never inside a torch operation. Before
    # torch is imported (or while it is), the environment decides the thread count it starts with.
    count = usable_cpus()
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(count)
    torch = sys.modules.get("torch")
    try:
        if torch is not None and hasattr(torch, "set_num_threads"):
            torch.set_num_threads(count)
    except Exception:  # a request for speed must never break the work it interrupts
        pass


@contextlib.contextmanager
def more_threads_on_signal():
    """Within this block, `MORE_THREADS_SIGNAL` raises torch's intra-op threads to every CPU this
    process may use; after it, the signal is ignored. (Python gives the signal back its default
    action, which ends the process, while the interpreter shuts down: a request that came late
    must not turn a finished step into a failed one.)

    Does nothing where the system has no such signal (Windows) or off the main thread, where
    handlers cannot be installed.
    """
    installed = False
    if MORE_THREADS_SIGNAL is not None:
        try:
            signal.signal(MORE_THREADS_SIGNAL, _take_more_threads)
            installed = True
        except ValueError:  # not the main thread
            pass
    try:
        yield installed
    finally:
        if installed:
            signal.signal(MORE_THREADS_SIGNAL, signal.SIG_IGN)


def retain_freed_memory(
    mmap_threshold: int = 1 << 30, trim_threshold: int = 2**31 - 1, top_pad: int = 1 << 28
) -> bool:
    """Make glibc serve allocations under `mmap_threshold` bytes from its heap and keep up to
    `trim_threshold` bytes of freed heap (growing it `top_pad` bytes at a time).

    Returns True when the settings were applied, False on non-glibc systems, when
    `E2LLM_KEEP_MALLOC_DEFAULTS=1`, or when glibc refused a value.
    """
    if os.environ.get(OPT_OUT, "") not in ("", "0") or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    settings = ((M_MMAP_THRESHOLD, mmap_threshold), (M_TRIM_THRESHOLD, trim_threshold), (M_TOP_PAD, top_pad))
    for parameter, value in settings:
        if not 0 <= value < 2**31:
            raise ValueError(f"glibc's mallopt takes values from 0 to 2**31 - 1 bytes, got {value}")
    return all(mallopt(parameter, value) == 1 for parameter, value in settings)
