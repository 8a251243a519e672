"""`EpisodeDataset`: the episodes of a dataset folder (generated or real), listed eagerly and loaded lazily."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5py

from mobile_vla_sim.errors import DatasetError, NoEpisodesError
from mobile_vla_sim.datasets.hdf5_format import (AFTER_MOVE, Episode, corrupt_episode_error,
                                                 frame_convention, images_key, read_episode, targeted_frames)
from mobile_vla_sim.datasets.manifest import SPLITS, assign_split, load_manifest
from mobile_vla_sim.datasets.splits import scene_key, split_entries


def scan_episode(path: Path) -> dict[str, Any]:
    """Manifest-style entry of one file from its attributes only (no image decompression)."""
    try:
        with h5py.File(path, "r") as f:
            attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in f.attrs.items()}
            num_frames = int(attrs.get("num_frames", len(f["actions"])))
            where = images_key(f)
    except (OSError, KeyError) as err:
        raise corrupt_episode_error(path, err) from err
    seed = attrs.get("seed")
    seed = int(seed) if seed is not None else None
    success = attrs.get("success")
    return {"file": path.name, "seed": seed, "num_frames": num_frames,
            "success": bool(success) if success is not None else None, "task": attrs.get("task"),
            "split": assign_split(scene_key(path.name, seed)),
            "frame_convention": frame_convention(attrs, where)}


def recorded_layout(ds: "EpisodeDataset") -> tuple[str | None, tuple[int, int]]:
    """(drive, (height, width)) as the episode files of `ds` record them (their `drive` attributes, None when they
    name none, as real data; their image arrays), read without decompressing images.

    The files are the truth: mixed drives or image sizes are refused, and so is a `dataset.json` that says
    otherwise (copied from another dataset, or edited), since training records what it says as what the policy
    was trained on and evaluation later runs that."""
    drives: dict[str, str] = {}
    shapes: dict[tuple[int, int], str] = {}
    for path in ds.paths:
        try:
            with h5py.File(path, "r") as f:
                drive = f.attrs.get("drive")
                shape = tuple(int(n) for n in f[images_key(f)].shape[1:3])
        except (OSError, KeyError) as err:
            raise corrupt_episode_error(path, err) from err
        if drive is not None:
            drives.setdefault(drive.decode() if isinstance(drive, bytes) else str(drive), path.name)
        shapes.setdefault(shape, path.name)
    if len(drives) > 1:
        (a, fa), (b, fb) = list(drives.items())[:2]
        raise DatasetError(f"{ds.root} mixes drives: {fa} is {a}, {fb} is {b}; train on the episodes of one drive "
                           "(one folder per drive)")
    if len(shapes) > 1:
        (a, fa), (b, fb) = list(shapes.items())[:2]
        raise DatasetError(f"{ds.root} mixes image sizes: {fa} is {a[1]}x{a[0]}, {fb} is {b[1]}x{b[0]}; use one "
                           "image size per dataset")
    drive = next(iter(drives), None)
    shape = next(iter(shapes), (0, 0))
    config = (ds.manifest or {}).get("config") or {}
    if drive is not None and config.get("drive") not in (None, drive):
        raise DatasetError(f"{ds.root}/dataset.json says drive {config['drive']!r} but its episode files record "
                           f"{drive!r}; regenerate the dataset (or remove the wrong dataset.json)")
    expected = _manifest_image(config)
    if expected is not None and shapes and expected != shape:
        raise DatasetError(f"{ds.root}/dataset.json says {expected[1]}x{expected[0]} images but its episode files "
                           f"hold {shape[1]}x{shape[0]}; regenerate the dataset (or remove the wrong dataset.json)")
    return drive or config.get("drive"), shape


def _manifest_image(config: dict[str, Any]) -> tuple[int, int] | None:
    """(height, width) of the images a generation config makes, None when it names no size."""
    from mobile_vla_sim.envs.config import EnvConfig

    knobs = {k: config[k] for k in ("image_size", "image_width", "image_height", "camera", "image_size_limit")
             if config.get(k) is not None}
    if "image_size" not in knobs and "image_width" not in knobs and "image_height" not in knobs:
        return None
    try:
        width, height = EnvConfig(**knobs).resolution
    except (ValueError, TypeError):
        return None  # a config this version cannot read says nothing checkable
    return height, width


class EpisodeDataset:
    """Episodes of `root` in a split: `len`, lazy `ds[i] -> Episode`, `.paths`, `.names`, `.entries`, `.manifest`.

    With a `dataset.json` the manifest's list is used; on a plain folder of episode files (e.g. the real data) every
    `*.h5` is listed. `split="train"` / `"val"` are the one split every command uses (`datasets.splits`:
    successful demonstrations only, the seed-hash split or a deterministic fallback; `.note` says when the fallback
    was used). `split="all"` lists every file; failed expert episodes are kept on disk and `only_success=True`
    drops them here. An empty folder is an error.
    """

    def __init__(self, root: str | os.PathLike, split: str = "all", only_success: bool = False):
        if split not in SPLITS:
            raise DatasetError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
        self.root, self.split = Path(root), split
        if not self.root.is_dir():
            raise NoEpisodesError(f"dataset folder {self.root} does not exist; run `mvla-sim generate --out "
                                  f"{self.root}` first")
        self.manifest = load_manifest(self.root)
        if self.manifest is not None:
            entries = self.manifest["episodes"]
        else:
            entries = [scan_episode(p) for p in sorted(self.root.glob("*.h5"))]
        if not entries:
            raise NoEpisodesError(f"no episode files (*.h5) in {self.root}; run `mvla-sim generate --out "
                                  f"{self.root}` or point to a folder of episodes")
        self.note: str | None = None
        if split == "all":
            keep = [i for i, e in enumerate(entries) if not (only_success and e.get("success") is False)]
        else:
            plan = split_entries(entries, source=str(self.root))
            keep, self.note = list(getattr(plan, split)), plan.note
        self.entries = [entries[i] for i in keep]
        self.paths = [self.root / e["file"] for e in self.entries]

    @property
    def names(self) -> list[str]:
        """Episode names (file stems), the identifiers outputs record to say which episodes they used."""
        return [p.stem for p in self.paths]

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> Episode:
        return read_episode(self.paths[i])

    def num_frames(self, i: int) -> int:
        """Frames of episode i without reading its images."""
        return int(self.entries[i]["num_frames"])

    def targeted_frames(self, i: int) -> int:
        """Frames of episode i with an action to take after them (`hdf5_format.targeted_frames`); manifests written
        before the frame convention was recorded are of the "after_move" convention."""
        return targeted_frames(self.num_frames(i), self.entries[i].get("frame_convention", AFTER_MOVE))

    def __repr__(self) -> str:
        return f"EpisodeDataset({str(self.root)!r}, split={self.split!r}, episodes={len(self)})"
