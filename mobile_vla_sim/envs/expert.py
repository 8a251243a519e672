"""Scripted experts on the privileged state: plan around the boxes (on the side the task family's task names, or
the shorter way; through the scene's via point while it is ahead), then follow the plan.

`ScriptedExpert` commands continuous velocities (pure pursuit); `KeysExpert` presses the real robot's teleop keys,
so its demonstrations have the real action distribution. Both replan from the current pose every step (a handful of
nodes, well under a millisecond), so actuation noise, latency or injected action noise are corrected instead of
accumulating.
"""

from __future__ import annotations

import math

import numpy as np

from typing import Sequence

from mobile_vla_sim.envs.actions import (LIMITS3, MAX_ANGULAR, MAX_LINEAR, action_limits, check_drive, from_action3,
                                         key_action, noisy_action)
from mobile_vla_sim.envs.config import EnvConfig
from mobile_vla_sim.envs.geometry import SIDE_SIGN, Rect, passes_on_side, plan_path, point_along, polyline_length, \
    segment_hits
from mobile_vla_sim.envs.sim import CONTROL_PERIOD, ROBOT_HALF_WIDTH, ROBOT_RADIUS
from mobile_vla_sim.envs.tasks import TaskFamily, get_family
from mobile_vla_sim.policy import Policy

#: Turn in place (no forward speed) while the heading error exceeds this (rad).
_TURN_IN_PLACE = math.radians(60)
#: Expert action styles: continuous velocities, or the real teleop keys (omni drive, direction mode).
EXPERT_ACTIONS = ("continuous", "keys")
#: Keys expert: metres of path a metre of intrusion into a box's safety margin costs, and a metre off the plan.
_MARGIN_PRICE, _OFF_PATH_PRICE = 3.0, 1.0
#: The experts command a stop once this much inside the goal circle (m): a margin for the state's float32 rounding,
#: so they never stop where the default env (which ends the episode on entering the circle) is still running, and
#: with `stop_at_goal` they end the episode there.
STOP_MARGIN = 0.02


def _distance_to_polyline(p: np.ndarray, points: np.ndarray) -> float:
    """Distance from point `p` to the polyline through `points` (k, 2)."""
    a, b = points[:-1], points[1:]
    ab = b - a
    t = np.clip(np.einsum("ij,ij->i", p - a, ab) / np.maximum(np.einsum("ij,ij->i", ab, ab), 1e-12), 0.0, 1.0)
    return float(np.min(np.linalg.norm(a + t[:, None] * ab - p, axis=1))) if len(ab) else float(np.linalg.norm(p - a))


def _wrap(angle: float) -> float:
    return (angle + math.pi) % (2 * math.pi) - math.pi


