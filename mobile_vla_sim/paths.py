"""Output locations checked before any work starts, so a long run never dies at its last step on an unwritable path."""

from __future__ import annotations

import os
from pathlib import Path

from mobile_vla_sim.errors import OutputError


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output_dir(path: str | os.PathLike, option: str) -> Path:
    """`path` is (or can be made) a writable folder; raise a one-line `OutputError` naming `option` otherwise."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{option} {path} is a file, not a folder; choose a folder path")
    base = _nearest_existing(path.resolve())
    if not base.is_dir():
        raise OutputError(f"{option} {path}: {base} is a file, so the folder cannot be created; choose another path")
    if not os.access(base, os.W_OK | os.X_OK):
        raise OutputError(f"{option} {path}: {base} is not writable; choose a folder you can write to")
    return path


def check_output_file(path: str | os.PathLike, option: str) -> Path:
    """`path` is a file that can be written (its folder exists or can be made); not a folder."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{option} {path} is a folder; give a file path")
    check_output_dir(path.parent, option)
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputError(f"{option} {path} is not writable; choose another path")
    return path
