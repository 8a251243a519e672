"""`EnvConfig`: every knob of `MobileVLA/Nav-v0`, declared once, and `make_env`, the one way jobs build the env.

`generate`, `eval`, `train-rl` and anything later nest this dataclass in their own config, so a knob added here
appears in their `--help`, in YAML config files and in every results file without further code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from mobile_vla_sim.config import check_knobs, knob
from mobile_vla_sim.envs.actions import ACTION_MODES, LAYOUT_DIMS
from mobile_vla_sim.envs.look import LookConfig
from mobile_vla_sim.envs.tasks import DEFAULT_FAMILY, FAMILIES, get_family
from mobile_vla_sim.errors import ConfigError

ENV_ID = "MobileVLA/Nav-v0"
CONTROLS = ("continuous", "pulse")
#: Camera renderers: PyBullet's TinyRenderer (CPU) and its EGL plugin (OpenGL, fast on a GPU).
RENDERERS = ("tiny", "egl")
#: Largest camera side accepted by default: the real robot's 1280x720 camera fits; raise `--image-size-limit` for more.
MAX_IMAGE_SIZE = 1280
#: Channel orders a camera can deliver (the real robot's camera gives BGR, as OpenCV does).
COLOR_ORDERS = ("rgb", "bgr")
#: Env knobs that may be left unset (None), and their defaults: the knobs a trained policy records from its training
#: data. Unset, they take the policy's values in eval (a checkpoint is scored on what it was trained on unless asked
#: otherwise), a profile's in generate, else these defaults (`EnvConfig.resolved`).
#: Unset `instructions` resolve to the task family's default set.
ENV_DEFAULTS: dict[str, Any] = {"task_family": DEFAULT_FAMILY, "image_size": 224, "image_width": None,
                                "image_height": None, "drive": "diff", "control": "continuous",
                                "action_mode": "velocity", "camera": "default", "color_order": "rgb",
                                "renderer": "tiny", "instructions": None}
_UNSET = " [default: {}, or as the policy was trained]"


@dataclass(frozen=True)
class CameraSpec:
    """A camera model. The vertical field of view is kept whatever the image aspect, so another aspect than the
    preset's shows a horizontally wider or narrower part of the scene (a crop of the sensor), never a squashed one."""

    vertical_fov: float      # degrees (pinhole: lens distortion is not modelled)
    mount_height: float      # m above the floor
    pitch: float             # rad, negative looks down
    resolution: tuple[int, int] | None  # (width, height) when --image-width/--image-height are not given; None: square


def vertical_fov(diagonal_fov: float, width: int, height: int) -> float:
    """Vertical field of view (degrees) of a pinhole camera with this diagonal field of view and aspect."""
    half = math.tan(math.radians(diagonal_fov) / 2)
    return math.degrees(2 * math.atan(half * height / math.hypot(width, height)))


#: Named cameras (`--camera`). `default`: the square 90 degree camera of earlier releases. `real`: the real robot's
#: camera, with assumed numbers (no calibration was published): 1280x720 (16:9), a wide-angle lens of 120 degrees
#: diagonal (a typical 720p wide-angle USB module; about 113 x 81 degrees horizontal x vertical), mounted 0.35 m high
#: (the middle of the reported 30-40 cm) and pitched 10 degrees down, as the default camera.
CAMERAS: dict[str, CameraSpec] = {
    "default": CameraSpec(vertical_fov=90.0, mount_height=0.35, pitch=-0.17, resolution=None),
    "real": CameraSpec(vertical_fov=vertical_fov(120.0, 1280, 720), mount_height=0.35, pitch=-0.17,
                       resolution=(1280, 720)),
}


