"""Every randomisation knob of the scene, in one table: one frozen dataclass per difficulty level."""

from __future__ import annotations

from dataclasses import dataclass, field, fields


def _knob(doc: str):
    """A dataclass field documented for the README table."""
    return field(metadata={"doc": doc})


@dataclass(frozen=True)
class Difficulty:
    """Ranges are (low, high) sampled uniformly; tuples of names are sampled as choices."""

    name: str
    n_boxes: int = _knob("boxes to go around, staggered along the corridor")
    box_half_x: tuple[float, float] = _knob("box half depth (m, along the corridor)")
    box_half_y: tuple[float, float] = _knob("box half width (m, across the corridor)")
    distances: tuple[str, ...] = _knob("obstacle distance classes (see DISTANCE_M)")
    box_lateral: float = _knob("box centre offset from the corridor axis, +- (m)")
    start_xy_noise: float = _knob("start position noise, +- (m)")
    start_yaw_noise: float = _knob("start heading noise, +- (rad)")
    side_gap: tuple[float, float] = _knob("clearance: free width between the widest box edge and each wall (m)")
    n_distractors: tuple[int, int] = _knob("clutter objects behind the bottle (collisions count)")
    color_jitter: float = _knob("+- change of floor/wall/box colours (0 = fixed look)")
    random_textures: bool = _knob("draw floor/wall textures from the texture set")
    light_jitter: float = _knob("+- change of light direction and ambient/diffuse strength")
    camera_height_noise: float = _knob("+- camera height change (m)")
    camera_angle_noise: float = _knob("+- camera pitch/yaw change (rad)")
    actuation_noise: float = _knob("relative std of the executed velocity per step")
    max_steps: int = _knob("default step limit (0.4 s control period)")

    @property
    def variant(self) -> str:
        """The real data's `core|variant` tag: fixed-look scenes are `core`."""
        return "core" if self.color_jitter == 0 and not self.random_textures else "variant"


#: Distance (m) from the nominal start to the first box centre for each distance class.
DISTANCE_M = {"close": 0.85, "medium": 1.1, "far": 1.4}

DIFFICULTIES: dict[str, Difficulty] = {
    "easy": Difficulty(
        name="easy", n_boxes=1, box_half_x=(0.15, 0.15), box_half_y=(0.2, 0.2), distances=("medium",),
        box_lateral=0.02, start_xy_noise=0.03, start_yaw_noise=0.05, side_gap=(1.0, 1.0), n_distractors=(0, 0),
        color_jitter=0.0, random_textures=False, light_jitter=0.0, camera_height_noise=0.0, camera_angle_noise=0.0,
        actuation_noise=0.0, max_steps=40),
    "medium": Difficulty(
        name="medium", n_boxes=1, box_half_x=(0.12, 0.22), box_half_y=(0.15, 0.3), distances=("close", "medium", "far"),
        box_lateral=0.08, start_xy_noise=0.08, start_yaw_noise=0.15, side_gap=(0.8, 1.0), n_distractors=(0, 1),
        color_jitter=0.08, random_textures=False, light_jitter=0.15, camera_height_noise=0.0, camera_angle_noise=0.0,
        actuation_noise=0.0, max_steps=45),
    "hard": Difficulty(
        name="hard", n_boxes=2, box_half_x=(0.12, 0.22), box_half_y=(0.15, 0.3), distances=("close", "medium", "far"),
        box_lateral=0.12, start_xy_noise=0.15, start_yaw_noise=0.3, side_gap=(0.62, 0.8), n_distractors=(2, 4),
        color_jitter=0.15, random_textures=True, light_jitter=0.4, camera_height_noise=0.03, camera_angle_noise=0.06,
        actuation_noise=0.1, max_steps=60),
}


def get_difficulty(difficulty: str | Difficulty) -> Difficulty:
    """Look a level up by name (a Difficulty passes through), with a clear error for unknown names."""
    if isinstance(difficulty, Difficulty):
        return difficulty
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"unknown difficulty {difficulty!r}: use one of {list(DIFFICULTIES)}")
    return DIFFICULTIES[difficulty]


def difficulty_table_markdown() -> str:
    """The table above as Markdown (one column per level), for the README."""
    levels = list(DIFFICULTIES.values())
    rows = ["| knob | " + " | ".join(d.name for d in levels) + " | meaning |", "|---" * (len(levels) + 2) + "|"]
    for f in fields(Difficulty):
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
