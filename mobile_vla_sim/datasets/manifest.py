"""`dataset.json`: the generation config, the episode list with splits, and action statistics.

Splits come from a hash of the scene seed (never from time or order), so a left/right pair sharing a scene
always lands in the same split and a grown dataset never moves an episode between splits.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from mobile_vla_sim.errors import DatasetError, OutputError
from mobile_vla_sim.io import atomic_write

MANIFEST_NAME = "dataset.json"
VAL_FRACTION = 0.1
SPLITS = ("train", "val", "all")


def split_digest(key: int | str) -> float:
    """A key's place in [0, 1), stable across machines and Python versions (sha256, not hash())."""
    return int(hashlib.sha256(str(key).encode()).hexdigest()[:12], 16) / 16**12


def assign_split(key: int | str, val_fraction: float = VAL_FRACTION) -> str:
    """'val' for about `val_fraction` of keys: those whose digest falls in the lowest `val_fraction`."""
    return "val" if split_digest(key) < val_fraction else "train"


def action_moments(actions: np.ndarray) -> dict[str, Any]:
    """Per-dimension count/sum/sum of squares/min/max of an episode's actions, to be merged across episodes."""
    a = np.asarray(actions, dtype=np.float64)
    return {"count": len(a), "sum": a.sum(0).tolist(), "sumsq": (a**2).sum(0).tolist(),
            "min": a.min(0).tolist() if len(a) else None, "max": a.max(0).tolist() if len(a) else None}


def merge_action_stats(moments: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    """Mean/std/min/max per action dim over all episodes (merge in a fixed order for bit-identical manifests)."""
    moments = [m for m in moments if m["count"]]
    if not moments:
        return None
    count = sum(m["count"] for m in moments)
    total = np.sum([m["sum"] for m in moments], axis=0)
    sumsq = np.sum([m["sumsq"] for m in moments], axis=0)
    mean = total / count
    std = np.sqrt(np.maximum(sumsq / count - mean**2, 0.0))
    return {"dims": ["linear_x", "linear_y", "angular_z"], "count": int(count), "mean": mean.tolist(),
            "std": std.tolist(), "min": np.min([m["min"] for m in moments], axis=0).tolist(),
            "max": np.max([m["max"] for m in moments], axis=0).tolist()}


def write_manifest(root: str | os.PathLike, manifest: dict[str, Any]) -> Path:
    """Atomically replace `root/dataset.json`, so an interrupted run always leaves a valid manifest; a full disk is
    a one-line `OutputError` (the previous manifest stays, and the episode files are the truth on resume)."""
    path = Path(root) / MANIFEST_NAME
    try:
        return atomic_write(path, json.dumps(manifest, indent=1) + "\n")
    except OSError as err:
        raise OutputError(f"cannot write {path} ({err.strerror or err}); free space and run the same command again "
                          "to resume (finished episode files are kept)") from None


def load_manifest(root: str | os.PathLike) -> dict[str, Any] | None:
    """The manifest of `root`, or None when the folder has none (e.g. real data)."""
    path = Path(root) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DatasetError(f"{path} is not valid JSON ({err}); restore it, or generate the dataset again into a new "
                           "--out folder") from err
    if not isinstance(manifest, dict) or not isinstance(manifest.get("episodes"), list):
        raise DatasetError(f"{path} has no 'episodes' list; restore it, or generate the dataset again into a new "
                           "--out folder")
    return manifest
