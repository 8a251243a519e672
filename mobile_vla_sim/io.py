"""Atomic file writes: every output appears whole or not at all, whatever interrupts the writer.

A writer fills a temporary sibling of the target (same folder, so the final `os.replace` is an atomic rename on
the same file system) and the rename happens only once it finished; on an exception the temporary is removed.
Temporaries are hidden `.NAME.PID.tmp` files, so concurrent processes never share one and `generate` can sweep
stale ones (`.*.tmp`) on resume.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType


class AtomicFile:
    """A temporary path `tmp` that becomes `path` on `commit()` and is deleted by `discard()`.

    As a context manager it yields `tmp`, commits on a clean exit and discards on an exception. Writers that pick
    their format from the file name (ffmpeg, stable-baselines3) pass `keep_suffix=True`: the temporary then ends
    in the target's suffix (`.NAME.PID.tmp.mp4`).
    """

    def __init__(self, path: str | os.PathLike, keep_suffix: bool = False):
        self.path = Path(path)
        suffix = self.path.suffix if keep_suffix else ""
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp{suffix}")

    def commit(self) -> Path:
        """Move the finished temporary onto `path` (atomic rename) and return `path`."""
        os.replace(self.tmp, self.path)
        return self.path

    def discard(self) -> None:
        """Remove the temporary, if any (an unfinished or failed write)."""
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return self.tmp

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if exc_type is None:
                self.commit()
        finally:
            self.discard()


def atomic_write(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write text (UTF-8) or bytes to `path` atomically; return `path`."""
    with AtomicFile(path) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8")
    return Path(path)