class ScriptedExpert:
    """Demonstrator for `MobileVLA/Nav-v0`: `act(obs)` -> env action for its `drive` layout.

    `noise_std` (fraction of each action limit) perturbs the executed action for diverse demonstrations (not the
    stop at the goal, which noise would undo); `act_with_label` returns it together with the clean action to record
    as the label. Inside the goal circle it stops (zero action), which ends a `stop_at_goal` episode.
    """

    def __init__(self, drive: str = "diff", noise_std: float = 0.0, seed: int | None = None,
                 margin: float = 0.08, lookahead: float = 0.35, family: TaskFamily | None = None):
        self.drive = check_drive(drive)
        self.family = family or get_family()
        if noise_std < 0 or not math.isfinite(noise_std):
            raise ValueError(f"noise_std must be a finite fraction >= 0 of the action limits, got {noise_std}")
        self.noise_std, self.margin, self.lookahead = float(noise_std), float(margin), float(lookahead)
        self._limits = action_limits(self.drive)
        self._rng = np.random.default_rng(seed)
        self._task: str | None = None

    def reset(self, task: str | None = None) -> None:
        """Start an episode; `task` overrides the task one-hot in the state (e.g. to demonstrate the wrong side)."""
        self._task = None if task is None else self.family.check_task(task)

    def _decode(self, state) -> dict:
        """The privileged state with the expert's own task and goal (its override, else the state's)."""
        s = self.family.decode_state(state)
        if self._task is not None and self._task in s.get("goals", {}):
            s["goal"] = s["goals"][self._task]
            dx, dy = s["goal"][0] - s["x"], s["goal"][1] - s["y"]
            c, si = math.cos(s["yaw"]), math.sin(s["yaw"])
            s["goal_rel"] = np.array([c * dx + si * dy, -si * dx + c * dy])
        if self._task is not None:
            s["task"] = self._task
        return s

    def _at_goal(self, s: dict) -> bool:
        return float(np.hypot(*s["goal_rel"])) < self.family.goal_radius - STOP_MARGIN

    def _plan(self, p: np.ndarray, s: dict, rects: list[Rect]) -> list[np.ndarray]:
        """Waypoints from `p` to the goal around `rects`, on the family's side for the task, through the via point
        while it is ahead."""
        side, via = self.family.expert_side(s["task"]), s.get("via")
        if via is not None and p[0] < via[0]:
            return plan_path(p, via, rects, side) + plan_path(via, s["goal"], rects, side)
        return plan_path(p, s["goal"], rects, side)

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """The action to execute (the clean one when `noise_std` is 0)."""
        return self.act_with_label(obs)[0]

    def act_with_label(self, obs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(executed, label): the noisy action to send to the env and the clean expert action."""
        label = self.clean_action(obs)
        if self.noise_std == 0 or self._at_goal(self._decode(obs["state"])):
            return label.copy(), label
        return noisy_action(label, self._rng, self.noise_std, self._limits), label

    def clean_action(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """Noise-free action from the privileged state."""
        s = self._decode(obs["state"])
        if self._at_goal(s):
            return np.zeros(len(self._limits), np.float32)
        pos, goal = np.array([s["x"], s["y"]]), s["goal"]
        to_goal = float(np.linalg.norm(goal - pos))
        rects = [Rect(*b).inflated(ROBOT_RADIUS + self.margin) for b in s["boxes"]]
        path = self._plan(pos, s, rects)
        # Diff drive pursues a point ahead on the path (smooth turns); a holonomic base can follow the polyline
        # exactly, so it heads for the next corner and slows to end the step there rather than overshoot
        # sideways towards a wall.
        target = point_along(pos, path, self.lookahead if self.drive == "diff" else 0.05)
        speed = min(MAX_LINEAR, to_goal / CONTROL_PERIOD)  # slow down to land in the goal circle
        if self.drive == "omni":
            speed = min(speed, max(float(np.linalg.norm(path[0] - pos)), 0.1) / CONTROL_PERIOD)
        bearing = math.atan2(target[1] - pos[1], target[0] - pos[0])
        if self.drive == "diff":
            err = _wrap(bearing - s["yaw"])
            w = float(np.clip(0.8 * err / CONTROL_PERIOD, -MAX_ANGULAR, MAX_ANGULAR))
            v = 0.0 if abs(err) > _TURN_IN_PLACE else speed * math.cos(err) ** 2
            a3 = np.array([v, 0.0, w], np.float32)
        else:
            rel = bearing - s["yaw"]
            vel = speed * np.array([math.cos(rel), math.sin(rel)])
            vel *= min(1.0, MAX_LINEAR / max(np.abs(vel).max(), 1e-9))
            face = math.atan2(goal[1] - pos[1], goal[0] - pos[0])  # keep the camera on the goal
            a3 = np.array([vel[0], vel[1], 0.8 * _wrap(face - s["yaw"]) / CONTROL_PERIOD], np.float32)
        return from_action3(np.clip(a3, -LIMITS3, LIMITS3), self.drive)


class KeysExpert(ScriptedExpert):
    """Demonstrator that presses the real robot's teleop keys (`mobile_vla_sim.envs.actions.KEYS`) on the omni base
    in direction mode, where every key moves `step_length` metres in its direction.

    Each step it takes the key whose end point is nearest the goal along the shortest admissible path (the path
    around the boxes on the instructed side), with prices for entering a box's safety margin and for straying from
    the route planned at the start, among the forward keys w, q, e, a, d, as the real bottle data does (`linear_x`
    in {0, 1.15}); backward keys only when no forward key makes progress, the least bad key in a local minimum, r/t
    only to face down the corridor again after turning more than 45 degrees away. `act` returns the key's real label
    (components 0 or +-1.15); `last_key` names it.
    """

    FORWARD, BACKWARD = ("w", "q", "e", "a", "d"), ("s", "z", "c")

    def __init__(self, step_length: float, noise_std: float = 0.0, seed: int | None = None, margin: float = 0.08,
                 family: TaskFamily | None = None):
        super().__init__(drive="omni", noise_std=noise_std, seed=seed, margin=margin, family=family)
        if not step_length > 0:
            raise ValueError(f"step_length must be > 0 m, got {step_length}")
        self.step_length = float(step_length)
        self._limits = action_limits("omni", "direction")
        self.last_key = "stop"
        self._route: np.ndarray | None = None

    def reset(self, task: str | None = None) -> None:
        super().reset(task)
        self._route = None

    @classmethod
    def for_env(cls, cfg: EnvConfig, **kwargs) -> KeysExpert:
        """The keys expert for an env config (omni, direction mode): one key moves `direction_speed` x 0.4 s."""
        if cfg.drive != "omni" or cfg.action_mode != "direction":
            raise ValueError("the keys expert needs the real robot's interface: drive='omni', action_mode='direction'")
        return cls(cfg.direction_speed * CONTROL_PERIOD, family=get_family(cfg.task_family), **kwargs)

    def clean_action(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        self.last_key = self.choose_key(obs)
        return key_action(self.last_key)

    def choose_key(self, obs: dict[str, np.ndarray]) -> str:
        s = self._decode(obs["state"])
        if self._at_goal(s):
            return "stop"
        pos, yaw = np.array([s["x"], s["y"]]), s["yaw"]
        if abs(_wrap(yaw)) > math.pi / 4:
            return "t" if _wrap(yaw) > 0 else "r"
        side = self.family.expert_side(s["task"])
        plan_rects = [Rect(*b).inflated(ROBOT_RADIUS + self.margin) for b in s["boxes"]]
        body_rects = [Rect(*b).inflated(ROBOT_HALF_WIDTH) for b in s["boxes"]]

        if self._route is None:  # the route planned at the episode's start, which keys drift off sideways
            self._route = np.vstack([pos, *self._plan(pos, s, plan_rects)])
        route = self._route

        def to_goal(p: np.ndarray) -> float:
            """Path length to the goal, plus a steep price for standing inside a box's safety margin (where the
            planner would shrink the box and so make any point inside look closer) and a price for straying from
            the start's route (the walls are not in the state: staying near the route keeps clear of them)."""
            intrusion = sum(max(0.0, -r.clearance(p)) for r in plan_rects)
            return (polyline_length(p, self._plan(p, s, plan_rects)) + _MARGIN_PRICE * intrusion
                    + _OFF_PATH_PRICE * _distance_to_polyline(p, route))

        here, cy, sy = to_goal(pos), math.cos(yaw), math.sin(yaw)
        best: dict[tuple[str, ...], tuple[float, str]] = {}
        for keys in (self.FORWARD, self.BACKWARD):
            for key in keys:
                lx, ly, _ = key_action(key)
                d = np.array([lx, ly]) / math.hypot(lx, ly) * self.step_length
                q = pos + np.array([cy * d[0] - sy * d[1], sy * d[0] + cy * d[1]])
                if not any(segment_hits(pos, q, r) or side is not None and not passes_on_side(pos, q, r, SIDE_SIGN[side])
                           for r in body_rects):
                    best[keys] = min(best.get(keys, (math.inf, "stop")), (to_goal(q), key))
        for keys in (self.FORWARD, self.BACKWARD):
            if keys in best and best[keys][0] < here - 1e-9:
                return best[keys][1]
        # A local minimum of the cost (e.g. squeezed between the route and a margin): the least bad key moves on
        # rather than stall; stop only when every key would hit a box.
        return min(best.values())[1] if best else "stop"


