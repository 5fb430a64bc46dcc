"""Child processes that end with the process that started them.

A process killed with SIGKILL cannot stop its children, and the system hands them to another
parent: `e2llm demo` killed while a step ran as a child, or `e2llm prepare` killed with recordings
in its worker processes, would leave them writing into folders that the next run writes too.
So each such child watches its own parent and ends itself when the parent is gone.

- `end_with_parent()`: the calling process ends when its parent ends (`e2llm prepare` runs it
  in each worker process).
- `child_environment()` / `end_with_parent_if_asked()`: a parent starting `python -m train.cli ...`
  passes the environment from `child_environment()`; the `e2llm` command then calls
  `end_with_parent_if_asked()`. A command the user starts is never tied to its shell this way.

POSIX only (Linux, macOS): elsewhere an orphan keeps its parent's id and cannot tell.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

PARENT_ENV = "E2LLM_END_WITH_PARENT"
# How often a child looks at its parent: it outlives it by at most this long.
POLL_SECONDS = 0.5


def child_environment(env: dict[str, str] | None = None) -> dict[str, str]:
    """`env` (default: this process's environment) plus the request to end with this process."""
    return {**(os.environ if env is None else env), PARENT_ENV: str(os.getpid())}


def _end() -> None:
    # SIGTERM rather than an exception: it stops the process whichever thread is running and
    # whatever it is doing, and a handler the process installed may still clean up.
    os.kill(os.getpid(), signal.SIGTERM)


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(POLL_SECONDS)
    _end()


def end_with_parent() -> None:
    """End this process (SIGTERM) within `POLL_SECONDS` of its parent's end."""
    if os.name != "posix":
        return
    threading.Thread(target=_watch, args=(os.getppid(),), name="end-with-parent", daemon=True).start()


def end_with_parent_if_asked() -> None:
    """`end_with_parent()` when the parent asked for it through `child_environment()`.

    The request is taken out of the environment, so this process's own children are not bound
    by it. A parent that already ended before this call ends this process at once.
    """
    requested = os.environ.pop(PARENT_ENV, None)
    if requested is None or os.name != "posix":
        return
    if os.getppid() != int(requested):
        print(f"e2llm: the process that started this one ({requested}) has ended; stopping", file=sys.stderr)
        _end()
    end_with_parent()
