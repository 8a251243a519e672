"""Rollout videos: the robot camera beside a top-down map with the path so far, with text drawn on.

Frames are composed with PIL (cheap, no GUI) in the rollout worker and written as H.264 mp4 with imageio/ffmpeg.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mobile_vla_sim.errors import OutputError
from mobile_vla_sim.io import AtomicFile, atomic_write

PANEL = 192  # pixels per square panel; the frame is 2 panels wide plus a text banner, multiples of 16
BANNER = 64
BOX_HALF = 0.2  # half-size drawn for a box given only as (x, y)
#: Which evaluation made each video of a folder (file name -> `eval.run.evaluation_id`).
VIDEO_OWNERS = ".videos.json"


def claim_videos(video_dir: str | Path, paths: Iterable[str], owner: str) -> None:
    """Record evaluation `owner` as the maker of the videos at `paths`, or refuse with a one-line `OutputError` when
    one of them exists and another evaluation (or an unknown one) made it: videos are finished work too."""
    video_dir = Path(video_dir)
    record = video_dir / VIDEO_OWNERS
    try:
        owners = json.loads(record.read_text(encoding="utf-8")) if record.is_file() else {}
    except (OSError, ValueError):
        owners = {}
    owners = owners if isinstance(owners, dict) else {}
    names = [Path(p).name for p in paths]
    taken = [n for n in names if (video_dir / n).exists() and owners.get(n) != owner]
    if taken:
        more = f" and {len(taken) - 1} more" if len(taken) > 1 else ""
        raise OutputError(f"--video-dir {video_dir} already holds {taken[0]}{more} of another evaluation; choose "
                          "another --video-dir, or delete those videos to replace them")
    try:
        atomic_write(record, json.dumps({**owners, **{n: owner for n in names}}, indent=1, sort_keys=True))
    except OSError as err:
        raise OutputError(f"--video-dir {video_dir} is not writable ({err.strerror or err}); choose another "
                          "--video-dir") from None


class TopDownMap:
    """Maps world (x, y) metres to map pixels so that start, goal and obstacles all fit, +x up, +y left."""

    def __init__(self, points: Sequence[Sequence[float]], size: int = PANEL, margin: float = 0.6):
        pts = np.asarray(points, dtype=float).reshape(-1, 2)
        lo, hi = pts.min(0) - margin, pts.max(0) + margin
        self.centre = (lo + hi) / 2
        self.scale = (size - 8) / float(max(hi - lo))
        self.size = size

    def px(self, x: float, y: float) -> tuple[float, float]:
        """World → pixel: x (forward) points up the image, y (left) points left."""
        return (self.size / 2 - (y - self.centre[1]) * self.scale, self.size / 2 - (x - self.centre[0]) * self.scale)

    def draw(self, path: Sequence[Sequence[float]], obstacles: Sequence[Sequence[float]],
             goal: Sequence[float]) -> Image.Image:
        img = Image.new("RGB", (self.size, self.size), (235, 235, 230))
        d = ImageDraw.Draw(img)
        for ox, oy, *half in obstacles:
            hx, hy = half[:2] if len(half) >= 2 else (BOX_HALF, BOX_HALF)
            (x0, y0), (x1, y1) = self.px(ox + hx, oy + hy), self.px(ox - hx, oy - hy)
            d.rectangle([x0, y0, x1, y1], fill=(140, 140, 140), outline=(90, 90, 90))
        if len(goal) >= 2:
            gx, gy = self.px(goal[0], goal[1])
            d.ellipse([gx - 5, gy - 5, gx + 5, gy + 5], fill=(40, 160, 60))
        if len(path) > 1:
            d.line([self.px(p[0], p[1]) for p in path], fill=(30, 90, 200), width=2)
        if len(path):
            x, y, yaw = path[-1][:3]
            tip = self.px(x + 0.25 * np.cos(yaw), y + 0.25 * np.sin(yaw))
            base = [self.px(x + 0.12 * np.cos(yaw + s), y + 0.12 * np.sin(yaw + s)) for s in (2.5, -2.5)]
            d.polygon([tip, *base], fill=(200, 40, 40))
        return img


def compose_frame(camera: np.ndarray, topdown: Image.Image, lines: Sequence[str]) -> np.ndarray:
    """Camera (upscaled, nearest) | map, with up to three lines of text below: uint8 (256, 384, 3)."""
    frame = Image.new("RGB", (2 * PANEL, PANEL + BANNER), (20, 20, 20))
    frame.paste(Image.fromarray(np.asarray(camera, dtype=np.uint8)).resize((PANEL, PANEL), Image.NEAREST), (0, 0))
    frame.paste(topdown.resize((PANEL, PANEL)), (PANEL, 0))
    d = ImageDraw.Draw(frame)
    font = ImageFont.load_default()
    for i, line in enumerate(lines[:4]):
        d.text((4, PANEL + 2 + 15 * i), line, fill=(255, 255, 255), font=font)
    return np.asarray(frame)


class EpisodeVideo:
    """Writes one episode's mp4 frame by frame; the file appears (atomically) only when the episode ends."""

    def __init__(self, path: str | Path, instruction: str, obstacles: Sequence[Sequence[float]],
                 goal: Sequence[float], start: Sequence[float], fps: float = 5.0):
        import imageio.v2 as imageio

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = AtomicFile(self.path, keep_suffix=True)  # ffmpeg picks the container from the suffix
        self._writer = imageio.get_writer(self._file.tmp, fps=fps, codec="libx264", macro_block_size=16,
                                          ffmpeg_log_level="error")
        points = [start[:2], *[o[:2] for o in obstacles]] + ([goal[:2]] if len(goal) else [])
        self._map = TopDownMap(points)
        self._instruction = textwrap.wrap(instruction, width=60)[:2]
        self._obstacles, self._goal = obstacles, goal

    def add(self, camera: np.ndarray, path: Sequence[Sequence[float]], step: int, action: np.ndarray | None,
            status: str = "") -> None:
        """Append a frame: camera view, map with `path` so far, instruction, step, action and status."""
        act = "start" if action is None else "action " + " ".join(f"{a:+.2f}" for a in np.asarray(action).ravel())
        lines = [*self._instruction, f"step {step}  {act}  {status}".rstrip()]
        self._writer.append_data(compose_frame(camera, self._map.draw(path, self._obstacles, self._goal), lines))

    def close(self) -> Path:
        self._writer.close()
        return self._file.commit()

    def abort(self) -> None:
        """Drop an unfinished video (interrupted episode)."""
        self._writer.close()
        self._file.discard()
