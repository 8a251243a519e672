"""LeRobotDataset v3.0 both ways: `export_lerobot` (HDF5 episodes -> LeRobot) and `import_lerobot` (LeRobot -> HDF5).

What is written is LeRobot's v3.0 layout, as its own `LeRobotDataset(repo_id, root=path)` reads it:
`meta/info.json` (codebase_version "v3.0", fps, features, totals, path templates), `meta/stats.json`,
`meta/tasks.parquet` (index: the task sentence, column `task_index`), `meta/episodes/chunk-000/file-000.parquet` (one
row per episode: length, tasks, where its rows and frames are, per-episode stats), `data/chunk-*/file-*.parquet` (one
row per frame) and `videos/<camera key>/chunk-*/file-*.mp4` (episodes one after another; an episode never spans two
files, and a file stops growing past LeRobot's size limits).

Mapping: the camera `images` become the video feature (RGB: episodes whose `color_order` attribute says BGR are
flipped), `actions` become `action`, the instruction becomes the episode's task; `robot_poses` (x, y, yaw) become
`observation.state`, the privileged `states` `observation.environment_state`, clean expert `action_labels`
`action_label`, event types the string feature `action_event_type`. Side, difficulty, scenario, seed, success and every
other HDF5 attribute go along as episode metadata columns, so `import_lerobot` restores them.

Why it is built this way:
* Streaming: reader processes (half the CPUs) decompress episodes, flip them to RGB and take their image statistics
  a few episodes ahead; the parent writes each episode's frames to one ffmpeg process per video file (x264 with a
  thread per core) and its rows to parquet writers; statistics are combined count-weighted, as LeRobot combines
  them. A bounded number of episodes is in memory at any time, however many the dataset has.
* Atomic: everything is written in a hidden staging folder beside `--out` and renamed to it at the end, so an
  interrupted export (or import) never leaves a folder that looks finished.
* fps: LeRobot needs an integer frame rate; the real and synthetic episodes are stop-and-go, one frame per
  0.4-0.55 s, so the default is 2; each episode's true duration stays in its metadata (`total_duration`).
"""

from __future__ import annotations

import functools
import io
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from mobile_vla_sim.config import check_knobs, knob
from mobile_vla_sim.datasets.hdf5_format import (AFTER_MOVE, CAPTURE, COLOR_ORDER, Episode, default_event_types,
                                                 read_episode, write_episode)
from mobile_vla_sim.datasets.reader import EpisodeDataset
from mobile_vla_sim.errors import DatasetError, OutputError
from mobile_vla_sim.paths import check_output_dir
from mobile_vla_sim.progress import bar as progress_bar

CODEBASE_VERSION = "v3.0"
_CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
DATA_PATH = "data/" + _CHUNK_FILE + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + _CHUNK_FILE + ".mp4"
EPISODES_PATH = "meta/episodes/" + _CHUNK_FILE + ".parquet"
INFO_PATH, STATS_PATH, TASKS_PATH = "meta/info.json", "meta/stats.json", "meta/tasks.parquet"
#: LeRobot's defaults: files per chunk folder, and the sizes past which a data / video file is closed.
CHUNKS_SIZE, DATA_FILE_MB, VIDEO_FILE_MB = 1000, 100, 200
#: LeRobot's per-feature statistics: these quantiles besides min, max, mean, std and count.
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)

ACTION, STATE, ENV_STATE, ACTION_LABEL, EVENT = (
    "action", "observation.state", "observation.environment_state", "action_label", "action_event_type")
ACTION_NAMES = ["linear_x", "linear_y", "angular_z"]
POSE_NAMES = ["x", "y", "yaw"]
#: Per-frame float arrays of an `Episode` -> (LeRobot feature, names of its dimensions; None: unnamed).
VECTOR_FEATURES = {"actions": (ACTION, ACTION_NAMES), "robot_poses": (STATE, POSE_NAMES),
                   "states": (ENV_STATE, None), "action_labels": (ACTION_LABEL, ACTION_NAMES)}
#: LeRobot's bookkeeping columns, in every data file.
_INDEX_FEATURES = {"timestamp": "float32", "frame_index": "int64", "episode_index": "int64", "index": "int64",
                   "task_index": "int64"}
#: `Episode` fields carried as typed episode-metadata columns (column name, arrow type name); other HDF5 attributes
#: travel as one JSON column, `hdf5_attrs`.
EPISODE_FIELDS = {"name": ("episode_name", "string"), "task": ("side", "string"),
                  "difficulty": ("difficulty", "string"), "scenario": ("scenario", "string"),
                  "seed": ("seed", "int64"), "success": ("success", "bool")}
ATTRS_COLUMN = "hdf5_attrs"
_WRITTEN_BY_WRITER = ("episode_name", "num_frames")  # `write_episode` sets these itself
#: Rows buffered before a parquet write: frames of the data files; episode rows (each carries ~100 statistics
#: columns, so a buffered row costs tens of KB) are written every few dozen, as LeRobot buffers 10.
FRAMES_PER_WRITE, EPISODES_PER_WRITE = 4096, 32


