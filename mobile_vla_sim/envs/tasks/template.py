"""A minimal task family to copy: reach a bottle straight ahead, or the one on the left or right.

Copy this file into your own package, rename the class, change what you need, and run it with
`mvla-sim eval --task-family my_package.my_module:MyFamily --policy expert`. Every attribute and method is described
in `mobile_vla_sim.envs.tasks.base.TaskFamily`; what follows is all a family must define. The shared parts of a scene
(start pose, look, clutter, boxes) come from `mobile_vla_sim.envs.scenario`; scenes are plain data, so the env builds
and renders them, the scripted expert plans on them and the dataset writer names them without further code.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np

from mobile_vla_sim.envs.difficulty import Difficulty
from mobile_vla_sim.envs.scenario import Scenario, Target, sample_look, sample_start
from mobile_vla_sim.envs.tasks.base import TaskFamily

_LEVEL = dict(start_xy_noise=0.03, start_yaw_noise=0.05, n_distractors=(0, 0), color_jitter=0.0,
              random_textures=False, light_jitter=0.0, camera_height_noise=0.0, camera_angle_noise=0.0,
              actuation_noise=0.0, max_steps=25)


class Template(TaskFamily):
    name = "template"
    tasks = ("left", "straight", "right")
    difficulties = {name: Difficulty(name=name, **_LEVEL) for name in ("easy", "medium", "hard")}
    instruction_sets = {"plain": {"left": "Go to the bottle on the left", "straight": "Go to the bottle ahead",
                                  "right": "Go to the bottle on the right"}}
    default_instructions = "plain"
    opposite = {"left": "right", "straight": "straight", "right": "left"}
    requires_stop = True
    paired_scenes = False
    labels = ("forward_collapse", "overshoot", "false_stop", "missed_stop", "collision", "out_of_bounds", "timeout")

    def sample_scenario(self, rng: np.random.Generator, difficulty: Difficulty, task: str,
                        instructions: str | None = None) -> Scenario:
        y = {"left": 0.6, "straight": 0.0, "right": -0.6}[task]
        return Scenario(difficulty=difficulty.name, distance="medium", variant=difficulty.variant, boxes=(),
                        target=Target("bottle", 1.6, y), start=sample_start(rng, difficulty), half_width=1.5,
                        distractors=(), **sample_look(rng, difficulty))

    def scenario_name(self, scenario: Scenario, task: str) -> str:
        return f"bottle_{task}"

    def file_name(self, moment: datetime, index: int, task: str, difficulty: str, info: dict[str, Any]) -> str:
        return f"episode_{moment:%Y%m%d_%H%M%S}_{info['scenario']}_{difficulty}_{index:06d}.h5"

    def parse_file_name(self, name: str) -> dict[str, str] | None:
        parts = name.removesuffix(".h5").split("_")
        if len(parts) != 7 or parts[3] != "bottle":
            return None
        return {"side": parts[4], "difficulty": parts[5], "tag": parts[6]}
