"""Files the `e2llm` commands write: atomically, one command per folder at a time, fingerprinted.

- `write_atomic`: a file is either its old or its new content, never half of the new one.
- `output_lock`: a command holds its output folder while it writes there; a second command
  writing to the same folder is refused instead of racing it.
- `content_digest`: a SHA-256 over files' names and contents, to tell whether results made from
  them are still valid.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

LOCK_FILE = ".e2llm.lock"


class FolderInUseError(RuntimeError):
    """Another process holds the output folder's lock."""


def write_atomic(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same folder, so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise


def check_folder(path: str | os.PathLike, option: str) -> Path:
    """`path` as a Path, refused with ValueError when it exists and is not a folder."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{option} {path} is a file; expected a folder (new or existing)")
    return path


@contextlib.contextmanager
def output_lock(folder: str | os.PathLike, command: str, *, enabled: bool = True) -> Iterator[Path]:
    """Hold `folder` for `command` (e.g. "e2llm prepare") while the block runs.

    Creates `folder` if needed and takes the operating system's lock on `folder/.e2llm.lock`
    without waiting. The lock belongs to this process: it ends with it, however it ends (kill -9
    included), so a crashed run never leaves a folder locked. `enabled=False` (the other
    processes of a distributed run, whose main process holds the lock) takes no lock.

    Raises:
        ValueError: `folder` is a file.
        FolderInUseError: another process holds the folder; the message names it.
    """
    from filelock import FileLock, Timeout

    folder = check_folder(folder, "the output folder")
    if not enabled:
        yield folder
        return
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    holder = path.read_text(errors="replace").strip() if path.is_file() else ""
    lock = FileLock(str(path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise FolderInUseError(
            f"{folder} is in use by another process ({holder or 'unknown'}), which holds {path}. Wait for it to "
            f"end, or give {command} another output folder."
        ) from None
    try:
        # Read by the next process refused here, to say who holds the folder.
        path.write_text(f"{command}, process {os.getpid()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        yield folder
    finally:
        lock.release()


def content_digest(paths: Iterable[str | os.PathLike], root: str | os.PathLike) -> str:
    """SHA-256 over the files among `paths` (files, or folders read recursively; lock files left out):
    each file's path relative to `root`, its size and its bytes, in sorted order."""
    files = set()
    for path in map(Path, paths):
        if path.is_dir():
            files.update(p for p in path.rglob("*") if p.is_file() and p.name != LOCK_FILE)
        elif path.is_file():
            files.add(path)
    digest = hashlib.sha256()
    for file in sorted(files):
        digest.update(f"{file.relative_to(root)}\0{file.stat().st_size}\0".encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()

