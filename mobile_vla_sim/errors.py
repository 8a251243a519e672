"""Every error the package raises for an expected condition, under one root.

`MvlaError` is what the command line turns into a one-line message (what is wrong and how to fix it) and a
non-zero exit; anything else is a bug and gets a short report instead. Each subclass also derives from the
built-in exception a caller would naturally catch (`ValueError` for bad input, `FileNotFoundError` for a missing
file), so library users need not know this module.
"""

from __future__ import annotations

from pathlib import Path


class MvlaError(Exception):
    """An expected failure (bad input, missing file, interrupted work); the message says how to fix it."""


class ConfigError(MvlaError, ValueError):
    """An option or config file value that is not valid."""


class DatasetError(MvlaError, ValueError):
    """Bad dataset input (wrong shapes, unknown options, mismatching configs)."""


class CorruptEpisodeError(DatasetError):
    """An episode file exists but cannot be read as the HDF5 episode layout (truncated, foreign, missing fields)."""


class ConfigMismatchError(DatasetError):
    """An output folder already holds a dataset made with a different generation config."""


class NoEpisodesError(MvlaError, FileNotFoundError):
    """A dataset folder (or the requested split of it) holds no episode files."""


class PolicyLoadError(MvlaError, ValueError):
    """A policy spec or file that cannot be used."""


class CheckpointError(PolicyLoadError):
    """A checkpoint cannot be used: missing, not safetensors, not ours, or its backbone is unavailable."""


class BackboneNotFoundError(MvlaError, FileNotFoundError):
    """The backbone cannot be loaded (no network, wrong path, incomplete directory)."""


class EvalError(MvlaError, ValueError):
    """Bad evaluation input (unknown option, unusable policy or data)."""


class TrainingError(MvlaError, ValueError):
    """Training cannot go on (diverged loss, unusable data)."""


class OutputError(MvlaError, ValueError):
    """An output location that cannot be written, or that holds finished work the command would overwrite."""


def require_file(path: Path, what: str, fix: str, error: type[MvlaError]) -> None:
    """Raise `error` unless `path` is a file: "not found" or "is a directory", then `fix` (how to get one)."""
    if path.is_dir():
        raise error(f"{what} {path} is a directory, not a file; pass the file itself or {fix}")
    if not path.is_file():
        raise error(f"{what} {path} not found; {fix}")


class Interrupted(MvlaError, KeyboardInterrupt):
    """Ctrl-C: the work was stopped; the message says what was kept and how to resume (exit status 130)."""


class ProtocolError(MvlaError, ValueError):
    """A policy-server message that breaks the protocol (not msgpack, missing fields, unknown episode...)."""