@dataclass
class ExportConfig:
    """What `mvla-sim export` writes: a dataset of HDF5 episodes in another format."""

    data: Path = knob(help="folder of HDF5 episodes in the real layout (generated or the real robot's)", argument=True)
    out: Path = knob(help="output folder; must not exist yet (or be empty): the export appears there whole")
    format: str = knob("lerobot", "output format: LeRobotDataset v3.0", choices=("lerobot",))
    fps: int = knob(2, "frame rate recorded in the dataset (an integer in LeRobot); stop-and-go episodes take one "
                    "frame per 0.4-0.55 s", min=1)
    camera_key: str = knob("observation.images.front", "LeRobot feature name of the camera")
    codec: str = knob("h264", "video codec: h264 (libx264; decodes everywhere) or av1 (libsvtav1, LeRobot's "
                      "default)", choices=("h264", "av1"))
    crf: int = knob(18, "video quality (constant rate factor; lower: closer to the HDF5 pixels, larger files)",
                    min=0, max=63)
    gop: int = knob(2, "a keyframe every N frames (LeRobot uses 2: random frame access stays fast in training)",
                    min=1)
    robot_type: str = knob("mobile_base", "robot_type recorded in meta/info.json")
    color_order: str = knob("auto", "channel order of the HDF5 images: auto (each episode's color_order attribute, RGB "
                            "when absent) or rgb / bgr for every episode (the real collector stored BGR unlabelled)",
                            choices=("auto", "rgb", "bgr"))
    workers: int = knob(0, "processes reading episodes ahead (0: half the CPUs, the other half encode; 1: none, the "
                        "main process reads)", min=0)

    def __post_init__(self) -> None:
        self.data, self.out = Path(self.data), Path(self.out)
        check_knobs(self, DatasetError)
        if "/" in self.camera_key:
            raise DatasetError(f"--camera-key {self.camera_key!r} contains '/', which LeRobot forbids in feature "
                               "names; use dots (observation.images.front)")


@dataclass
class ImportConfig:
    """What `mvla-sim import` writes: HDF5 episodes in the real layout from a LeRobotDataset v3.0."""

    lerobot_dir: Path = knob(help="LeRobotDataset v3.0 folder (with meta/info.json)", argument=True)
    out: Path = knob(help="output folder of HDF5 episodes; must not exist yet (or be empty)")
    camera: str | None = knob(None, "camera feature to import (default: the first video or image feature)")
    action_index: tuple[int, ...] = knob((), "which 3 entries of `action` are linear_x, linear_y, angular_z "
                                         "(comma list; default: the action itself when it has 3 entries)")

    def __post_init__(self) -> None:
        self.lerobot_dir, self.out = Path(self.lerobot_dir), Path(self.out)
        self.action_index = tuple(int(i) for i in self.action_index)
        if self.action_index and len(self.action_index) != 3:
            raise DatasetError(f"--action-index takes 3 indices (linear_x, linear_y, angular_z), got "
                               f"{len(self.action_index)}")


@dataclass
class ConversionSummary:
    """Outcome of an export or import: counts and throughput."""

    out: Path
    episodes: int
    frames: int
    tasks: int
    seconds: float
    what: str

    @property
    def episodes_per_s(self) -> float:
        return self.episodes / self.seconds if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        return (f"{self.what}: {self.episodes} episodes, {self.frames} frames, {self.tasks} task(s) in {self.out} "
                f"({self.seconds:.1f} s, {self.episodes_per_s:.2f} episodes/s)")


# --- shared helpers ---------------------------------------------------------------------------------------------
def _arrow() -> tuple[Any, Any]:
    """pyarrow and pyarrow.parquet, or a one-line error saying how to install them."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise DatasetError("LeRobot datasets are parquet files and need pyarrow: pip install "
                           "'mobile-vla-sim[lerobot]'") from None
    return pa, pq


class _Staging:
    """A hidden sibling folder of `out` that becomes `out` on `commit()`; removed if the work stops before that."""

    def __init__(self, out: Path, option: str):
        check_output_dir(out, option)
        if out.is_dir() and any(out.iterdir()):
            raise OutputError(f"{option} {out} already exists and is not empty; choose a new folder or delete it")
        self.out = out
        for stale in out.parent.glob(f".{out.name}.*.tmp"):  # left by a killed run
            shutil.rmtree(stale, ignore_errors=True)
        self.path = out.parent / f".{out.name}.{os.getpid()}.tmp"
        self.path.mkdir(parents=True)

    def commit(self) -> None:
        if self.out.is_dir():
            self.out.rmdir()  # empty (checked at the start)
        os.replace(self.path, self.out)

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _progress(total: int, desc: str, progress: bool) -> Any:
    """A bar on a terminal, one line when done elsewhere (`mobile_vla_sim.progress`)."""
    return progress_bar(total=total, desc=desc, unit="ep", enabled=progress)


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=4, ensure_ascii=False), encoding="utf-8")


def _json_value(value: Any) -> Any:
    """HDF5 attribute values that are arrays as JSON lists."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"attribute of type {type(value).__name__} is not JSON")


