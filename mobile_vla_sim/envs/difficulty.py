"""Difficulty levels: every randomisation knob of a scene, one frozen dataclass per level.

`Difficulty` holds the knobs every task family shares (start noise, clutter, look, camera jitter, actuation noise,
step limit); a family subclasses it with its own layout knobs and keeps its table in its module
(`mobile_vla_sim/envs/tasks/`). Every family names its levels easy, medium and hard.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Mapping

from mobile_vla_sim.moved import moved_name

#: The level names every task family has.
DIFFICULTIES: tuple[str, ...] = ("easy", "medium", "hard")


def doc_field(doc: str):
    """A dataclass field documented for the difficulty table."""
    return field(metadata={"doc": doc})


@dataclass(frozen=True)
class Difficulty:
    """Ranges are (low, high) sampled uniformly; tuples of names are sampled as choices."""

    name: str
    start_xy_noise: float = doc_field("start position noise, +- (m)")
    start_yaw_noise: float = doc_field("start heading noise, +- (rad)")
    n_distractors: tuple[int, int] = doc_field("clutter objects behind the target (collisions count)")
    color_jitter: float = doc_field("+- change of floor/wall/box colours (0 = fixed look)")
    random_textures: bool = doc_field("draw floor/wall textures from the texture set")
    light_jitter: float = doc_field("+- change of light direction and ambient/diffuse strength")
    camera_height_noise: float = doc_field("+- camera height change (m)")
    camera_angle_noise: float = doc_field("+- camera pitch/yaw change (rad)")
    actuation_noise: float = doc_field("relative std of the executed velocity per step")
    max_steps: int = doc_field("default step limit (0.4 s control period)")

    @property
    def variant(self) -> str:
        """The real data's `core|variant` tag: fixed-look scenes are `core`."""
        return "core" if self.color_jitter == 0 and not self.random_textures else "variant"


def difficulty_table_markdown(table: Mapping[str, Difficulty]) -> str:
    """A difficulty table as Markdown (one column per level), for a family's documentation."""
    levels = list(table.values())
    rows = ["| knob | " + " | ".join(d.name for d in levels) + " | meaning |", "|---" * (len(levels) + 2) + "|"]
    for f in fields(levels[0]):
        if f.name != "name":
            values = " | ".join(_fmt(getattr(d, f.name)) for d in levels)
            rows.append(f"| {f.name} | {values} | {f.metadata['doc']} |")
    return "\n".join(rows)


def _fmt(value) -> str:
    if isinstance(value, tuple):
        if len(value) == 2 and value[0] == value[1]:
            return _fmt(value[0])
        numeric = all(isinstance(v, (int, float)) for v in value)
        return "–".join(_fmt(v) for v in value) if numeric else ", ".join(value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def __getattr__(name: str):
    """Names that moved or are gone since the reorganisation (`mobile_vla_sim.moved`)."""
    return moved_name(__name__, name)