class ExpertPolicy(Policy):
    """The scripted expert behind the policy interface, one expert per slot: the upper bound on success, and what
    `generate` runs.

    It reads the task from the state's one-hot, or always takes `side` (a task of its family) when one is given.
    Only the privileged state is needed, so rollout workers send it no image (`inputs`).
    """

    name = "expert"
    inputs = ("state",)

    def __init__(self, drive: str = "diff", seed: int = 0, side: str | None = None, key_step: float | None = None,
                 family: TaskFamily | None = None):
        self.drive = check_drive(drive)
        self.family = family or get_family()
        self.seed, self.side = seed, None if side is None else self.family.check_task(side)
        if key_step is not None and self.drive != "omni":
            raise ValueError("the keys expert drives the omni base; use drive='omni'")
        self.key_step = key_step
        self._experts: dict[int, ScriptedExpert] = {}

    @classmethod
    def for_env(cls, cfg: EnvConfig, actions: str = "continuous", seed: int = 0) -> ExpertPolicy:
        """The expert for env config `cfg`: continuous velocities, or the real keys (`actions="keys"`)."""
        if actions not in EXPERT_ACTIONS:
            raise ValueError(f"unknown expert actions {actions!r}: use one of {', '.join(EXPERT_ACTIONS)}")
        step = KeysExpert.for_env(cfg).step_length if actions == "keys" else None
        return cls(cfg.drive, seed=seed, key_step=step, family=get_family(cfg.task_family))

    def reset(self, instruction: str, slot: int = 0) -> None:
        expert = (ScriptedExpert(drive=self.drive, seed=self.seed, family=self.family) if self.key_step is None
                  else KeysExpert(self.key_step, seed=self.seed, family=self.family))
        expert.reset(self.side)  # None: the task one-hot in the privileged state
        self._experts[slot] = expert

    def act_batch(self, obs: dict[str, np.ndarray], slots: Sequence[int]) -> np.ndarray:
        states = obs["state"]
        return np.stack([self._experts[s].act({"state": states[i]}) for i, s in enumerate(slots)]).astype(np.float32)

    def close(self) -> None:
        self._experts.clear()


class AlwaysSidePolicy(ExpertPolicy):
    """The expert, but always doing the task `side` (going around on the left, reaching the left target...)
    whatever the instruction: the instruction-grounding failure (detour: 100% same side, ~50% success)."""

    def __init__(self, side: str, drive: str = "diff", seed: int = 0, family: TaskFamily | None = None):
        super().__init__(drive=drive, seed=seed, side=side, family=family)
        self.name = f"always-{side}"


def run_expert_episode(env, expert: ScriptedExpert, seed: int, task: str | None = None,
                       expert_task: str | None = None) -> dict:
    """Roll `expert` through one episode of `env` (reset with `seed`, `task`); returns the final info.

    `expert_task` makes the expert go the other way than the env's task (to test wrong-side detection).
    """
    obs, info = env.reset(seed=seed, options={"task": task} if task else None)
    expert.reset(expert_task)
    done = False
    while not done:
        obs, _, terminated, truncated, info = env.step(expert.act(obs))
        done = terminated or truncated
    return info