# --- statistics -------------------------------------------------------------------------------------------------
def _quantile_names() -> list[str]:
    return [f"q{round(q * 100):02d}" for q in QUANTILES]


def feature_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """LeRobot's statistics of one episode's feature: values (N, D) -> min, max, mean, std, quantiles (D,), count."""
    v = np.asarray(values, dtype=np.float64)
    out = {"min": v.min(0), "max": v.max(0), "mean": v.mean(0), "std": v.std(0), "count": np.array([len(v)])}
    out.update(zip(_quantile_names(), np.quantile(v, QUANTILES, axis=0)))
    return out


def image_stats(images: np.ndarray) -> dict[str, np.ndarray]:
    """Per-channel statistics of uint8 RGB frames, scaled to [0, 1] and shaped (3, 1, 1) as LeRobot stores them;
    count = frames. Every pixel counts: from a 256-bin histogram per channel, the same numbers as `feature_stats`
    (linear-interpolated quantiles included) at a fraction of the cost."""
    levels = np.arange(256, dtype=np.float64)
    per_channel = []
    for c in range(3):
        counts = np.bincount(images[..., c].ravel(), minlength=256).astype(np.float64)
        n, cumulative, present = counts.sum(), np.cumsum(counts), np.flatnonzero(counts)
        mean = counts @ levels / n
        stats = {"min": levels[present[0]], "max": levels[present[-1]], "mean": mean,
                 "std": np.sqrt(max(counts @ (levels - mean) ** 2 / n, 0.0))}
        for name, q in zip(_quantile_names(), QUANTILES):
            position = q * (n - 1)  # numpy's default ("linear") quantile between two order statistics
            low, high = (np.searchsorted(cumulative, k, side="right") for k in (np.floor(position), np.ceil(position)))
            stats[name] = low + (high - low) * (position - np.floor(position))
        per_channel.append(stats)
    out = {k: np.array([s[k] for s in per_channel]).reshape(3, 1, 1) / 255.0 for k in per_channel[0]}
    out["count"] = np.array([len(images)])
    return out


class StatsTotal:
    """Dataset statistics from episode statistics, combined as LeRobot combines them: min of mins, max of maxes,
    count-weighted means (quantiles too) and the pooled variance. Constant memory in the number of episodes."""

    def __init__(self) -> None:
        self._sums: dict[str, dict[str, np.ndarray]] = {}

    def add(self, episode: dict[str, dict[str, np.ndarray]]) -> None:
        for key, s in episode.items():
            n = float(s["count"][0])
            acc = self._sums.setdefault(key, {"count": 0.0, "min": s["min"], "max": s["max"]})
            acc["count"] += n
            acc["min"], acc["max"] = np.minimum(acc["min"], s["min"]), np.maximum(acc["max"], s["max"])
            for name, value in s.items():
                if name in ("count", "min", "max"):
                    continue
                weighted = value**2 + s["mean"] ** 2 if name == "std" else value
                acc[name] = acc.get(name, 0.0) + n * weighted

    def result(self) -> dict[str, dict[str, Any]]:
        out = {}
        for key, acc in self._sums.items():
            n = acc["count"]
            mean = acc["mean"] / n
            stats = {"min": acc["min"], "max": acc["max"], "mean": mean,
                     "std": np.sqrt(np.maximum(acc["std"] / n - mean**2, 0.0)), "count": np.array([int(n)])}
            stats.update({k: v / n for k, v in acc.items() if k.startswith("q")})
            out[key] = {k: np.asarray(v).tolist() for k, v in stats.items()}
        return out


# --- export: writers ---------------------------------------------------------------------------------------------
class _ChunkedFiles:
    """Chunk and file indices of a growing sequence of files (CHUNKS_SIZE files per chunk folder)."""

    def __init__(self) -> None:
        self.chunk = self.file = 0

    def advance(self) -> None:
        self.file += 1
        if self.file == CHUNKS_SIZE:
            self.chunk, self.file = self.chunk + 1, 0


