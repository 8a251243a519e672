"""`MobileVLA/Nav-v0`: go around the box(es) on the instructed side and stop in front of the bottle."""

from __future__ import annotations

from collections import deque

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from mobile_vla_sim.envs.actions import action_limits, check_drive, to_action3
from mobile_vla_sim.envs.difficulty import get_difficulty
from mobile_vla_sim.envs.geometry import Rect, plan_path, polyline_length
from mobile_vla_sim.envs.instructions import TASKS, check_task, instruction_for
from mobile_vla_sim.envs.scenario import GOAL_RADIUS, Scenario, sample_scenario
from mobile_vla_sim.envs.sim import BRAKE_TIME, CONTROL_PERIOD, ROBOT_HALF_WIDTH, BulletWorld
from mobile_vla_sim.envs.state import STATE_BOUND, STATE_DIM, encode_state

CONTROLS = ("continuous", "pulse")
_RESET_OPTIONS = ("task", "difficulty")
# Reward: progress along the shortest path on the instructed side, a bonus on success, penalties on failures.
_R_SUCCESS, _R_COLLISION, _R_WRONG_SIDE, _R_STEP = 10.0, -5.0, -5.0, -0.01


class NavEnv(gym.Env):
    """Differential-drive (or holonomic) robot in a corridor, seen through its forward camera.

    One step drives for CONTROL_PERIOD (0.4 s). `control="continuous"` keeps moving while the frame is
    taken; `"pulse"` brakes to a stop after the 0.4 s first, as the real stop-and-go robot did.
    The episode ends (terminated) when the robot gets inside the goal radius in front of the bottle (no need
    to stop there), collides, or leaves the arena; it is truncated at `max_steps`. Success = inside the goal
    radius, every box passed on the instructed side, no collision. The instruction is in `info` and
    `self.instruction`, never in the observation (see SPEC §4).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 1.0 / CONTROL_PERIOD}

    def __init__(self, task: str | None = None, difficulty: str = "easy", drive: str = "diff",
                 control: str = "continuous", image_size: int = 224, render_mode: str | None = None,
                 max_steps: int | None = None, renderer: str = "tiny", action_latency: int = 0,
                 action_scale: float = 1.0, camera_noise: float = 0.0, instruction_template: str = "bottle"):
        self.task = None if task is None else check_task(task)
        self.difficulty = get_difficulty(difficulty).name
        self.drive = check_drive(drive)
        if control not in CONTROLS:
            raise ValueError(f"unknown control {control!r}: use one of {CONTROLS}")
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"unknown render_mode {render_mode!r}: use None or 'rgb_array'")
        if int(image_size) < 16:
            raise ValueError(f"image_size must be at least 16 pixels, got {image_size}")
        if max_steps is not None and int(max_steps) < 1:
            raise ValueError(f"max_steps must be a positive number of steps or None, got {max_steps}")
        if int(action_latency) < 0 or not np.isfinite(action_scale) or not 0 <= camera_noise < np.inf:
            raise ValueError("action_latency must be >= 0 steps, action_scale finite, camera_noise >= 0 (0..255 scale)")
        instruction_for("left", instruction_template)  # validate early
        self.control, self.render_mode, self.image_size = control, render_mode, int(image_size)
        self.max_steps_override = None if max_steps is None else int(max_steps)
        self.action_latency, self.action_scale = int(action_latency), float(action_scale)
        self.camera_noise, self.instruction_template = float(camera_noise), instruction_template

        self._limits = action_limits(self.drive)
        self.action_space = spaces.Box(-self._limits, self._limits, dtype=np.float32)
        self.observation_space = spaces.Dict({
            "image": spaces.Box(0, 255, (self.image_size, self.image_size, 3), dtype=np.uint8),
            "state": spaces.Box(-STATE_BOUND, STATE_BOUND, (STATE_DIM,), dtype=np.float32),
        })
        self._world = BulletWorld(self.image_size, renderer, self.drive)
        self.scenario: Scenario | None = None
        self.instruction = ""
        self.episode_task = self.task

    # ---- gymnasium API -----------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = set(options) - set(_RESET_OPTIONS)
        if unknown:
            raise ValueError(f"unknown reset options {sorted(unknown)}: allowed are {list(_RESET_OPTIONS)}")
        if options.get("difficulty") is not None:
            self.difficulty = get_difficulty(options["difficulty"]).name
        # The scene seed is drawn before the task, so the scene never depends on the task.
        scene_seed = int(self.np_random.integers(2**63 - 1))
        task = options.get("task") or self.task or TASKS[int(self.np_random.integers(2))]
        self.episode_task = check_task(task)
        self.instruction = instruction_for(self.episode_task, self.instruction_template)
        self.scenario = sample_scenario(np.random.default_rng(scene_seed), self.difficulty)
        self._world.build(self.scenario)
        self._d = get_difficulty(self.difficulty)
        self.max_steps = self.max_steps_override or self._d.max_steps
        self._rects = [Rect(b.x, b.y, b.hx, b.hy).inflated(ROBOT_HALF_WIDTH) for b in self.scenario.boxes]
        self._goal = self.scenario.goal
        pose = self._world.pose()
        self._prev_geo = self._geodesic(pose)
        self._shortest = self._prev_geo
        self._pending = deque(np.zeros((self.action_latency, len(self._limits)), np.float32))
        self._steps, self._path_length = 0, 0.0
        self._collision = self._wrong_side = self._out_of_bounds = self._success = False
        self._passed: dict[int, str] = {}
        return self._observe(pose), self._info(pose, nan=False, clipped=False)

    def step(self, action):
        if self.scenario is None:
            raise RuntimeError("call reset() before step()")
        action = np.array(action, dtype=np.float32).reshape(-1)
        if action.shape != self._limits.shape:
            raise ValueError(f"a {self.drive!r} action has {len(self._limits)} values, got {action.size}")
        nan = not np.isfinite(action).all()
        action[~np.isfinite(action)] = 0.0
        action *= self.action_scale
        clipped = bool((np.abs(action) > self._limits + 1e-6).any())
        action = np.clip(action, -self._limits, self._limits)
        self._pending.append(action)
        command = to_action3(self._pending.popleft(), self.drive)
        if self._d.actuation_noise > 0:
            command *= 1.0 + self.np_random.normal(0.0, self._d.actuation_noise, 3).astype(np.float32)
        before = self._world.pose()
        brake = BRAKE_TIME if self.control == "pulse" else 0.0
        self._collision |= self._world.drive_for(command, CONTROL_PERIOD, brake)
        pose = self._world.pose()
        self._steps += 1
        self._path_length += float(np.hypot(pose[0] - before[0], pose[1] - before[1]))
        newly_wrong = self._track_sides(before, pose)
        x0, x1 = self.scenario.x_bounds
        self._out_of_bounds = not (x0 <= pose[0] <= x1 and abs(pose[1]) <= self.scenario.half_width)
        reached = self._distance(pose) < GOAL_RADIUS
        self._success = (reached and not self._collision and not self._wrong_side
                         and len(self._passed) == len(self.scenario.boxes))
        terminated = reached or self._collision or self._out_of_bounds
        truncated = not terminated and self._steps >= self.max_steps
        geo = self._geodesic(pose)
        reward = (self._prev_geo - geo + _R_STEP + _R_SUCCESS * self._success
                  + _R_COLLISION * self._collision + _R_WRONG_SIDE * newly_wrong)
        self._prev_geo = geo
        return self._observe(pose), float(reward), terminated, truncated, self._info(pose, nan, clipped)

    def render(self):
        if self.render_mode == "rgb_array" and self.scenario is not None:
            return self._world.topdown_image()
        return None

    def close(self):
        self._world.close()

    # ---- helpers -----------------------------------------------------------------------------
    def _track_sides(self, before, after) -> bool:
        """Record on which side the robot crossed each box's centre line; True if a wrong crossing happened now."""
        newly_wrong = False
        for i, b in enumerate(self.scenario.boxes):
            if before[0] < b.x <= after[0]:
                y = before[1] + (b.x - before[0]) / (after[0] - before[0]) * (after[1] - before[1])
                self._passed[i] = "left" if y > b.y else "right"
                if self._passed[i] != self.episode_task and not self._wrong_side:
                    self._wrong_side = newly_wrong = True
        return newly_wrong

    def _distance(self, pose) -> float:
        return float(np.hypot(pose[0] - self._goal[0], pose[1] - self._goal[1]))

    def _geodesic(self, pose) -> float:
        """Length of the shortest path from `pose` to the goal that passes the remaining boxes on the task side."""
        start = np.array(pose[:2])
        return polyline_length(start, plan_path(start, self._goal, self._rects, self.episode_task))

    def _observe(self, pose) -> dict[str, np.ndarray]:
        image = self._world.camera_image()
        if self.camera_noise > 0:
            noisy = image + self.np_random.normal(0.0, self.camera_noise, image.shape)
            image = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
        state = encode_state(pose, self._world.velocity(), self._goal, self.scenario.boxes, self.episode_task)
        return {"image": image, "state": state}

    def _info(self, pose, nan: bool, clipped: bool) -> dict:
        s = self.scenario
        return {
            "instruction": self.instruction, "task": self.episode_task, "difficulty": self.difficulty,
            "scenario": s.name(self.episode_task), "variant": s.variant, "obstacle_distance": s.distance,
            "success": self._success, "collision": self._collision, "wrong_side": self._wrong_side,
            "out_of_bounds": self._out_of_bounds, "distance_to_goal": self._distance(pose),
            "path_length": self._path_length, "shortest_path_length": self._shortest,
            "robot_pose": np.array(pose, dtype=np.float64), "action_nan": nan, "action_clipped": clipped,
            "steps": self._steps,
        }
