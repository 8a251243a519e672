"""`MobileVLA/Nav-v0`: a mobile robot in a corridor, a task family's task (default: go around the box(es) on the
instructed side and stop in front of the bottle)."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import replace
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from mobile_vla_sim.envs.actions import action_limits, to_action3
from mobile_vla_sim.envs.config import EnvConfig
from mobile_vla_sim.envs.geometry import Rect, crossing_side, plan_path, polyline_length
from mobile_vla_sim.envs.scenario import Scenario, with_extra_distractors
from mobile_vla_sim.envs.sim import BRAKE_TIME, CONTROL_PERIOD, PHYSICS_HZ, ROBOT_HALF_WIDTH, BulletWorld
from mobile_vla_sim.envs.state import STATE_BOUND
from mobile_vla_sim.envs.tasks import get_family
from mobile_vla_sim.errors import ConfigError

_RESET_OPTIONS = ("task", "difficulty")
#: Reward terms (see the class docstring).
R_SUCCESS, R_COLLISION, R_WRONG_SIDE, R_STEP = 10.0, -5.0, -5.0, -0.01
#: A step whose executed command has every component below this in magnitude (m/s, rad/s: under 8 mm and 0.5 degree
#: in the 0.4 s step) is a stop; in direction mode a stop is the base's own, a zero command.
STOP_SPEED = 0.02
#: Entropy word that, with the scene seed, seeds the extra clutter's own random stream.
_EXTRA_CLUTTER_STREAM = 1

Obs = dict[str, np.ndarray]


class NavEnv(gym.Env):
    """A small mobile robot in an indoor corridor must go around the box(es) on the side its instruction names and
    reach the point in front of a beverage bottle, seen only through its forward camera.

    ## Description
    A PyBullet corridor (grey tile floor, white walls) with one box (easy, medium) or two staggered boxes (hard) in
    the middle and a dark bottle with a green cap behind them; the robot starts in front of the first box. The
    instruction (e.g. "Navigate around obstacles and reach the front of the beverage bottle on the left") says which
    side. The scene depends on the reset seed and the difficulty only, never on the task: left and right episodes
    with one seed share their scene, so the image alone cannot tell the way. Difficulty levels are one table,
    `mobile_vla_sim.envs.difficulty.DIFFICULTIES` (box sizes and offsets, start noise, clutter, colour, light,
    texture and camera jitter, actuation noise, step limit).

    ## Action Space
    `Box(float32)` in the robot frame, one step = a 0.4 s command:
    * `drive="diff"` (default): `(linear_x m/s in [-0.5, 0.5], angular_z rad/s in [-1.5, 1.5])`;
    * `drive="omni"` (the real holonomic base): `(linear_x, linear_y, angular_z)`, +y left;
    * `drive="omni", action_mode="direction"` (the real base's `move(angle, throttle)`): the same vector, in
      `[-1.15, 1.15]` (the real key labels), but only the direction of `(linear_x, linear_y)` counts, travelled at
      `direction_speed`, and the sign of `angular_z`, turned at `spin_rate`; zero stops; every step brakes to a stop.
    `control="pulse"` brakes to a stop after each 0.4 s command before the image is taken (the real stop-and-go).
    NaN is replaced by 0 and out-of-range values are clipped (in direction mode, only flagged: the magnitude is
    ignored anyway); both are flagged in `info`.

    ## Observation Space
    `Dict(image=Box(uint8, (H, W, 3)) from the camera (`camera="default"`: S x S, 0.35 m high, 90 degree field of
    view; `camera="real"`: the real 1280 x 720 wide-angle camera; `image_width`/`image_height` set other sizes),
    channels in `color_order` (RGB, or BGR as the real camera delivers),
    state=Box(float32, (STATE_DIM,)))`. `state` is privileged (pose, velocity, goal and boxes in the robot frame,
    task one-hot; `mobile_vla_sim.envs.state`) for the scripted expert and RL baselines; a VLA policy reads `image`
    and the instruction, which is in `info["instruction"]` and never in the observation arrays.

    ## Rewards
    `r_t = (g_{t-1} - g_t) + R_STEP + R_SUCCESS * success + R_COLLISION * collision_t + R_WRONG_SIDE * wrong_t`,
    where `g` is the length of the shortest path to the goal that passes the remaining boxes on the instructed side
    (progress along it is rewarded), `R_STEP = -0.01`, `R_SUCCESS = 10`, `R_COLLISION = -5` on every step while in
    collision, and `R_WRONG_SIDE = -5` once, at the step the robot crosses a box's centre line on the wrong side.

    ## Starting State
    The robot stands at rest near the origin facing +x (position and heading noise per difficulty); the first box
    is 0.85, 1.1 or 1.4 m ahead (close, medium, far), the bottle 0.95-1.2 m beyond the last box.

    ## Episode End
    Terminated when the robot gets within `GOAL_RADIUS` (0.25 m) of the goal point 0.4 m in front of the bottle, when
    it touches a wall, box, bottle or clutter, or when it leaves the arena. Truncated after `max_steps` steps (the
    difficulty's limit unless `max_steps` is given). Success = reached the goal, every box passed on the
    instructed side, no collision.
    With `stop_at_goal=True` (the real task: *stop* in front of the bottle) entering the goal circle no longer ends
    the episode: it ends at the first step that executes a stop and ends inside the circle, a success under the same
    conditions. A stop is the command the base executes this step (after `action_latency`, `action_scale` and
    clipping, before actuation noise) with every component below `STOP_SPEED` (0.02 m/s and rad/s) in magnitude; in
    direction mode, a zero command (the base's own stop). A stop outside the circle ends nothing (it wastes steps).

    ## Arguments
    `gymnasium.make("MobileVLA/Nav-v0", config=EnvConfig(...), render_mode=None | "rgb_array", **overrides)`: every
    knob is a field of `mobile_vla_sim.envs.config.EnvConfig` (task, difficulty, drive, action_mode, control,
    camera, image_size, image_width, image_height, color_order, renderer, max_steps, action_latency, action_scale,
    camera_noise, instructions, ...). Robustness probes, each a no-op at its default: `light_scale` (multiplies the
    scene's ambient and diffuse light), `camera_height_shift` (m) and `camera_pitch_shift` (degrees) added to the
    camera mount, `extra_distractors` (clutter against the walls past the boxes or behind the bottle, from a random
    stream of its own, so the rest of the scene is the seed's), and `stop_at_goal` (see Episode End). `look`
    (`mobile_vla_sim.envs.look.LookConfig`: camera mount and field of view, colours, textures, light, the `lab`
    preset; what `mvla-sim calibrate` fits) is applied to each sampled scene before the probes; its defaults change
    no pixel. Keyword overrides replace single fields (`gymnasium.make("MobileVLA/Nav-v0", task="left",
    difficulty="hard")`). `render()` with `render_mode="rgb_array"` returns a top-down view of the arena.
    `reset(seed=s, options={"task": ..., "difficulty": ...})` picks the episode: the same seed gives bit-identical
    images and trajectories in any process.

    ## Info
    Every `reset` and `step` returns: `instruction`, `task`, `difficulty`, `scenario` (real-data name, e.g.
    `1box_hori_left`), `variant` (core|variant), `obstacle_distance` (close|medium|far), `success`, `collision`,
    `wrong_side`, `out_of_bounds` (bools, latched), `distance_to_goal` (m), `path_length` (m driven),
    `shortest_path_length` (m, from the start, for SPL), `robot_pose` (x, y, yaw), `boxes` ((n, 4) world
    `cx, cy, half_x, half_y`), `goal` ((2,) world x, y), `target` ((2,) the target object's x, y), `sides_passed` (per box: "left", "right" or None until the
    robot first crosses its centre line), `action_nan`, `action_clipped` (this step), `steps`, `in_goal` (inside the
    goal circle now), `goal_entered` (latched), `stopped` (this step executed a stop, see Episode End). With
    `capture_delay` set (what `generate` does), every `step` also returns `capture`: the camera `image` and the robot
    `pose` at `capture_delay` seconds into the move, the frame the real collector stores with the move.

    ## Version History
    * v0, 2026-12: `capture_delay` and `info["capture"]` added; `image_size`, `drive`, `control`, `renderer` and
      `instructions` may be left unset (None) and then take their defaults (`EnvConfig.resolved`). The same knobs give
      the same episodes as in earlier releases.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 1.0 / CONTROL_PERIOD}

    def __init__(self, config: EnvConfig | None = None, render_mode: str | None = None, **overrides: Any):
        try:
            cfg = replace(config or EnvConfig(), **overrides).resolved()
        except TypeError as err:
            raise ConfigError(f"unknown env option: {err}; see EnvConfig for the valid ones") from None
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ConfigError(f"unknown render_mode {render_mode!r}: use None or 'rgb_array'")
        self.config, self.render_mode = cfg, render_mode
        self.family = get_family(cfg.task_family)
        self.task, self.drive = cfg.task, cfg.drive
        self.difficulty = self.family.difficulty(cfg.difficulty).name
        width, height = cfg.resolution
        self._direction = cfg.action_mode == "direction"
        self._limits = action_limits(self.drive, cfg.action_mode)
        self.action_space = spaces.Box(-self._limits, self._limits, dtype=np.float32)
        self.observation_space = spaces.Dict({
            "image": spaces.Box(0, 255, (height, width, 3), dtype=np.uint8),
            "state": spaces.Box(-STATE_BOUND, STATE_BOUND, (self.family.state_dim,), dtype=np.float32),
        })
        self._world: BulletWorld | None = BulletWorld((width, height), cfg.renderer, self.drive, cfg.camera_spec)
        self.scenario: Scenario | None = None
        self.instruction = ""
        self.episode_task = self.task

    # ---- gymnasium API -----------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Obs, dict[str, Any]]:
        if self._world is None:
            raise RuntimeError("this env was closed; make a new one with make_env(cfg) or gymnasium.make")
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = set(options) - set(_RESET_OPTIONS)
        if unknown:
            raise ValueError(f"unknown reset options {sorted(unknown)}: allowed are {list(_RESET_OPTIONS)}")
        family = self.family
        if options.get("difficulty") is not None:
            self.difficulty = family.difficulty(options["difficulty"]).name
        # The scene seed is drawn before the task, so the scene depends on the task only where the family says so.
        scene_seed = int(self.np_random.integers(2**63 - 1))
        task = options.get("task") or self.task or family.tasks[int(self.np_random.integers(len(family.tasks)))]
        self.episode_task = family.check_task(task)
        self.instruction = family.instruction(self.episode_task, self.config.instructions)
        self._d = family.difficulty(self.difficulty)
        self.scenario = self._probe_shifts(family.sample_scenario(
            np.random.default_rng(scene_seed), self._d, self.episode_task, self.config.instructions), scene_seed)
        self._world.build(self.scenario)
        self.max_steps = self.config.max_steps or self._d.max_steps
        self._rects = [Rect(b.x, b.y, b.hx, b.hy).inflated(ROBOT_HALF_WIDTH) for b in family.obstacles(self.scenario)]
        self._goal = self.scenario.goal
        # The episode's fixed info arrays; each info gets a copy (Gymnasium: infos share no object).
        self._boxes_info = np.array([(b.x, b.y, b.hx, b.hy) for b in self.scenario.boxes], dtype=np.float64)
        pose = self._world.pose()
        self._prev_geo = self._geodesic(pose)
        self._shortest = self._prev_geo
        self._pending = deque(np.zeros((self.config.action_latency, len(self._limits)), np.float32))
        self._steps, self._path_length = 0, 0.0
        self._collision = self._wrong_side = self._out_of_bounds = self._success = False
        self._goal_entered = self._distance(pose) < family.goal_radius
        self._via = self.scenario.via
        self._passed: list[str | None] = [None] * len(self.scenario.boxes)
        return self._observe(pose), self._info(pose, nan=False, clipped=False, stopped=False)

    def step(self, action: np.ndarray) -> tuple[Obs, float, bool, bool, dict[str, Any]]:
        if self._world is None:
            raise RuntimeError("this env was closed; make a new one with make_env(cfg) or gymnasium.make")
        if self.scenario is None:
            raise RuntimeError("call reset() before step()")
        action = np.array(action, dtype=np.float32).reshape(-1)
        if action.shape != self._limits.shape:
            raise ValueError(f"a {self.drive!r} action has {len(self._limits)} values, got {action.size}")
        nan = not np.isfinite(action).all()
        action[~np.isfinite(action)] = 0.0
        action *= self.config.action_scale
        clipped = bool((np.abs(action) > self._limits + 1e-6).any())
        if not self._direction:  # direction mode ignores magnitudes; clipping per axis would turn the direction
            action = np.clip(action, -self._limits, self._limits)
        self._pending.append(action)
        command = to_action3(self._pending.popleft(), self.drive)
        if self._direction:
            command = self._direction_command(command)
        stopped = not command.any() if self._direction else bool((np.abs(command) < STOP_SPEED).all())
        if self._d.actuation_noise > 0:
            command *= 1.0 + self.np_random.normal(0.0, self._d.actuation_noise, 3).astype(np.float32)
        before = self._world.pose()
        brake = BRAKE_TIME if self.config.brakes else 0.0
        delay, capture = self.config.capture_delay, None
        if delay is not None:  # the real collector's camera frame, taken as the move has just started
            delay = round(delay * PHYSICS_HZ) / PHYSICS_HZ  # on a physics substep, so the two parts add up to the move
            self._collision |= self._world.drive_for(command, delay)
            capture = {"image": self._camera_image(), "pose": np.array(self._world.pose(), dtype=np.float64)}
        self._collision |= self._world.drive_for(command, CONTROL_PERIOD - (delay or 0.0), brake)
        pose = self._world.pose()
        self._steps += 1
        self._path_length += float(np.hypot(pose[0] - before[0], pose[1] - before[1]))
        newly_wrong = self._track_sides(before, pose)
        x0, x1 = self.scenario.x_bounds
        self._out_of_bounds = not (x0 <= pose[0] <= x1 and abs(pose[1]) <= self.scenario.half_width)
        in_goal = self._distance(pose) < self.family.goal_radius
        self._goal_entered |= in_goal
        arrived = in_goal and (stopped or not (self.config.stop_at_goal or self.family.requires_stop))
        self._success = (arrived and not self._collision and not self._wrong_side
                         and (None not in self._passed or not self.family.pass_side))
        terminated = arrived or self._collision or self._out_of_bounds
        truncated = not terminated and self._steps >= self.max_steps
        geo = self._geodesic(pose)
        reward = (self._prev_geo - geo + R_STEP + R_SUCCESS * self._success
                  + R_COLLISION * self._collision + R_WRONG_SIDE * newly_wrong)
        self._prev_geo = geo
        info = self._info(pose, nan, clipped, stopped)
        if capture is not None:
            info["capture"] = capture
        return self._observe(pose), float(reward), terminated, truncated, info

    def render(self) -> np.ndarray | None:
        if self.render_mode == "rgb_array" and self.scenario is not None and self._world is not None:
            return self._world.topdown_image()
        return None

    def close(self) -> None:
        if self._world is not None:
            self._world.close()
            self._world = None

    # ---- helpers -----------------------------------------------------------------------------
    def _probe_shifts(self, s: Scenario, scene_seed: int) -> Scenario:
        """The sampled scene in the config's look (`envs.look`) with the robustness-probe shifts on top (light,
        camera mount, extra clutter); the defaults (plain look, x 1.0, + 0.0, no clutter) leave every value, and so
        every pixel, as sampled."""
        c = self.config
        s = c.look.apply(s)
        if c.extra_distractors:
            rng = np.random.default_rng([scene_seed, _EXTRA_CLUTTER_STREAM])
            s = with_extra_distractors(s, c.extra_distractors, rng)
        return replace(s, light_ambient=s.light_ambient * c.light_scale, light_diffuse=s.light_diffuse * c.light_scale,
                       camera_height=s.camera_height + c.camera_height_shift,
                       camera_pitch=s.camera_pitch + math.radians(c.camera_pitch_shift))

    def _track_sides(self, before, after) -> bool:
        """Record the side of each box's first crossing; True if a wrong crossing happened at this step."""
        newly_wrong = False
        for i, b in enumerate(self.scenario.boxes):
            side = crossing_side(before, after, b.x, b.y)
            if side is not None and self._passed[i] is None:
                self._passed[i] = side
            if side is not None and side != self.episode_task and self.family.pass_side and not self._wrong_side:
                self._wrong_side = newly_wrong = True
        return newly_wrong

    def _direction_command(self, a3: np.ndarray) -> np.ndarray:
        """Direction mode: the real base's move(angle, throttle). Only the direction of (linear_x, linear_y) counts,
        at the constant `direction_speed`, and only the sign of angular_z, at `spin_rate`; zero stops."""
        out = np.zeros(3, np.float32)
        norm = float(np.hypot(a3[0], a3[1]))
        if norm > 1e-6:
            out[:2] = a3[:2] / norm * self.config.direction_speed
        if abs(a3[2]) > 1e-6:
            out[2] = np.sign(a3[2]) * self.config.spin_rate
        return out

    def _distance(self, pose) -> float:
        return float(np.hypot(pose[0] - self._goal[0], pose[1] - self._goal[1]))

    def _geodesic(self, pose) -> float:
        """Length of the shortest path from `pose` to the goal that passes the remaining boxes on the task side."""
        start = np.array(pose[:2])
        return polyline_length(start, plan_path(start, self._goal, self._rects,
                                                self.family.expert_side(self.episode_task)))

    def _observe(self, pose) -> Obs:
        if self._via is not None and pose[0] >= self._via[0]:
            self._via = None  # passed: the demonstration now heads for the goal
        state = self.family.encode_state(pose, self._world.velocity(), self._goal, self.scenario, self.episode_task,
                                         self._via)
        return {"image": self._camera_image(), "state": state}

    def _camera_image(self) -> np.ndarray:
        """The camera frame at the robot's current pose, as the camera delivers it (noise, then channel order)."""
        image = self._world.camera_image()
        if self.config.camera_noise > 0:
            noisy = image + self.np_random.normal(0.0, self.config.camera_noise, image.shape)
            image = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
        if self.config.color_order == "bgr":  # last, so a bgr frame is exactly its rgb twin with channels swapped
            image = np.ascontiguousarray(image[..., ::-1])
        return image

    def _info(self, pose, nan: bool, clipped: bool, stopped: bool) -> dict[str, Any]:
        s, distance = self.scenario, self._distance(pose)
        return {
            "instruction": self.instruction, "task": self.episode_task, "difficulty": self.difficulty,
            "scenario": self.family.scenario_name(s, self.episode_task), "variant": s.variant,
            "obstacle_distance": s.distance,
            "success": self._success, "collision": self._collision, "wrong_side": self._wrong_side,
            "out_of_bounds": self._out_of_bounds, "distance_to_goal": distance, "in_goal": distance < self.family.goal_radius,
            "goal_entered": self._goal_entered, "stopped": stopped,
            "path_length": self._path_length, "shortest_path_length": self._shortest,
            "robot_pose": np.array(pose, dtype=np.float64), "action_nan": nan, "action_clipped": clipped,
            "steps": self._steps, "boxes": self._boxes_info.copy(),
            "goal": np.array(self._goal, dtype=np.float64), "sides_passed": tuple(self._passed),
            "target": np.array((s.target.x, s.target.y), dtype=np.float64),
        }
