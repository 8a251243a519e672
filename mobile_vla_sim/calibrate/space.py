"""The knobs a calibration fits, their bounds, and the map between a search point and a `LookConfig`.

The search moves the camera (height, pitch, field of view), the light and the textures; the colours are not searched
but solved for every candidate (`calibrate.colours`), since the picture is linear in them. A point is a vector `u` in
[0, 1]^n, one coordinate per fitted scalar, plus one option per fitted texture.

The camera pitch is searched as the horizon's height in the frame, `tan(-pitch) / tan(fov / 2)` (0: the horizon
through the centre, 1: at the top edge), which decouples it from the field of view (`BOUNDS`).

The light: TinyRenderer multiplies a surface's colour by `ambient + diffuse * cos(angle to the light)`, so a brighter
light and brighter colours are the same picture. The fit keeps the light's total (ambient + diffuse) at the env's and
fits its ambient share, which shows as the contrast between surfaces facing the light and surfaces facing away (the
two walls, a box's top and front); the colours carry the overall level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from mobile_vla_sim.envs.config import CameraSpec
from mobile_vla_sim.envs.look import COLOR_BASES, NONE, TEXTURE_CHOICES, LookConfig
from mobile_vla_sim.envs.scenario import FLOOR_TEXTURES, LIGHT_AMBIENT, LIGHT_DIFFUSE, WALL_TEXTURES

#: Fitted scalars and their units.
UNITS = {"camera_pitch": "deg", "camera_height": "m", "camera_fov": "deg", "light": "ambient share"}
#: Bounds of each scalar's search coordinate, wide around the real robot's reported camera (30-40 cm high,
#: wide-angle, looking slightly down). The pitch is searched as the horizon's height in the frame (module doc):
#: pitch and field of view trade off along a narrow diagonal valley (more down-tilt with a wider view puts the floor
#: where it was), a line of constant horizon, so with the horizon as the coordinate the valley lies along an axis.
BOUNDS = {"camera_pitch": (-0.3, 1.2), "camera_height": (0.15, 0.70), "camera_fov": (40.0, 120.0),
          "light": (0.1, 1.0)}
COLORS = tuple(COLOR_BASES)                                   # floor_rgb, wall_rgb, box_rgb, bottle_rgb: solved
TEXTURES = tuple(f"{s}_texture" for s in TEXTURE_CHOICES)     # floor_texture, ..., bottle_texture: searched
FIT_KNOBS = (*UNITS, *COLORS, *TEXTURES)
#: Decimals a fitted value is written with (the written file is what the report's "after" distance measures).
DECIMALS = {"camera_height": 3, "camera_pitch": 2, "camera_fov": 2, "light": 3, "rgb": 3}
#: The plain look's textures (what a jitter-free scene draws).
PLAIN_TEXTURES = {"floor_texture": FLOOR_TEXTURES[0].removesuffix(".png"),
                  "wall_texture": (WALL_TEXTURES[0] or NONE).removesuffix(".png"), "box_texture": NONE,
                  "bottle_texture": NONE}


@dataclass(frozen=True)
class Point:
    """A search point: normalised scalars `u` (one per `Space.dims` entry) and one option per `Space.choices`."""

    u: tuple[float, ...]
    options: tuple[str, ...]


class Space:
    """The fitted knobs (`fit`) around a base look; knobs not fitted keep the base look's values."""

    def __init__(self, fit: tuple[str, ...], base: LookConfig, camera: CameraSpec):
        self.base = base
        self.dims = [k for k in UNITS if k in fit]
        self.choices = [k for k in TEXTURES if k in fit]
        self.colors = [k for k in COLORS if k in fit]
        v = base.values
        ambient, diffuse = _or(v["light_ambient"], LIGHT_AMBIENT), _or(v["light_diffuse"], LIGHT_DIFFUSE)
        self.light_total = ambient + diffuse
        #: Every fittable knob's value in the base look (colours: the jitter-free ones the look moves).
        self.start_values: dict[str, Any] = {
            "camera_height": _or(v["camera_height"], camera.mount_height),
            "camera_pitch": _or(v["camera_pitch"], math.degrees(camera.pitch)),
            "camera_fov": _or(v["camera_fov"], camera.vertical_fov),
            "light": ambient / self.light_total,
            **{k: tuple(float(c) for c in _or(v[k], COLOR_BASES[k])) for k in COLORS},
            **{k: _or(v[k], PLAIN_TEXTURES[k]) for k in TEXTURES},
        }

    def coordinate(self, point: Point, dim: int) -> float:
        lo, hi = BOUNDS[self.dims[dim]]
        return lo + point.u[dim] * (hi - lo)

    def scalars(self, point: Point) -> dict[str, float]:
        """Fitted scalar knob -> value at `point` (the pitch from the horizon and the field of view)."""
        out = {name: self.coordinate(point, i) for i, name in enumerate(self.dims)}
        if "camera_pitch" in out:
            fov = out.get("camera_fov", self.start_values["camera_fov"])
            out["camera_pitch"] = -math.degrees(math.atan(out["camera_pitch"] * math.tan(math.radians(fov / 2))))
        return out

    def start(self) -> Point:
        """The base look as a point (values outside the bounds are clipped)."""
        v = dict(self.start_values)
        v["camera_pitch"] = math.tan(math.radians(-v["camera_pitch"])) / math.tan(math.radians(v["camera_fov"] / 2))
        u = []
        for i, name in enumerate(self.dims):
            lo, hi = BOUNDS[name]
            u.append(float(min(1.0, max(0.0, (v[name] - lo) / (hi - lo)))))
        return Point(tuple(u), tuple(self.start_values[k] for k in self.choices))

    def options(self, choice: int) -> tuple[str, ...]:
        return TEXTURE_CHOICES[self.choices[choice].removesuffix("_texture")]

    def values(self, point: Point, colors: dict[str, tuple[float, ...]] | None = None,
               rounded: bool = False) -> dict[str, Any]:
        """Fitted knob -> value at `point` with solved `colors` (default: the base look's); `rounded`: as written to
        the config file."""
        digits = (lambda name: DECIMALS.get(name, DECIMALS["rgb"])) if rounded else (lambda name: None)
        out: dict[str, Any] = {name: _round(x, digits(name)) for name, x in self.scalars(point).items()}
        colors = colors or {}
        out.update({k: tuple(_round(float(c), digits(k)) for c in colors.get(k, self.start_values[k]))
                    for k in self.colors})
        out.update(zip(self.choices, point.options))
        return out

    def look(self, point: Point, colors: dict[str, tuple[float, ...]] | None = None,
             rounded: bool = False) -> LookConfig:
        """The base look with the fitted knobs at `point` and `colors`."""
        values = self.values(point, colors, rounded)
        changes = {k: v for k, v in values.items() if k != "light"}
        if "light" in values:
            ambient = _round(values["light"] * self.light_total, 4 if rounded else None)
            changes["light_ambient"] = ambient
            changes["light_diffuse"] = _round(self.light_total - ambient, 4 if rounded else None)
        return replace(self.base, **changes)


def _or(value, default):
    return default if value is None else value


def _round(x: float, digits: int | None) -> float:
    return x if digits is None else round(x, digits)