class _ParquetFiles:
    """Rows appended episode by episode to `pattern` files of one schema; a file is closed once its uncompressed
    rows pass `limit_mb` (LeRobot's rule), between episodes."""

    def __init__(self, root: Path, pattern: str, schema: Any, limit_mb: float, rows_per_write: int):
        self.pa, self.pq = _arrow()
        self.root, self.pattern, self.schema, self.limit = root, pattern, schema, limit_mb * 2**20
        self.rows_per_write = rows_per_write
        self.index = _ChunkedFiles()
        self._writer: Any = None
        self._buffer: list[Any] = []
        self._rows = 0
        self._bytes = 0

    def start_episode(self) -> tuple[int, int]:
        """Where the next episode's rows go: (chunk, file)."""
        if self._bytes >= self.limit:
            self._close()
            self.index.advance()
        return self.index.chunk, self.index.file

    def append(self, columns: dict[str, Any]) -> None:
        """One episode's rows: a value per schema field (arrays for frames, one-item lists for an episode row)."""
        table = self.pa.Table.from_arrays([self._array(columns[f.name], f.type) for f in self.schema],
                                          schema=self.schema)
        self._buffer.append(table)
        self._rows += table.num_rows
        self._bytes += table.nbytes
        if self._rows >= self.rows_per_write:
            self._flush()

    def _array(self, value: Any, kind: Any) -> Any:
        if self.pa.types.is_fixed_size_list(kind):  # a (rows, D) float array, without a Python object per value
            flat = self.pa.array(np.asarray(value, dtype=np.float32).ravel(), self.pa.float32())
            return self.pa.FixedSizeListArray.from_arrays(flat, kind.list_size)
        return self.pa.array(value, type=kind)

    def _flush(self) -> None:
        if not self._buffer:
            return
        if self._writer is None:
            path = self.root / self.pattern.format(chunk_index=self.index.chunk, file_index=self.index.file)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = self.pq.ParquetWriter(path, self.schema, compression="snappy")
        self._writer.write_table(self.pa.concat_tables(self._buffer))
        self._buffer, self._rows = [], 0

    def _close(self) -> None:
        self._flush()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._bytes = 0

    def close(self) -> None:
        self._close()


class _VideoFiles:
    """Frames appended episode by episode to mp4 files, one ffmpeg process per file using every core; a file is closed
    once it passes VIDEO_FILE_MB, between episodes. Returns where each episode's frames are (file and time span)."""

    #: x264 "veryfast": with a keyframe every 2 frames, slower presets bought nothing here (224 px sim frames:
    #: "medium" cost 2.2x the CPU for a 3% larger file and the same error); SVT-AV1 preset 12 as LeRobot records.
    _ENCODERS = {"h264": ("libx264", ["-preset", "veryfast"]), "av1": ("libsvtav1", ["-preset", "12"])}

    def __init__(self, root: Path, key: str, cfg: ExportConfig):
        self.root, self.key, self.cfg = root, key, cfg
        self.index = _ChunkedFiles()
        self._proc: subprocess.Popen | None = None
        self._path: Path | None = None
        self._frames = 0
        self._shape: tuple[int, ...] | None = None

    def _open(self, shape: tuple[int, ...]) -> None:
        import imageio_ffmpeg

        height, width = shape[:2]
        self._path = self.root / VIDEO_PATH.format(video_key=self.key, chunk_index=self.index.chunk,
                                                   file_index=self.index.file)
        self._path.parent.mkdir(parents=True, exist_ok=True)
        encoder, options = self._ENCODERS[self.cfg.codec]
        cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(self.cfg.fps), "-i", "-",
               "-an", "-c:v", encoder, *options, "-pix_fmt", "yuv420p", "-crf", str(self.cfg.crf),
               "-g", str(self.cfg.gop), "-threads", "0", str(self._path)]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        self._frames = 0

    def append(self, frames: np.ndarray) -> dict[str, Any]:
        """Encode an episode's frames (T, H, W, 3) RGB; return its `videos/<key>/...` episode columns."""
        if self._shape is None:
            self._shape = frames.shape[1:]
        if self._proc is not None and self._written_mb() >= VIDEO_FILE_MB:
            self._close()
            self.index.advance()
        if self._proc is None:
            self._open(self._shape)
        start = self._frames
        try:
            self._proc.stdin.write(np.ascontiguousarray(frames, dtype=np.uint8).tobytes())
        except BrokenPipeError:
            self._close()  # raises with ffmpeg's own message
        self._frames += len(frames)
        prefix = f"videos/{self.key}/"
        return {prefix + "chunk_index": self.index.chunk, prefix + "file_index": self.index.file,
                prefix + "from_timestamp": start / self.cfg.fps, prefix + "to_timestamp": self._frames / self.cfg.fps}

    def _written_mb(self) -> float:
        """Size of the file so far (ffmpeg writes as it encodes; it may not have created it yet)."""
        try:
            return self._path.stat().st_size / 2**20
        except FileNotFoundError:
            return 0.0

    def _close(self) -> None:
        if self._proc is None:
            return
        proc, self._proc = self._proc, None
        try:
            proc.stdin.close()
        except BrokenPipeError:
            pass
        err = proc.stderr.read().decode(errors="replace").strip()
        if proc.wait() != 0:
            raise RuntimeError(f"ffmpeg failed writing {self._path}: {err.splitlines()[-1] if err else 'no message'}")

    def close(self) -> None:
        self._close()

    def kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None


def _rgb(episode: Episode, color_order: str = "auto") -> np.ndarray:
    """The episode's frames in RGB: flipped when `color_order` (or, with "auto", its attribute) says BGR."""
    order = str(episode.attrs.get("color_order", COLOR_ORDER) if color_order == "auto" else color_order).upper()
    if order not in ("RGB", "BGR"):
        raise DatasetError(f"episode {episode.name} has color_order {order!r}; expected RGB or BGR")
    return episode.images[..., ::-1] if order == "BGR" else episode.images


