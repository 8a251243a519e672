"""Dataset errors: one-line messages that say what is wrong and how to fix it (the CLI shows them verbatim)."""

from __future__ import annotations


class DatasetError(ValueError):
    """Base class for bad dataset input (wrong shapes, unknown options, mismatching configs)."""


class CorruptEpisodeError(DatasetError):
    """An episode file exists but cannot be read as the HDF5 episode layout (truncated, foreign, missing fields)."""


class ConfigMismatchError(DatasetError):
    """An output folder already holds a dataset made with a different generation config."""


class NoEpisodesError(FileNotFoundError):
    """A dataset folder (or the requested split of it) holds no episode files."""
