"""This package's env as a benchmark of allenai's vla-eval (0.8): any vla-eval model server can be scored on it.

In a vla-eval config: `benchmark: "mobile_vla_sim.eval.vlaeval_benchmark:NavBenchmark"`, `params: {difficulty: easy,
seed: 0, drive: diff, image_size: 224}`, `episodes_per_task: N`. The tasks are (difficulty, side) pairs; episode i
of a task is `mvla-sim eval`'s episode i of that difficulty and side (the same seeded scene, `eval.episodes`), so
results from both harnesses pair episode by episode. Observations follow vla-eval's convention (`images` by camera
name, `task_description`); the server answers `{"actions": ...}` in the env's layout (one action or a chunk, whose
first action is executed).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from mobile_vla_sim.config import build, flatten, parse_choices
from mobile_vla_sim.envs.actions import LAYOUT_DIMS, action_limits
from mobile_vla_sim.envs.config import EnvConfig
from mobile_vla_sim.envs.difficulty import DIFFICULTIES, get_difficulty
from mobile_vla_sim.envs.instructions import TASKS
from mobile_vla_sim.errors import EvalError
from mobile_vla_sim.eval.episodes import scene_seed

try:
    from vla_eval.benchmarks.base import StepBenchmark, StepResult
    from vla_eval.specs import DimSpec
except ImportError as err:  # the adapter is only imported by vla-eval itself, so it is installed
    raise ImportError("mobile_vla_sim.eval.vlaeval_benchmark needs vla-eval: pip install "
                      "'mobile-vla-sim[vlaeval]'") from err

CAMERA = "front"
#: Metrics of each episode's result that vla-eval aggregates (besides success).
METRICS = {"success": "mean", "collision": "mean", "wrong_side": "mean", "distance_to_goal": "mean",
           "path_length": "mean"}


class NavBenchmark(StepBenchmark):
    """Go around the box on the instructed side and reach the bottle; one task per (difficulty, side)."""

    #: PyBullet's TinyRenderer runs on the CPU whatever vla-eval's `render` asks: nothing to configure.
    render_backends: ClassVar[frozenset[str]] = frozenset({"cpu", "gpu"})

    @classmethod
    def configure_render(cls, mode: str) -> dict[str, str]:
        return {}

    def __init__(self, difficulty: str = "all", seed: int = 0, drive: str = "diff", image_size: int = 224,
                 **env: Any) -> None:
        super().__init__()
        self.difficulties = parse_choices(difficulty, tuple(DIFFICULTIES), "difficulty", EvalError)
        self.seed = int(seed)
        self.config = build(EnvConfig, flatten({"drive": drive, "image_size": image_size, **env}, EnvConfig))
        self._env: Any = None
        self._info: dict[str, Any] = {}

    def get_tasks(self) -> list[dict[str, Any]]:
        return [{"name": f"{d}_{side}", "suite": d, "difficulty": d, "side": side}
                for d in self.difficulties for side in TASKS]

    def reset(self, task: dict[str, Any]) -> dict[str, Any]:
        from mobile_vla_sim.envs.nav_env import NavEnv

        if self._env is None:
            self._env = NavEnv(self.config)
        index = int(task.get("episode_idx", 0))
        obs, self._info = self._env.reset(seed=scene_seed(self.seed, task["difficulty"], index),
                                          options={"task": task["side"], "difficulty": task["difficulty"]})
        return obs

    def step(self, action: dict[str, Any]) -> StepResult:
        values = np.asarray(action.get("actions"), dtype=np.float32)
        dims = len(LAYOUT_DIMS[self.config.drive])
        if values.ndim == 2:  # an action chunk: execute its first action
            values = values[0]
        if values.shape != (dims,):
            raise ValueError(f"expected {dims} action values for drive {self.config.drive!r}, got shape "
                             f"{values.shape}")
        obs, reward, terminated, truncated, self._info = self._env.step(values)
        return StepResult(obs=obs, reward=float(reward), done=bool(terminated or truncated), info=self._info)

    def make_obs(self, raw_obs: dict[str, Any], task: dict[str, Any]) -> dict[str, Any]:
        return {"images": {CAMERA: raw_obs["image"]}, "task_description": self._info["instruction"]}

    def get_step_result(self, step_result: StepResult) -> dict[str, Any]:
        info = step_result.info or self._info
        return {"success": bool(info["success"]), "collision": bool(info["collision"]),
                "wrong_side": bool(info["wrong_side"]), "distance_to_goal": float(info["distance_to_goal"]),
                "path_length": float(info["path_length"]), "scenario": info["scenario"]}

    def get_metric_keys(self) -> dict[str, str]:
        return dict(METRICS)

    def get_metadata(self) -> dict[str, Any]:
        """The longest step limit of the chosen difficulties: the env truncates each episode at its own."""
        return {"max_steps": self.config.max_steps or max(get_difficulty(d).max_steps for d in self.difficulties)}

    def get_action_spec(self) -> dict[str, DimSpec]:
        limit = float(np.max(action_limits(self.config.drive, self.config.action_mode)))
        names = ", ".join(("linear_x", "linear_y", "angular_z")[i] for i in LAYOUT_DIMS[self.config.drive])
        return {"actions": DimSpec("actions", len(LAYOUT_DIMS[self.config.drive]), f"{self.config.drive}_velocity",
                                   range=(-limit, limit), description=f"{names}; clipped to the drive's limits")}

    def get_observation_spec(self) -> dict[str, DimSpec]:
        return {CAMERA: DimSpec(CAMERA, 0, "rgb_hwc_uint8"),
                "task_description": DimSpec("task_description", 0, "language")}

    def cleanup(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None