@dataclass(frozen=True)
class EnvConfig:
    """The env's knobs; `task` and `difficulty` are the defaults used when `reset` gets none (jobs pass them per
    episode, so they are not command-line options of generate or eval)."""

    task_family: str | None = knob(None, "task family: " + ", ".join(FAMILIES) + ", or package.module:ClassName "
                                   "for your own (a TaskFamily subclass)" + _UNSET.format(DEFAULT_FAMILY))
    task: str | None = knob(None, "one of the family's tasks (left, right, ...), or None to draw one per episode",
                            cli=False)
    difficulty: str = knob("easy", "scene difficulty used when reset() names none", cli=False)
    drive: str | None = knob(None, "robot base: differential drive (linear_x, angular_z) or holonomic omni "
                             "(linear_x, linear_y, angular_z) [default: diff, or as the policy was trained]",
                             choices=tuple(LAYOUT_DIMS))
    control: str | None = knob(None, "continuous: the robot keeps moving while the frame is taken; pulse: it brakes "
                               "to a stop after each 0.4 s step, as the real stop-and-go robot [default: continuous, "
                               "or as the policy was trained]", choices=CONTROLS)
    action_mode: str | None = knob(None, "omni only: velocity (m/s, rad/s) or direction, the real base's "
                                   "move(angle, throttle): (linear_x, linear_y) sets only the direction of travel at "
                                   "--direction-speed (zero stops), the sign of angular_z spins at --spin-rate, and "
                                   "every step is a 0.4 s move then a stop" + _UNSET.format("velocity"),
                                   choices=ACTION_MODES)
    direction_speed: float = knob(0.3, "direction mode: the constant travel speed (m/s); 0.3 m/s (0.12 m per 0.4 s "
                                  "key) is the assumed calibration of the real teleop throttle, which gives episodes "
                                  "of about the real 18 frames", min=0.01, max=2.0)
    spin_rate: float = knob(0.6, "direction mode: the constant turn rate of a rotate command (rad/s)", min=0.01,
                            max=3.0)
    camera: str | None = knob(None, "camera model: default (square, 90 deg vertical FOV, 0.35 m high) or real (the "
                              "real robot's 1280x720 wide-angle camera, 120 deg diagonal, 0.35 m high)"
                              + _UNSET.format("default"), choices=tuple(CAMERAS))
    image_size: int | None = knob(None, "camera image side in pixels (square) unless --image-width/--image-height are "
                                  "given [default: 224, or as the policy was trained]", min=16)
    image_width: int | None = knob(None, "camera image width in pixels [default: the camera's, or --image-size]; "
                                   "given alone, the height follows the camera's aspect", min=16)
    image_height: int | None = knob(None, "camera image height in pixels [default: the camera's, or --image-size]; "
                                    "given alone, the width follows the camera's aspect", min=16)
    color_order: str | None = knob(None, "channel order of camera images: rgb, or bgr as the real camera (and "
                                   "OpenCV) delivers; datasets store and policies receive what the camera gives"
                                   + _UNSET.format("rgb"), choices=COLOR_ORDERS)
    image_size_limit: int = knob(MAX_IMAGE_SIZE, "largest --image-size accepted (a guard against typos that would "
                                 "render for minutes per frame)", min=16)
    renderer: str | None = knob(None, "camera renderer: TinyRenderer (CPU) or PyBullet's EGL plugin (OpenGL, fast "
                                "on a GPU; one env per worker) [default: tiny, or as the policy was trained]",
                                choices=RENDERERS)
    max_steps: int | None = knob(None, "step limit per episode [default: the difficulty's]", min=1)
    action_latency: int = knob(0, "steps between an action and its effect (train/deploy mismatch probe)", min=0)
    action_scale: float = knob(1.0, "multiply every action by this before it is executed")
    camera_noise: float = knob(0.0, "std of additive pixel noise on camera images (0-255 scale)", min=0.0)
    instructions: str | None = knob(None, "instruction sentences: a named set of the task family or a template "
                                    "containing {side} [default: the family's, or as the policy was trained]")
    light_scale: float = knob(1.0, "multiply the scene's ambient and diffuse light by this (lighting shift probe: "
                              "0.5 darker, 1.5 brighter)", min=0.0)
    camera_height_shift: float = knob(0.0, "metres added to the camera mount height (robot-build mismatch probe)")
    camera_pitch_shift: float = knob(0.0, "degrees added to the camera pitch (negative looks further down)")
    extra_distractors: int = knob(0, "extra clutter objects per scene, against the walls past the boxes or behind the "
                                  "bottle, drawn from their own stream: the rest of the scene is unchanged", min=0)
    capture_delay: float | None = knob(None, "seconds into each move at which an extra camera frame is taken and "
                                       "returned as info['capture'] (the frame a real-layout dataset stores with the "
                                       "move); set by generate", min=0.0, max=0.4, cli=False)
    stop_at_goal: bool = knob(False, "success needs a stop command inside the goal circle (the real task: stop in "
                              "front of the bottle); entering it no longer ends the episode, a stop elsewhere "
                              "does not either")
    #: Camera mount, colours, textures, light: every default leaves the scene as sampled (`envs.look`).
    look: LookConfig = field(default_factory=LookConfig)

    def __post_init__(self) -> None:
        check_knobs(self)
        if self.action_mode == "direction" and self.drive not in (None, "omni"):
            raise ConfigError("--action-mode direction needs --drive omni (a differential drive cannot move in any "
                              "direction)")
        sides = (("--image-size", self.image_size), *zip(("--image-width", "--image-height"), self.resolution))
        for name, value in sides:
            if value is not None and value > self.image_size_limit:
                raise ConfigError(f"{name} must be <= {self.image_size_limit} (--image-size-limit), got {value}; "
                                  "raise --image-size-limit to render larger images")
        if self.instructions is not None and self.task_family is not None:  # else checked once resolved
            try:
                get_family(self.task_family).instruction_set(self.instructions)
            except ConfigError as err:
                raise ConfigError(f"--instructions: {err}") from None

    def resolved(self, trained: Mapping[str, Any] | None = None) -> EnvConfig:
        """This config with every unset knob of ENV_DEFAULTS filled: from `trained` (a policy's training env), else
        its default. What the env, generate and results use; a resolved config comes back unchanged."""
        changes = {k: (trained or {}).get(k, default) for k, default in ENV_DEFAULTS.items() if getattr(self, k) is None}
        if "instructions" in changes and changes["instructions"] is None:
            changes["instructions"] = get_family(changes.get("task_family") or self.task_family).default_instructions
        changes = {k: v for k, v in changes.items() if v is not None}
        return replace(self, **changes) if changes else self

    @property
    def brakes(self) -> bool:
        """Whether every step ends braking to a stop (pulse control, and the real base's direction mode)."""
        return self.control == "pulse" or self.action_mode == "direction"

    @property
    def camera_spec(self) -> CameraSpec:
        """The named camera with the look's mount and field of view."""
        return self.look.camera(CAMERAS[self.camera or ENV_DEFAULTS["camera"]])

    @property
    def resolution(self) -> tuple[int, int]:
        """Camera (width, height): the explicit sizes, else the camera's own, else the --image-size square."""
        side = self.image_size or ENV_DEFAULTS["image_size"]
        width, height = self.camera_spec.resolution or (side, side)
        if self.image_width and self.image_height:
            return self.image_width, self.image_height
        if self.image_width:
            return self.image_width, max(16, round(self.image_width * height / width))
        if self.image_height:
            return max(16, round(self.image_height * width / height)), self.image_height
        return width, height


def make_env(cfg: EnvConfig | None = None, render_mode: str | None = None):
    """`gymnasium.make` of the nav env with `cfg` (Gymnasium's wrappers, checker and registry included)."""
    import gymnasium

    import mobile_vla_sim.envs  # noqa: F401  (registers the id, also in a freshly spawned worker)

    return gymnasium.make(ENV_ID, config=(cfg or EnvConfig()).resolved(), render_mode=render_mode)
