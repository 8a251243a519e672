"""`EnvConfig`: every knob of `MobileVLA/Nav-v0`, declared once, and `make_env`, the one way jobs build the env.

`generate`, `eval`, `train-rl` and anything later nest this dataclass in their own config, so a knob added here
appears in their `--help`, in YAML config files and in every results file without further code.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from mobile_vla_sim.config import check_knobs, knob
from mobile_vla_sim.envs.actions import LAYOUT_DIMS
from mobile_vla_sim.envs.difficulty import DIFFICULTIES
from mobile_vla_sim.envs.instructions import TASKS, instruction_for
from mobile_vla_sim.errors import ConfigError

ENV_ID = "MobileVLA/Nav-v0"
CONTROLS = ("continuous", "pulse")
#: Camera renderers: PyBullet's TinyRenderer (CPU) and its EGL plugin (OpenGL, fast on a GPU).
RENDERERS = ("tiny", "egl")
#: Largest camera side accepted by default: the real robot's 1280x720 camera fits; raise `--image-size-limit` for more.
MAX_IMAGE_SIZE = 1280


@dataclass(frozen=True)
class EnvConfig:
    """The env's knobs; `task` and `difficulty` are the defaults used when `reset` gets none (jobs pass them per
    episode, so they are not command-line options of generate or eval)."""

    task: str | None = knob(None, "left, right, or None to draw one per episode", choices=TASKS, cli=False)
    difficulty: str = knob("easy", "scene difficulty used when reset() names none", choices=tuple(DIFFICULTIES),
                           cli=False)
    drive: str = knob("diff", "robot base: differential drive (linear_x, angular_z) or holonomic omni "
                      "(linear_x, linear_y, angular_z)", choices=tuple(LAYOUT_DIMS))
    control: str = knob("continuous", "continuous: the robot keeps moving while the frame is taken; pulse: it brakes "
                        "to a stop after each 0.4 s step, as the real stop-and-go robot", choices=CONTROLS)
    image_size: int = knob(224, "camera image side in pixels", min=16)
    image_size_limit: int = knob(MAX_IMAGE_SIZE, "largest --image-size accepted (a guard against typos that would "
                                 "render for minutes per frame)", min=16)
    renderer: str = knob("tiny", "camera renderer: TinyRenderer (CPU) or PyBullet's EGL plugin (OpenGL, fast on a "
                         "GPU; one env per worker); evaluate on the renderer the policy was trained on",
                         choices=RENDERERS)
    max_steps: int | None = knob(None, "step limit per episode [default: the difficulty's]", min=1)
    action_latency: int = knob(0, "steps between an action and its effect (train/deploy mismatch probe)", min=0)
    action_scale: float = knob(1.0, "multiply every action by this before it is executed")
    camera_noise: float = knob(0.0, "std of additive pixel noise on camera images (0-255 scale)", min=0.0)
    instructions: str = knob("bottle", "instruction sentences: a named set or a template containing {side}")

    def __post_init__(self) -> None:
        check_knobs(self)
        if self.image_size > self.image_size_limit:
            raise ConfigError(f"--image-size must be <= {self.image_size_limit} (--image-size-limit), got "
                         f"{self.image_size}; raise --image-size-limit to render larger images")
        try:
            instruction_for("left", self.instructions)
        except ValueError as err:
            raise ConfigError(f"--instructions: {err}")

    def replace(self, **changes) -> EnvConfig:
        return replace(self, **changes)


def make_env(cfg: EnvConfig | None = None, render_mode: str | None = None):
    """`gymnasium.make` of the nav env with `cfg` (Gymnasium's wrappers, checker and registry included)."""
    import gymnasium

    import mobile_vla_sim.envs  # noqa: F401  (registers the id, also in a freshly spawned worker)

    return gymnasium.make(ENV_ID, config=cfg or EnvConfig(), render_mode=render_mode)
