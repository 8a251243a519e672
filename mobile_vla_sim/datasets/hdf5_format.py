"""The real project's on-disk episode layout: one gzip HDF5 file per episode.

Core datasets and attributes are exactly the real robot's, so a loader written for the real data reads the
synthetic data unchanged; simulation extras (poses, privileged states, clean expert labels, seed, difficulty,
success...) are *additional* datasets and attributes.

Frames follow the real collector (its December 2025 ROS collector): frame 0 is `episode_start`, the start view with a
zero action; frame k >= 1 holds the k-th move and the image the camera gave as that move had just started
(`capture_delay` seconds in); the last move gets no image after it. So `images[t]` pairs with `actions[t:]`, as the
real loaders read it ("capture" convention). The real project's later "V5" layout (images under
`observations/images`, written for task families whose `images_key` says so) has no episode_start frame: every frame
is a move, frame 0 included ("moves"). Files written by mobile-vla-sim before 2026-12 stored, for k >= 1, the image
taken after move k ("after_move" convention, `images[t]` -> `actions[t + 1:]`); `frame_convention` tells them apart,
and every reader here pairs frames by it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from mobile_vla_sim.envs.tasks import FAMILIES, get_family
from mobile_vla_sim.errors import CorruptEpisodeError, DatasetError, OutputError
from mobile_vla_sim.io import atomic_write
from mobile_vla_sim.moved import moved_name

#: Real attribute values carried over unchanged.
ACTION_CHUNK_SIZE = 8
INSTRUCTION_DTYPE = "S256"
#: Channel order written when the record names none (`attrs["color_order"]`: "RGB" or "BGR").
COLOR_ORDER = "RGB"
EVENT_START, EVENT_ACTION, EVENT_STOP = "episode_start", "start_action", "stop_action"
GZIP_LEVEL = 4  # level 4 is ~2x faster than 9 on images for a few % more bytes

#: How a stored image relates to the stored moves (module docstring).
CAPTURE, MOVES, AFTER_MOVE = "capture", "moves", "after_move"
FRAME_CONVENTIONS = (CAPTURE, MOVES, AFTER_MOVE)
#: Where the camera frames are: the real layout's, and the later "V5" layout's.
IMAGE_KEYS = ("images", "observations/images")


def images_key(f: h5py.File) -> str:
    """Where an open episode file keeps its frames (`IMAGE_KEYS`: the real layout's `images`, V5's
    `observations/images`); "images" when neither exists, so that reading it names what is missing."""
    return next((key for key in IMAGE_KEYS if key in f), "images")

_CORE_DATASETS = ("actions", "language_instruction")
#: Optional float32 extras: name -> expected trailing shape (None = any).
_EXTRA_DATASETS = {"robot_poses": (3,), "states": None, "action_labels": (3,)}

@dataclass
class Episode:
    """One episode in memory. `attrs` holds every HDF5 attribute (real and simulation ones) not promoted to a field."""

    images: np.ndarray  # (T, H, W, 3) uint8, channels in attrs["color_order"] (RGB unless it says BGR)
    actions: np.ndarray  # (T, 3) float32 [linear_x, linear_y, angular_z], executed
    instruction: str
    name: str  # file stem, also the `episode_name` attribute
    event_types: list[str] = field(default_factory=list)  # (T,) episode_start / start_action / stop_action
    task: str | None = None  # "left" | "right"
    difficulty: str | None = None
    seed: int | None = None  # scene seed given to env.reset (shared by a left/right pair)
    scenario: str | None = None  # e.g. "1box_hori_left"
    success: bool | None = None
    robot_poses: np.ndarray | None = None  # (T, 3) float32 x, y, yaw
    states: np.ndarray | None = None  # (T, STATE_DIM) float32 privileged env state
    action_labels: np.ndarray | None = None  # (T, 3) float32 clean expert labels (only when noise was injected)
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return int(len(self.actions))

    @property
    def targets(self) -> np.ndarray:
        """Training targets: the clean expert labels when noise was injected, else the executed actions."""
        return self.action_labels if self.action_labels is not None else self.actions

    @property
    def frame_convention(self) -> str:
        return frame_convention(self.attrs)


def frame_convention(attrs: dict[str, Any], images_key: str = "images") -> str:
    """The convention an episode's frames follow: recorded by this package since 2026-12; else a V5-layout file
    ("moves"), an earlier file of this package (a `generator` attribute: "after_move") or a file of the real
    collector ("capture")."""
    recorded = attrs.get("frame_convention")
    if recorded is not None:
        if recorded not in FRAME_CONVENTIONS:
            raise DatasetError(f"unknown frame_convention {recorded!r}: expected one of {', '.join(FRAME_CONVENTIONS)}")
        return recorded
    if images_key != "images":
        return MOVES
    return AFTER_MOVE if str(attrs.get("generator", "")).startswith("mobile-vla-sim") else CAPTURE


def first_target(convention: str, t: int) -> int:
    """Index of the first action to take after seeing image t: the move stored with it ("capture", "moves"; the
    episode_start frame 0 of "capture" carries no move, so its first is move 1) or the next one ("after_move")."""
    return t + 1 if convention == AFTER_MOVE else t if convention == MOVES else max(t, 1)


def targeted_frames(num_frames: int, convention: str) -> int:
    """How many frames, from frame 0 on, have an action to take after them (the rest only serve as history)."""
    if convention == MOVES:
        return num_frames
    return max(0, num_frames - 1) if convention == AFTER_MOVE else (num_frames if num_frames >= 2 else 0)


def parse_episode_name(name: str | os.PathLike) -> dict[str, Any]:
    """Fields of a real or synthetic episode file name, as the task family whose naming it follows reads them (at
    least `side`: the task; detour names also give date, time, scenario, num_boxes, layout, variant, distance,
    difficulty and tag, reach names target position, path and end position). Absent fields are None."""
    stem = Path(name).name
    for family in FAMILIES:
        fields = get_family(family).parse_file_name(stem)
        if fields is not None:
            return {"family": family, **fields}
    raise DatasetError(f"episode file name {stem!r} follows no task family's naming (e.g. "
                       "'episode_YYYYMMDD_HHMMSS_<n>box_<hori|vert>_<left|right>[_<core|variant>][_<distance>]"
                       "[_<difficulty>][_<tag>].h5'); rename it or regenerate the dataset")


def instruction_from_episode_name(name: str | os.PathLike, instruction_set: str = "korean",
                                  fallback: str | None = None) -> str:
    """The instruction the real training loader derived from a file name: the task parsed out of it, in a named set
    of the file's task family.

    The real loader ignored the stored `language_instruction` and used the Korean set, with `KOREAN_FALLBACK` for a
    name without a side: `instruction_from_episode_name(path, "korean", KOREAN_FALLBACK)` reproduces it. Without a
    `fallback`, a name that does not parse raises `DatasetError`.
    """
    try:
        fields = parse_episode_name(name)
    except DatasetError:
        if fallback is None:
            raise
        return fallback
    return get_family(fields["family"]).instruction(fields["side"], instruction_set)


def _check_record(record: Episode) -> None:
    images, actions = np.asarray(record.images), np.asarray(record.actions)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or len(images) == 0:
        raise DatasetError(f"images must be uint8 (T, H, W, 3) with T >= 1, got {images.dtype} {images.shape}")
    if actions.ndim != 2 or actions.shape[1] != 3 or len(actions) != len(images):
        raise DatasetError(f"actions must be (T, 3) with T={len(images)} frames, got {actions.shape}")
    if not np.isfinite(actions).all():
        raise DatasetError("actions contain NaN or inf; fix the policy/expert that produced them")
    if record.event_types and len(record.event_types) != len(images):
        raise DatasetError(f"event_types has {len(record.event_types)} entries for {len(images)} frames")
    if len(record.instruction.encode("utf-8")) > 256:
        raise DatasetError("instruction is longer than 256 bytes, the real layout's S256 limit; shorten it")
    for key, trailing in _EXTRA_DATASETS.items():
        value = getattr(record, key)
        if value is not None and (len(value) != len(images) or (trailing and value.shape[1:] != trailing)):
            raise DatasetError(f"{key} must have {len(images)} rows{' of shape ' + str(trailing) if trailing else ''},"
                               f" got {np.shape(value)}")


def default_event_types(num_frames: int, convention: str = CAPTURE) -> list[str]:
    """The real recorder's events for stop-and-go pulses: `episode_start`, then one `start_action` per pulse (every
    frame a pulse in the "moves" convention)."""
    if convention == MOVES:
        return [EVENT_ACTION] * num_frames
    return [EVENT_START] + [EVENT_ACTION] * (num_frames - 1)


def write_episode(path: str | os.PathLike, record: Episode, images_key: str = "images") -> Path:
    """Write `record` to `path` atomically: a temporary file in the same folder, then a rename.

    A crash or Ctrl-C therefore never leaves a partial `.h5`; only a `*.tmp` that `generate` removes on resume. A
    full disk is a one-line `OutputError`. `images_key="observations/images"` writes the V5 layout (no episode_start
    frame, so no event types).
    """
    _check_record(record)
    path = Path(path)
    images = np.ascontiguousarray(record.images)
    gzip = {"compression": "gzip", "compression_opts": GZIP_LEVEL}
    # HDF5 writes into memory and Python writes the bytes: HDF5 meeting a full disk itself left a half-closed file
    # whose cleanup crashed the process (a segfault in generate's workers), now it is an OSError like any other.
    # The in-memory "core" driver's image is byte for byte what HDF5 writes to a file (a Python file object is not).
    with h5py.File(f"{path.name}.{os.getpid()}", "w", driver="core", backing_store=False) as f:
        f.create_dataset(images_key, data=images, chunks=(1, *images.shape[1:]), **gzip)
        f.create_dataset("actions", data=np.asarray(record.actions, dtype=np.float32), **gzip)
        if images_key == "images":
            events = record.event_types or default_event_types(len(images))
            f.create_dataset("action_event_types", data=events, dtype=h5py.string_dtype("utf-8"))
        f.create_dataset("language_instruction", data=np.array([record.instruction.encode("utf-8")],
                                                                dtype=INSTRUCTION_DTYPE))
        for key in _EXTRA_DATASETS:
            value = getattr(record, key)
            if value is not None:
                f.create_dataset(key, data=np.asarray(value, dtype=np.float32), **gzip)
        attrs = {
            "action_chunk_size": ACTION_CHUNK_SIZE,
            "obstacle_layout_type": "hori",
            "color_order": COLOR_ORDER,
            **record.attrs,
            "episode_name": path.stem,
            "num_frames": len(images),
        }
        for key in ("task", "difficulty", "seed", "scenario", "success"):
            if getattr(record, key) is not None:
                attrs[key] = getattr(record, key)
        for key, value in attrs.items():
            f.attrs[key] = value
        f.flush()
        image = f.id.get_file_image()
    try:
        atomic_write(path, image)
    except OSError as err:
        raise OutputError(f"cannot write episode {path.name} into {path.parent} ({err.strerror or err}); free "
                          "space (or choose another --out) and run the same command again to resume") from None
    return path


def corrupt_episode_error(path: Path, err: Exception) -> CorruptEpisodeError:
    """The one message for an unreadable episode file, with the fix."""
    return CorruptEpisodeError(f"{path} is corrupt or truncated ({str(err).splitlines()[0]}); delete it and "
                               "re-run `mvla-sim generate` to regenerate it")


def _attr(value: Any) -> Any:
    """HDF5 attributes come back as numpy scalars/bytes; give plain Python values."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_episode(path: str | os.PathLike, *, load_images: bool = True) -> Episode:
    """Read one episode (real or synthetic). `load_images=False` skips the image decompression (metadata scans)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"episode file {path} does not exist; check the path or regenerate the dataset")
    try:
        with h5py.File(path, "r") as f:
            where = images_key(f)
            missing = [key for key in _CORE_DATASETS if key not in f] + ([] if where in f else ["images"])
            if missing:
                raise CorruptEpisodeError(f"{path} lacks dataset(s) {', '.join(missing)}: not an episode file of the "
                                          "real layout; delete it and re-run `mvla-sim generate`")
            attrs = {key: _attr(value) for key, value in f.attrs.items()}
            attrs["frame_convention"] = frame_convention(attrs, where)
            actions = f["actions"][()].astype(np.float32)
            images = f[where][()] if load_images else np.empty((len(actions), 0, 0, 3), np.uint8)
            extras = {key: f[key][()].astype(np.float32) if key in f else None for key in _EXTRA_DATASETS}
            events = ([_attr(e) for e in f["action_event_types"][()]] if "action_event_types" in f
                      else default_event_types(len(actions), attrs["frame_convention"]))
            instruction = _attr(f["language_instruction"][0])
    except UnicodeDecodeError as err:
        raise CorruptEpisodeError(f"{path} holds text that is not UTF-8 (its instruction or an attribute: "
                                  f"{err.object[max(err.start - 20, 0):err.end + 20]!r}); re-encode it as UTF-8 or "
                                  "regenerate it") from err
    except (OSError, KeyError, IndexError, TypeError, ValueError) as err:
        raise corrupt_episode_error(path, err) from err
    if len(images) != len(actions):
        raise CorruptEpisodeError(f"{path} has {len(images)} images but {len(actions)} actions; regenerate it")
    if len(actions) == 0 or actions.ndim != 2 or actions.shape[1] != 3:
        raise CorruptEpisodeError(f"{path} has {'no frames' if len(actions) == 0 else f'actions {actions.shape}'}; "
                                  "an episode needs (T >= 1, 3) actions: delete it or regenerate it")
    try:
        parsed = parse_episode_name(path.name)
    except DatasetError:
        parsed = {}
    return Episode(
        images=images, actions=actions, instruction=instruction, name=path.stem, event_types=events,
        task=attrs.pop("task", parsed.get("side")), difficulty=attrs.pop("difficulty", parsed.get("difficulty")),
        seed=attrs.pop("seed", None), scenario=attrs.pop("scenario", parsed.get("scenario")),
        success=attrs.pop("success", None), attrs=attrs, **extras,
    )


def __getattr__(name: str):
    """Names that moved or are gone since the reorganisation (`mobile_vla_sim.moved`)."""
    return moved_name(__name__, name)
