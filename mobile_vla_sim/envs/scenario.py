"""A scene as plain data: obstacles, the target object, the corridor and its look; what the env builds and the
expert plans on. Task families draw scenes (`mobile_vla_sim/envs/tasks/`); the parts every family shares (the
look, clutter) are sampled here."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from mobile_vla_sim.envs.difficulty import Difficulty
from mobile_vla_sim.moved import moved_name

#: Robot centre stops this far in front of the target (m); success inside GOAL_RADIUS of that point (a family may
#: set another radius).
GOAL_OFFSET = 0.4
GOAL_RADIUS = 0.25
#: Room behind the start and beyond the target before the robot counts as out of the arena (m).
ARENA_MARGIN = 0.8

FLOOR_TEXTURES = ("tile_grey.png", "tile_beige.png", "tile_small.png", "concrete.png")
WALL_TEXTURES = (None, "plaster.png")
#: The look of a scene without jitter (an easy scene); the difficulty's colour and light jitter is drawn around these
#: (`envs.look` shifts them, jitter kept).
BOX_RGB = np.array([0.62, 0.60, 0.56])       # grey cardboard
FLOOR_RGB = np.array([1.0, 1.0, 1.0])        # tint applied on top of the tile texture
WALL_RGB = np.array([0.95, 0.95, 0.93])
BOTTLE_RGB = (0.12, 0.1, 0.08)               # dark PET
LIGHT_AMBIENT, LIGHT_DIFFUSE = 0.6, 0.4
_LIGHT_DIR = np.array([0.4, 0.3, 1.0])
#: Extra wall clutter starts this far past the last box's far face (m), where the way around it already turns back
#: towards the bottle, and stands at most this far from its wall (m).
_WALL_CLUTTER_AFTER_BOX, _WALL_CLUTTER_GAP = 0.45, 0.03
#: Extra clutter is this much larger than the difficulty's own (up to 0.3 m wide and 0.6 m high), to stand out.
_EXTRA_CLUTTER_SIZE = 1.5


@dataclass(frozen=True)
class Box:
    """An axis-aligned obstacle box: centre (x, y) on the floor and half extents (m)."""

    x: float
    y: float
    hx: float
    hy: float
    hz: float
    rgb: tuple[float, float, float]


@dataclass(frozen=True)
class Distractor:
    """Clutter (a cylinder or a cube) that counts as an obstacle for collisions."""

    x: float
    y: float
    radius: float
    height: float
    shape: str                      # "cylinder" | "cube"
    rgb: tuple[float, float, float]


#: Target objects the world can build, the real project's (a dark PET bottle with a green cap, a brown pot, a gray
#: basket, a cup), by footprint radius (m); `BulletWorld` builds them. Sizes are assumed, none was published: a 0.5 l
#: bottle, a cooking pot, a laundry basket, a mug.
TARGET_RADIUS = {"bottle": 0.035, "pot": 0.13, "basket": 0.2, "cup": 0.045}
TARGET_KINDS = tuple(TARGET_RADIUS)


@dataclass(frozen=True)
class Target:
    """The object the robot must stop in front of: its kind (`TARGET_KINDS`), floor position (m), and how far before
    its centre (along the corridor) the robot should stop."""

    kind: str
    x: float
    y: float
    stop_distance: float = GOAL_OFFSET


@dataclass(frozen=True)
class Scenario:
    """Everything that makes one episode's scene; the env builds the PyBullet world from it."""

    difficulty: str
    distance: str                    # close | medium | far
    variant: str                     # core | variant
    boxes: tuple[Box, ...]
    target: Target
    start: tuple[float, float, float]  # x, y, yaw
    half_width: float                # corridor half width: walls at y = +-half_width
    distractors: tuple[Distractor, ...]
    floor_texture: str
    wall_texture: str | None
    floor_rgb: tuple[float, float, float]
    wall_rgb: tuple[float, float, float]
    light_direction: tuple[float, float, float]
    light_ambient: float
    light_diffuse: float
    camera_height: float             # offset added to the nominal camera height (m)
    camera_pitch: float              # offsets added to the nominal camera angles (rad)
    camera_yaw: float
    decoys: tuple[Target, ...] = ()  # objects of the target's kind that are not the target
    via: tuple[float, float] | None = None  # a point the expert's demonstration passes on its way (m)
    path: str = ""                   # the demonstration's path type, when the family has them
    # Set by a look (`envs.look`), never sampled: the plain look has none of them.
    box_texture: str | None = None
    bottle_rgb: tuple[float, float, float] = BOTTLE_RGB
    bottle_texture: str | None = None

    @property
    def goal(self) -> np.ndarray:
        """Point in front of the target (on the robot's side) where the robot should stop."""
        return np.array([self.target.x - self.target.stop_distance, self.target.y])

    @property
    def x_bounds(self) -> tuple[float, float]:
        """Arena extent along the corridor; outside it the episode ends as out of bounds."""
        return self.start[0] - ARENA_MARGIN, self.target.x + ARENA_MARGIN


def jitter(rng: np.random.Generator, rgb: np.ndarray, amount: float) -> tuple[float, float, float]:
    return tuple(float(c) for c in np.clip(rgb + rng.uniform(-amount, amount, 3), 0.0, 1.0))


