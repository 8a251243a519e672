"""Real start frames: frame 0 of each episode file of a folder in the real HDF5 layout, with what its name says.

Frame 0 is the start view (the real collector stores it before the first key press), so the robot stands where the
scene puts it and a sim render of the same scene from the same start is a like-for-like target. Only that frame is
read (one HDF5 chunk), so hundreds of 720p episodes load in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from mobile_vla_sim.datasets.hdf5_format import parse_episode_name
from mobile_vla_sim.envs.difficulty import DIFFICULTIES
from mobile_vla_sim.errors import CorruptEpisodeError, DatasetError, NoEpisodesError

#: `--real-color-order`: the files' own `color_order` attribute (RGB when absent, as the layout documents), or forced.
REAL_COLOR_ORDERS = ("attr", "rgb", "bgr")


@dataclass(frozen=True)
class RealStart:
    """One real episode's start view and the scene its file name (and, for sim-made files, its attributes) names."""

    name: str                    # file stem
    image: np.ndarray            # frame 0, RGB uint8 (H, W, 3)
    side: str                    # left | right
    n_boxes: int
    distance: str | None         # close | medium | far, when the name says
    seed: int | None             # the env.reset seed, in files the sim wrote (None for real files)
    difficulty: str | None       # likewise


def pick(paths: list[Path], n: int) -> list[Path]:
    """`n` of the sorted `paths`, evenly spread (so a folder sorted by date gives early and late sessions alike)."""
    if n >= len(paths):
        return paths
    return [paths[i] for i in np.linspace(0, len(paths) - 1, n).round().astype(int)]


def load_starts(folder: Path, episodes: int, color_order: str = "attr") -> tuple[list[RealStart], list[str]]:
    """The start views of up to `episodes` files of `folder`, and notes on the files left out (vert layouts)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NoEpisodesError(f"real data folder {folder} does not exist; pass --real DIR, a folder of episode files "
                              "in the real HDF5 layout")
    paths = sorted(folder.glob("*.h5"))
    if not paths:
        raise NoEpisodesError(f"no episode files (*.h5) in {folder}; pass --real DIR, a folder of episode files in "
                              "the real HDF5 layout")
    usable, notes = [], []
    for path in paths:
        fields = parse_episode_name(path.name)  # one-line DatasetError naming the expected pattern
        if fields["layout"] != "hori":
            notes.append(f"left out {path.name}: layout {fields['layout']} has no sim scene (the sim builds hori "
                         "layouts)")
            continue
        usable.append((path, fields))
    if not usable:
        raise NoEpisodesError(f"none of the {len(paths)} files in {folder} has a hori layout, the only one the sim "
                              "builds; calibrate on episodes named ..._<n>box_hori_<left|right>_...")
    chosen = pick([p for p, _ in usable], episodes)
    by_path = dict(usable)
    return [_read_start(path, by_path[path], color_order) for path in chosen], notes


def _read_start(path: Path, fields: dict, color_order: str) -> RealStart:
    try:
        with h5py.File(path, "r") as f:
            if "images" not in f:
                raise DatasetError(f"{path} has no `images` dataset; calibrate needs the real layout's images "
                                   "(T, H, W, 3) uint8 with the start view as frame 0")
            images = f["images"]
            if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or images.shape[0] < 1:
                raise DatasetError(f"{path}: `images` is {images.dtype} {images.shape}; calibrate needs uint8 "
                                   "(T, H, W, 3) frames with the start view as frame 0")
            image = images[0]
            attrs = dict(f.attrs)
    except OSError as err:
        raise CorruptEpisodeError(f"{path} is corrupt or truncated ({str(err).splitlines()[0]}); remove it from "
                                  "the folder") from err
    order = color_order if color_order != "attr" else _text(attrs.get("color_order", "RGB")).lower()
    if order not in ("rgb", "bgr"):
        raise DatasetError(f"{path}: color_order attribute {order!r} is neither RGB nor BGR; pass "
                           "--real-color-order rgb or bgr")
    seed, difficulty = attrs.get("seed"), _text(attrs.get("difficulty", fields.get("difficulty")))
    return RealStart(name=path.stem, image=np.ascontiguousarray(image[..., ::-1] if order == "bgr" else image),
                     side=fields["side"], n_boxes=fields["num_boxes"], distance=fields.get("distance"),
                     seed=None if seed is None else int(seed),
                     difficulty=difficulty if difficulty in DIFFICULTIES else None)


def _text(value) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An RGB uint8 frame resized to (width, height), antialiased (area-like when shrinking)."""
    if image.shape[1::-1] == tuple(size):
        return image
    out = resize_float(image[None].astype(np.float32), size)[0]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def resize_float(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Float images (N, H, W, C) resized to (width, height), antialiased; a linear map, so it commutes with sums
    and scaling (what `calibrate.colours` relies on)."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    x = F.interpolate(x, size=(size[1], size[0]), mode="bilinear", antialias=True, align_corners=False)
    return x.permute(0, 2, 3, 1).numpy()