def _episode_features(first: Episode, cfg: ExportConfig) -> dict[str, dict[str, Any]]:
    """info.json `features` for episodes shaped like `first`."""
    height, width = first.images.shape[1:3]
    features: dict[str, dict[str, Any]] = {
        cfg.camera_key: {"dtype": "video", "shape": [height, width, 3], "names": ["height", "width", "channels"],
                         "info": {"video.height": height, "video.width": width, "video.codec": cfg.codec,
                                  "video.pix_fmt": "yuv420p", "video.is_depth_map": False, "video.fps": cfg.fps,
                                  "video.channels": 3, "has_audio": False}}}
    for field_name, (key, names) in VECTOR_FEATURES.items():
        value = getattr(first, field_name)
        if value is not None:
            features[key] = {"dtype": "float32", "shape": [int(value.shape[1])], "names": names}
    features[EVENT] = {"dtype": "string", "shape": [1], "names": None}
    features.update({k: {"dtype": dtype, "shape": [1], "names": None} for k, dtype in _INDEX_FEATURES.items()})
    return features


def _data_schema(features: dict[str, dict[str, Any]]) -> Any:
    pa, _ = _arrow()
    fields = []
    for key, ft in features.items():
        if ft["dtype"] == "video":
            continue
        if ft["dtype"] == "string":
            fields.append(pa.field(key, pa.string()))
        elif ft["shape"] == [1]:
            fields.append(pa.field(key, pa.from_numpy_dtype(np.dtype(ft["dtype"]))))
        else:
            fields.append(pa.field(key, pa.list_(pa.float32(), ft["shape"][0])))
    return pa.schema(fields)


def _episodes_schema(features: dict[str, dict[str, Any]], camera_key: str) -> Any:
    pa, _ = _arrow()
    types = {"string": pa.string(), "int64": pa.int64(), "bool": pa.bool_()}
    fields = [pa.field("episode_index", pa.int64()), pa.field("tasks", pa.list_(pa.string())),
              pa.field("length", pa.int64()), pa.field("data/chunk_index", pa.int64()),
              pa.field("data/file_index", pa.int64()), pa.field("dataset_from_index", pa.int64()),
              pa.field("dataset_to_index", pa.int64())]
    prefix = f"videos/{camera_key}/"
    fields += [pa.field(prefix + "chunk_index", pa.int64()), pa.field(prefix + "file_index", pa.int64()),
               pa.field(prefix + "from_timestamp", pa.float64()), pa.field(prefix + "to_timestamp", pa.float64()),
               pa.field("meta/episodes/chunk_index", pa.int64()), pa.field("meta/episodes/file_index", pa.int64())]
    fields += [pa.field(column, types[kind]) for column, kind in EPISODE_FIELDS.values()]
    fields.append(pa.field(ATTRS_COLUMN, pa.string()))
    for key, ft in features.items():
        if ft["dtype"] == "string":
            continue
        nested = pa.list_(pa.list_(pa.list_(pa.float64()))) if ft["dtype"] == "video" else pa.list_(pa.float64())
        for stat in ("min", "max", "mean", "std", *_quantile_names()):
            fields.append(pa.field(f"stats/{key}/{stat}", nested))
        fields.append(pa.field(f"stats/{key}/count", pa.list_(pa.int64())))
    return pa.schema(fields)


def _check_like_first(episode: Episode, first: Episode) -> None:
    if episode.images.shape[1:] != first.images.shape[1:]:
        raise DatasetError(f"episode {episode.name} has {episode.images.shape[2]}x{episode.images.shape[1]} images, "
                           f"the first {first.images.shape[2]}x{first.images.shape[1]}; one video feature needs one "
                           "size: export episodes of one camera size together")
    for field_name in VECTOR_FEATURES:
        mine, theirs = getattr(episode, field_name), getattr(first, field_name)
        if (mine is None) != (theirs is None) or mine is not None and mine.shape[1:] != theirs.shape[1:]:
            raise DatasetError(f"episode {episode.name} {'lacks' if mine is None else 'has'} `{field_name}` "
                               f"{'that' if mine is None else 'unlike'} the first episode; export episodes with the "
                               "same datasets together")


def _read(path: Path) -> Episode:
    try:
        return read_episode(path)
    except FileNotFoundError as err:
        if isinstance(err, DatasetError):
            raise
        raise DatasetError(f"{path} is listed in the dataset but missing; restore it or remove the dataset's "
                           "dataset.json so the folder is scanned instead") from None


def _paired_as_lerobot(episode: Episode) -> Episode:
    """LeRobot's `action` at frame t is the action taken from observation t: so are this package's and the real
    collector's files ("capture"); files of earlier releases ("after_move", image t after move t) are re-paired, the
    move made from image t moved to frame t and a stop after the last image, and written as "capture"."""
    if episode.frame_convention == AFTER_MOVE:
        def shifted(values: np.ndarray | None) -> np.ndarray | None:
            return None if values is None else np.concatenate([values[1:], np.zeros_like(values[:1])])
        episode.actions, episode.action_labels = shifted(episode.actions), shifted(episode.action_labels)
        episode.attrs["frame_convention"] = CAPTURE
    return episode