def sample_start(rng: np.random.Generator, d: Difficulty, x: float = 0.0, y: float = 0.0) -> tuple[float, float, float]:
    """The start pose near (x, y), facing +x, with the level's position and heading noise."""
    return (float(x + rng.uniform(-d.start_xy_noise, d.start_xy_noise)),
            float(y + rng.uniform(-d.start_xy_noise, d.start_xy_noise)),
            float(rng.uniform(-d.start_yaw_noise, d.start_yaw_noise)))


def sample_distractors(rng: np.random.Generator, d: Difficulty, target: Target, half_width: float
                       ) -> tuple[Distractor, ...]:
    """The level's clutter behind the target."""
    return tuple(_sample_distractor(rng, target, half_width) for _ in range(rng.integers(
        d.n_distractors[0], d.n_distractors[1] + 1)))


def sample_look(rng: np.random.Generator, d: Difficulty) -> dict:
    """The level's look (textures, colours, light) and camera jitter, as `Scenario` fields."""
    light = _LIGHT_DIR + rng.uniform(-d.light_jitter, d.light_jitter, 3) * np.array([2.0, 2.0, 0.5])
    textured = d.random_textures
    return dict(
        floor_texture=str(rng.choice(FLOOR_TEXTURES)) if textured else FLOOR_TEXTURES[0],
        wall_texture=WALL_TEXTURES[rng.integers(len(WALL_TEXTURES))] if textured else None,
        floor_rgb=jitter(rng, FLOOR_RGB - d.color_jitter, d.color_jitter),
        wall_rgb=jitter(rng, WALL_RGB, d.color_jitter),
        light_direction=tuple(float(v) for v in light),
        light_ambient=float(LIGHT_AMBIENT + rng.uniform(-1, 1) * 0.25 * d.light_jitter),
        light_diffuse=float(LIGHT_DIFFUSE + rng.uniform(-1, 1) * 0.25 * d.light_jitter),
        camera_height=float(rng.uniform(-d.camera_height_noise, d.camera_height_noise)),
        camera_pitch=float(rng.uniform(-d.camera_angle_noise, d.camera_angle_noise)),
        camera_yaw=float(rng.uniform(-d.camera_angle_noise, d.camera_angle_noise)),
    )


def sample_box(rng: np.random.Generator, d: Difficulty, x: float, half_x: tuple[float, float],
               half_y: tuple[float, float], lateral: float) -> Box:
    """A grey cardboard box at distance x: half extents from the ranges, its colour jittered, within +-lateral of the
    corridor axis."""
    hx, hy = rng.uniform(*half_x), rng.uniform(*half_y)
    rgb = jitter(rng, BOX_RGB, d.color_jitter)
    return Box(x=float(x), y=float(rng.uniform(-lateral, lateral)), hx=float(hx), hy=float(hy),
               hz=float(rng.uniform(0.11, 0.15)), rgb=rgb)


def with_extra_distractors(scenario: Scenario, n: int, rng: np.random.Generator) -> Scenario:
    """`scenario` plus `n` larger clutter objects drawn from `rng` alone (a stream of their own, so nothing else of
    the scene changes), each, at even odds, against a wall past the last box (beside the way from the last box to
    the target, in view from the start; past the start without boxes) or behind the target as the difficulty's own
    clutter: in view, yet on neither way around the boxes nor in the goal circle."""
    near = scenario.boxes[-1].x + scenario.boxes[-1].hx if scenario.boxes else scenario.start[0]
    wall_x = (near + _WALL_CLUTTER_AFTER_BOX, scenario.target.x + 0.7)
    extra = tuple(_sample_distractor(rng, scenario.target, scenario.half_width,
                                     wall_x if rng.random() < 0.5 else None, _EXTRA_CLUTTER_SIZE) for _ in range(n))
    return replace(scenario, distractors=scenario.distractors + extra)


def _sample_distractor(rng: np.random.Generator, target: Target, half_width: float,
                       wall_x: tuple[float, float] | None = None, size: float = 1.0) -> Distractor:
    """Clutter behind the target, in view for the whole episode but never on either way around the boxes; with
    `wall_x`, against a wall (either side) somewhere along that stretch of the corridor instead. `size` scales
    its footprint and height."""
    radius, height = size * float(rng.uniform(0.05, 0.1)), size * float(rng.uniform(0.1, 0.4))
    if wall_x is None:
        x = rng.uniform(target.x + 0.25, target.x + 0.7)
        y = rng.uniform(-half_width + radius, half_width - radius)
    else:
        x = rng.uniform(*wall_x)
        y = rng.choice((-1.0, 1.0)) * (half_width - radius - rng.uniform(0.0, _WALL_CLUTTER_GAP))
    shape, rgb = str(rng.choice(["cylinder", "cube"])), tuple(float(c) for c in rng.uniform(0.1, 0.9, 3))
    return Distractor(x=float(x), y=float(y), radius=radius, height=height, shape=shape, rgb=rgb)


def __getattr__(name: str):
    """Names that moved or are gone since the reorganisation (`mobile_vla_sim.moved`)."""
    return moved_name(__name__, name)
