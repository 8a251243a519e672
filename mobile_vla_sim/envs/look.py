"""`LookConfig`: what the scene looks like to the camera (camera mount, colours, textures, light), one nested config.

`EnvConfig.look` holds it; `LookConfig.apply` sets it on every sampled scene and `LookConfig.camera` on the camera
model, the only two places it acts. Every knob defaults to "as today" (None, the `plain` preset), which leaves each
sampled value, and so every pixel, unchanged. `mvla-sim calibrate` fits these knobs to a lab's real frames and writes
them as a config file; the `lab` preset is a more realistic look built from the project's own textures
(`scripts/make_look_textures.py`).

Colours and light are those of a scene without jitter (an easy scene): a set colour moves the sampled one by the same
amount, so medium and hard scenes keep their per-episode colour and light jitter around the new look. Textures and
the camera are set outright (a texture set here replaces the texture the hard difficulty would draw).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import numpy as np

from mobile_vla_sim.config import check_knobs, knob, option_name
from mobile_vla_sim.envs.scenario import (BOTTLE_RGB, BOX_RGB, FLOOR_RGB, FLOOR_TEXTURES, LIGHT_AMBIENT, LIGHT_DIFFUSE,
                                          WALL_RGB, WALL_TEXTURES, Scenario)
from mobile_vla_sim.errors import ConfigError

#: A camera model (`envs.config.CameraSpec`, which imports this module).
Camera = TypeVar("Camera")

NONE = "none"
#: Texture names a look may set (files `assets/textures/<name>.png`; `none`: a plain colour).
TEXTURE_CHOICES: dict[str, tuple[str, ...]] = {
    "floor": (*(t.removesuffix(".png") for t in FLOOR_TEXTURES), "lab_floor"),
    "wall": (NONE, *(t.removesuffix(".png") for t in WALL_TEXTURES if t), "lab_wall"),
    "box": (NONE, "cardboard"),
    "bottle": (NONE, "bottle_label"),
}
#: Named looks (`--look-preset`); explicit knobs override a preset's values. `lab`: the real corridor as the real
#: project describes it: tiled grey floor, white walls with a skirting board, a cardboard box, a labelled dark bottle
#: (PyBullet multiplies a texture by the body's colour, so the bottle is white and its texture brings the dark PET).
PRESETS: dict[str, dict[str, Any]] = {
    "plain": {},
    "lab": {"floor_texture": "lab_floor", "wall_texture": "lab_wall", "box_texture": "cardboard",
            "bottle_texture": "bottle_label", "bottle_rgb": (1.0, 1.0, 1.0)},
}
#: Colour knobs and the jitter-free colour each moves.
COLOR_BASES = {"floor_rgb": FLOOR_RGB, "wall_rgb": WALL_RGB, "box_rgb": BOX_RGB, "bottle_rgb": np.array(BOTTLE_RGB)}

_EASY = "of a scene without jitter (an easy scene; medium and hard keep their jitter around it)"


def _color(what: str) -> Any:
    return knob(None, f"{what} colour r,g,b in 0..1 {_EASY} [default: as sampled]")


def _texture(surface: str, extra: str = "") -> Any:
    return knob(None, f"{surface} texture{extra} [default: as sampled, or the preset's]",
                choices=TEXTURE_CHOICES[surface])


@dataclass(frozen=True)
class LookConfig:
    """Camera mount and scene appearance; None keeps what the camera preset and the scene sampler give."""

    look_preset: str = knob("plain", "scene look: plain (untextured primitives, as sampled) or lab (tiled grey "
                            "floor, white walls with a skirting board, cardboard box, labelled bottle)",
                            choices=tuple(PRESETS))
    camera_height: float | None = knob(None, "camera mount height above the floor (m) [default: the camera's, "
                                       "0.35]", min=0.05, max=2.0)
    camera_pitch: float | None = knob(None, "camera pitch (degrees, negative looks down) [default: the camera's, "
                                      "-9.7]", min=-80.0, max=80.0)
    camera_fov: float | None = knob(None, "camera vertical field of view (degrees) [default: the camera's]",
                                    min=10.0, max=160.0)
    floor_rgb: tuple[float, ...] | None = _color("floor (a tint on its texture)")
    wall_rgb: tuple[float, ...] | None = _color("wall")
    box_rgb: tuple[float, ...] | None = _color("box")
    bottle_rgb: tuple[float, ...] | None = _color("bottle (target)")
    floor_texture: str | None = _texture("floor")
    wall_texture: str | None = _texture("wall", " (none: plain)")
    box_texture: str | None = _texture("box", " (none: plain)")
    bottle_texture: str | None = _texture("bottle", " (none: plain)")
    light_ambient: float | None = knob(None, f"ambient light coefficient {_EASY} [default: as sampled, 0.6]",
                                       min=0.0, max=2.0)
    light_diffuse: float | None = knob(None, f"diffuse (directional) light coefficient {_EASY} [default: as "
                                       "sampled, 0.4]", min=0.0, max=2.0)

    def __post_init__(self) -> None:
        for name in COLOR_BASES:
            value = getattr(self, name)
            if value is None:
                continue
            rgb = tuple(float(v) for v in value)
            # TinyRenderer wraps colour channels above 1 around to black: refuse them here.
            if len(rgb) != 3 or not all(0.0 <= v <= 1.0 for v in rgb):
                raise ConfigError(f"{option_name(name)} must be three numbers r,g,b in 0..1, got {value!r}")
            object.__setattr__(self, name, rgb)
        check_knobs(self)

    @property
    def values(self) -> dict[str, Any]:
        """The set knobs: the preset's, then the explicit ones over them (None: not set)."""
        explicit = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "look_preset"}
        return {**explicit, **PRESETS[self.look_preset], **{k: v for k, v in explicit.items() if v is not None}}

    def camera(self, spec: Camera) -> Camera:
        """`spec` with the mount height, pitch and field of view this look sets."""
        v = self.values
        changes = {"mount_height": v["camera_height"],
                   "pitch": None if v["camera_pitch"] is None else math.radians(v["camera_pitch"]),
                   "vertical_fov": v["camera_fov"]}
        return replace(spec, **{k: x for k, x in changes.items() if x is not None})

    def apply(self, s: Scenario) -> Scenario:
        """Scene `s` in this look: colours and light moved (per-episode jitter kept), textures replaced."""
        v = self.values
        changes: dict[str, Any] = {}
        for name in ("floor_rgb", "wall_rgb", "bottle_rgb"):
            if v[name] is not None:
                changes[name] = _moved(getattr(s, name), COLOR_BASES[name], v[name])
        if v["box_rgb"] is not None:
            changes["boxes"] = tuple(replace(b, rgb=_moved(b.rgb, BOX_RGB, v["box_rgb"])) for b in s.boxes)
        for name, base in (("light_ambient", LIGHT_AMBIENT), ("light_diffuse", LIGHT_DIFFUSE)):
            if v[name] is not None:
                changes[name] = max(0.0, v[name] + (getattr(s, name) - base))
        for surface in TEXTURE_CHOICES:
            name = f"{surface}_texture"
            if v[name] is not None:
                changes[name] = texture_file(v[name])
        return replace(s, **changes) if changes else s


def jitter(s: Scenario) -> dict[str, list[np.ndarray]]:
    """How far each colour of sampled scene `s` is from the jitter-free one a look moves (`COLOR_BASES`): per colour
    knob, one offset per box for `box_rgb`, else one. A look's colour `v` renders as `clip(v + offset)`."""
    out = {name: [np.asarray(getattr(s, name)) - COLOR_BASES[name]] for name in ("floor_rgb", "wall_rgb",
                                                                                   "bottle_rgb")}
    out["box_rgb"] = [np.asarray(b.rgb) - BOX_RGB for b in s.boxes]
    return out


def texture_file(name: str) -> str | None:
    """The texture file of a look's texture name (None for `none`)."""
    return None if name == NONE else f"{name}.png"


def _moved(sampled, base, value) -> tuple[float, float, float]:
    """`value` plus the sampled colour's jitter (its offset from the jitter-free `base`), in 0..1."""
    return tuple(float(c) for c in np.clip(np.asarray(value) + (np.asarray(sampled) - base), 0.0, 1.0))