def _load(path: Path, color_order: str = "auto") -> tuple[Episode, dict[str, np.ndarray]]:
    """Read one episode, turn its frames to RGB and take their statistics: the export's CPU work besides encoding."""
    episode = _paired_as_lerobot(_read(path))
    episode.images = np.ascontiguousarray(_rgb(episode, color_order))
    return episode, image_stats(episode.images)


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent owns Ctrl-C and stops the pool


def _loaded(paths: list[Path], workers: int, color_order: str) -> Iterator[tuple[Episode, dict[str, np.ndarray]]]:
    """`_load` of every path, in order; with several workers a bounded window of episodes is read ahead in other
    processes, so memory stays flat however many episodes there are."""
    load = functools.partial(_load, color_order=color_order)
    if workers <= 1:
        yield from map(load, paths)
        return
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_ignore_sigint)
    try:
        todo, pending = iter(paths), deque()
        for path in islice(todo, workers + 2):
            pending.append(pool.submit(load, path))
        while pending:
            result = pending.popleft().result()
            for path in islice(todo, 1):
                pending.append(pool.submit(load, path))
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def export_lerobot(cfg: ExportConfig, progress: bool = True) -> ConversionSummary:
    """Write the HDF5 episodes of `cfg.data` as a LeRobotDataset v3.0 in `cfg.out` (atomically)."""
    pa, _ = _arrow()
    import pandas as pd

    start = time.perf_counter()
    dataset = EpisodeDataset(cfg.data, split="all")
    stage = _Staging(cfg.out, "--out")
    videos: _VideoFiles | None = None
    loaded = _loaded(dataset.paths, cfg.workers or max(1, (os.cpu_count() or 1) // 2), cfg.color_order)
    try:
        first, first_image_stats = next(loaded)
        if first.images.shape[1] % 2 or first.images.shape[2] % 2:
            raise DatasetError(f"images are {first.images.shape[2]}x{first.images.shape[1]}; yuv420p video needs "
                               "even sides: regenerate with an even --image-size")
        features = _episode_features(first, cfg)
        data = _ParquetFiles(stage.path, DATA_PATH, _data_schema(features), DATA_FILE_MB, FRAMES_PER_WRITE)
        episodes = _ParquetFiles(stage.path, EPISODES_PATH, _episodes_schema(features, cfg.camera_key), DATA_FILE_MB,
                                 EPISODES_PER_WRITE)
        videos = _VideoFiles(stage.path, cfg.camera_key, cfg)
        tasks: dict[str, int] = {}
        totals = StatsTotal()
        frames = 0
        with _progress(len(dataset), f"export {cfg.data.name}", progress) as bar:
            for index, path in enumerate(dataset.paths):
                episode, frame_stats = (first, first_image_stats) if index == 0 else next(loaded)
                _check_like_first(episode, first)
                if not episode.instruction:
                    raise DatasetError(f"{path} has an empty language_instruction; LeRobot needs a task sentence "
                                       "per episode: fill it in or leave the episode out")
                task_index = tasks.setdefault(episode.instruction, len(tasks))
                length = episode.num_frames
                columns: dict[str, Any] = {key: getattr(episode, f) for f, (key, _) in VECTOR_FEATURES.items()
                                           if key in features}
                columns[EVENT] = np.asarray(episode.event_types or default_event_types(length), dtype=object)
                columns.update(timestamp=np.arange(length, dtype=np.float32) / np.float32(cfg.fps),
                               frame_index=np.arange(length), episode_index=np.full(length, index),
                               index=frames + np.arange(length), task_index=np.full(length, task_index))
                stats = {key: feature_stats(np.asarray(value, dtype=np.float64).reshape(length, -1))
                         for key, value in columns.items() if key != EVENT}
                stats[cfg.camera_key] = frame_stats
                totals.add(stats)
                data_chunk, data_file = data.start_episode()
                data.append(columns)
                meta_chunk, meta_file = episodes.start_episode()
                row = {"episode_index": [index], "tasks": [[episode.instruction]], "length": [length],
                       "data/chunk_index": [data_chunk], "data/file_index": [data_file],
                       "dataset_from_index": [frames], "dataset_to_index": [frames + length],
                       "meta/episodes/chunk_index": [meta_chunk], "meta/episodes/file_index": [meta_file],
                       **{k: [v] for k, v in videos.append(episode.images).items()},
                       **{column: [getattr(episode, f)] for f, (column, _) in EPISODE_FIELDS.items()},
                       ATTRS_COLUMN: [json.dumps({k: v for k, v in episode.attrs.items()
                                                  if k not in _WRITTEN_BY_WRITER}, default=_json_value)]}
                row.update({f"stats/{key}/{name}": [np.asarray(value).tolist()]
                            for key, s in stats.items() for name, value in s.items()})
                episodes.append(row)
                frames += length
                bar.update(1)
        data.close()
        episodes.close()
        videos.close()
        info = {"codebase_version": CODEBASE_VERSION, "robot_type": cfg.robot_type,
                "total_episodes": len(dataset), "total_frames": frames, "total_tasks": len(tasks),
                "chunks_size": CHUNKS_SIZE, "data_files_size_in_mb": DATA_FILE_MB,
                "video_files_size_in_mb": VIDEO_FILE_MB, "fps": cfg.fps, "splits": {"train": f"0:{len(dataset)}"},
                "data_path": DATA_PATH, "video_path": VIDEO_PATH, "features": features}
        _write_json(stage.path / INFO_PATH, info)
        _write_json(stage.path / STATS_PATH, totals.result())
        pd.DataFrame({"task_index": list(tasks.values())}, index=pd.Index(list(tasks), name="task")) \
            .to_parquet(stage.path / TASKS_PATH)
        stage.commit()
    except BaseException:
        if videos is not None:
            videos.kill()
        loaded.close()  # stops the readers
        stage.discard()
        raise
    return ConversionSummary(cfg.out, len(dataset), frames, len(tasks), time.perf_counter() - start, "exported")


# --- import ------------------------------------------------------------------------------------------------------
class _FrameReader:
    """Sequential frames of one mp4 file (decoded by ffmpeg), read forward; seeking back reopens the file."""

    def __init__(self, path: Path):
        self.path = path
        self._frames: Iterator[bytes] | None = None
        self._position = 0
        self._size: tuple[int, int] = (0, 0)

    def _open(self) -> None:
        import imageio_ffmpeg

        self.close()
        self._frames = imageio_ffmpeg.read_frames(str(self.path), pix_fmt="rgb24")
        self._size = next(self._frames)["size"]
        self._position = 0

    def read(self, start: int, count: int) -> np.ndarray:
        """Frames [start, start + count) as (count, H, W, 3) uint8 RGB."""
        if self._frames is None or start < self._position:
            self._open()
        width, height = self._size
        out = np.empty((count, height, width, 3), np.uint8)
        try:
            while self._position < start:
                next(self._frames)
                self._position += 1
            for i in range(count):
                out[i] = np.frombuffer(next(self._frames), np.uint8).reshape(height, width, 3)
                self._position += 1
        except StopIteration:
            raise DatasetError(f"{self.path} has {self._position} frames but the episode metadata asks for frames "
                               f"{start}..{start + count - 1}; the dataset is incomplete") from None
        return out

    def close(self) -> None:
        if self._frames is not None:
            self._frames.close()
            self._frames = None


def _load_info(root: Path) -> dict[str, Any]:
    path = root / INFO_PATH
    if not root.is_dir():
        raise DatasetError(f"LeRobot dataset folder {root} does not exist; check the path")
    if not path.is_file():
        raise DatasetError(f"{root} has no {INFO_PATH}: not a LeRobotDataset folder")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        version, features = info["codebase_version"], info["features"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise DatasetError(f"{path} is not a valid LeRobot info.json ({type(err).__name__}: {err})") from None
    if version != CODEBASE_VERSION:
        raise DatasetError(f"{root} is a LeRobot {version} dataset; import reads {CODEBASE_VERSION}: convert it "
                           "first with LeRobot's convert_dataset_v21_to_v30")
    if ACTION not in features:
        raise DatasetError(f"{root} has no `{ACTION}` feature; the HDF5 layout needs actions")
    return info


def _camera_key(info: dict[str, Any], camera: str | None) -> str:
    cameras = [k for k, ft in info["features"].items() if ft.get("dtype") in ("video", "image")]
    if not cameras:
        raise DatasetError("the LeRobot dataset has no video or image feature; the HDF5 layout needs images")
    if camera and camera not in cameras:
        raise DatasetError(f"--camera {camera!r} is not a camera of this dataset; choose one of {', '.join(cameras)}")
    return camera or cameras[0]


def _action_index(info: dict[str, Any], chosen: tuple[int, ...]) -> list[int]:
    ft = info["features"][ACTION]
    dims = int(ft["shape"][0])
    if chosen:
        if max(chosen) >= dims or min(chosen) < -dims:
            raise DatasetError(f"--action-index {','.join(map(str, chosen))} is out of range for {dims} action "
                               "entries")
        return list(chosen)
    if dims != 3:
        names = ft.get("names")
        raise DatasetError(f"`action` has {dims} entries ({names or 'unnamed'}); pass --action-index I,J,K naming "
                           "the entries that are linear_x, linear_y, angular_z")
    return [0, 1, 2]


def _read_table(paths: list[Path], what: str) -> Any:
    pa, pq = _arrow()
    if not paths:
        raise DatasetError(f"the LeRobot dataset has no {what} parquet files")
    try:
        return pa.concat_tables([pq.read_table(p) for p in paths], promote_options="default")
    except (pa.ArrowInvalid, OSError) as err:
        raise DatasetError(f"cannot read the {what} parquet files ({str(err).splitlines()[0]}); the dataset is "
                           "corrupt or incomplete") from None


def _episode_from_lerobot(row: dict[str, Any], rows: Any, images: np.ndarray, tasks: list[str],
                          actions_at: list[int], fps: float, features: dict[str, Any]) -> Episode:
    """An `Episode` from one LeRobot episode: its metadata row, its data rows and its frames."""
    task_index = rows["task_index"].to_numpy()
    actions = np.stack(rows[ACTION].to_numpy(zero_copy_only=False)).astype(np.float32)[:, actions_at]
    extras = {}
    for field_name, (key, names) in VECTOR_FEATURES.items():
        if field_name != "actions" and key in features and (names is None or features[key].get("names") == names):
            extras[field_name] = np.stack(rows[key].to_numpy(zero_copy_only=False)).astype(np.float32)
    attrs = json.loads(row[ATTRS_COLUMN]) if row.get(ATTRS_COLUMN) else {
        "total_duration": (len(actions) - 1) / fps, "imported_from": "lerobot"}
    attrs["color_order"] = "RGB"  # LeRobot videos are RGB whatever the HDF5 source was
    fields = {f: row.get(column) for f, (column, _) in EPISODE_FIELDS.items()}
    name = fields.pop("name") or f"episode_lerobot_{row['episode_index']:06d}"
    events = rows[EVENT].to_pylist() if EVENT in rows.column_names else []
    return Episode(images=images, actions=actions, instruction=tasks[int(task_index[0])], name=name,
                   event_types=events, attrs=attrs, **fields, **extras)


def import_lerobot(cfg: ImportConfig, progress: bool = True) -> ConversionSummary:
    """Write the episodes of the LeRobotDataset v3.0 `cfg.lerobot_dir` as HDF5 files in `cfg.out` (atomically)."""
    _arrow()
    import pandas as pd
    import pyarrow.compute as pc
    from PIL import Image

    start = time.perf_counter()
    root = cfg.lerobot_dir
    info = _load_info(root)
    camera = _camera_key(info, cfg.camera)
    actions_at = _action_index(info, cfg.action_index)
    features, fps = info["features"], float(info["fps"])
    try:
        tasks_frame = pd.read_parquet(root / TASKS_PATH)
    except (OSError, ValueError) as err:
        raise DatasetError(f"cannot read {root / TASKS_PATH} ({str(err).splitlines()[0]})") from None
    tasks = [str(t) for t in tasks_frame.sort_values("task_index").index]
    meta = _read_table(sorted((root / "meta/episodes").glob("*/*.parquet")), "meta/episodes")
    meta = meta.select([c for c in meta.column_names if not c.startswith("stats/")]).sort_by("episode_index")
    rows_meta = meta.to_pylist()
    stage = _Staging(cfg.out, "--out")
    readers: dict[Path, _FrameReader] = {}
    data_path: Path | None = None
    table: Any = None
    frames, names = 0, set()
    try:
        with _progress(len(rows_meta), f"import {root.name}", progress) as bar:
            for row in rows_meta:
                path = root / info["data_path"].format(chunk_index=row["data/chunk_index"],
                                                       file_index=row["data/file_index"])
                if path != data_path:  # one data file in memory at a time
                    table, data_path = _read_table([path], str(path.relative_to(root))), path
                rows = table.filter(pc.equal(table["episode_index"], row["episode_index"])).sort_by("frame_index")
                if rows.num_rows != row["length"]:
                    raise DatasetError(f"episode {row['episode_index']} has {rows.num_rows} rows in {path} but length "
                                       f"{row['length']} in its metadata; the dataset is corrupt")
                if features[camera]["dtype"] == "video":
                    prefix = f"videos/{camera}/"
                    video = root / info["video_path"].format(video_key=camera, chunk_index=row[prefix + "chunk_index"],
                                                             file_index=row[prefix + "file_index"])
                    if not video.is_file():
                        raise DatasetError(f"{video} is missing; the dataset is incomplete")
                    reader = readers.setdefault(video, _FrameReader(video))
                    images = reader.read(round(row[prefix + "from_timestamp"] * fps), rows.num_rows)
                else:
                    images = np.stack([np.asarray(Image.open(io.BytesIO(cell["bytes"])).convert("RGB"))
                                       for cell in rows[camera].to_pylist()])
                episode = _episode_from_lerobot(row, rows, images, tasks, actions_at, fps, features)
                if episode.name in names:
                    raise DatasetError(f"two episodes are named {episode.name}; the dataset's episode_name column "
                                       "must be unique")
                names.add(episode.name)
                write_episode(stage.path / f"{episode.name}.h5", episode)
                frames += episode.num_frames
                bar.update(1)
        stage.commit()
    except BaseException:
        stage.discard()
        raise
    finally:
        for reader in readers.values():
            reader.close()
    return ConversionSummary(cfg.out, len(rows_meta), frames, len(tasks), time.perf_counter() - start, "imported")
