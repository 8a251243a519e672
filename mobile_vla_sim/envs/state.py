"""The privileged state vector (for experts and RL baselines) and its decoder, so nobody needs magic indices.

Layout (float32): robot pose `x, y, cos(yaw), sin(yaw)` (world), velocity `forward, left, yaw_rate` (robot frame),
goal `dx, dy` (robot frame), MAX_BOXES obstacle slots of `dx, dy, half_x, half_y, present` (robot frame; absent
slots are zeros), task one-hot `(left, right)`. Boxes are axis-aligned in the world.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from mobile_vla_sim.envs.instructions import TASKS
from mobile_vla_sim.envs.scenario import Box

MAX_BOXES = 2
_SLOT = 5
STATE_DIM = 4 + 3 + 2 + MAX_BOXES * _SLOT + 2
#: Symmetric bound of every entry (declared in the observation space; values are clipped to it).
STATE_BOUND = 50.0


def _to_robot(dx: float, dy: float, yaw: float) -> tuple[float, float]:
    c, s = math.cos(yaw), math.sin(yaw)
    return c * dx + s * dy, -s * dx + c * dy


def encode_state(pose: Sequence[float], velocity: Sequence[float], goal: Sequence[float], boxes: Sequence[Box],
                 task: str) -> np.ndarray:
    """Pack world-frame quantities into the STATE_DIM vector."""
    x, y, yaw = pose
    vec = np.zeros(STATE_DIM, dtype=np.float32)
    vec[0:4] = x, y, math.cos(yaw), math.sin(yaw)
    vec[4:7] = velocity
    vec[7:9] = _to_robot(goal[0] - x, goal[1] - y, yaw)
    for i, b in enumerate(boxes[:MAX_BOXES]):
        k = 9 + i * _SLOT
        vec[k:k + 2] = _to_robot(b.x - x, b.y - y, yaw)
        vec[k + 2:k + 5] = b.hx, b.hy, 1.0
    vec[-2 + TASKS.index(task)] = 1.0
    return np.clip(vec, -STATE_BOUND, STATE_BOUND)


def decode_state(vec) -> dict:
    """Unpack a state vector; also returns world-frame goal and boxes recovered through the robot pose.

    Keys: x, y, yaw, velocity (3,), goal_rel (2,), goal (2,) world, boxes_rel (k, 2), boxes_half (k, 2),
    boxes (k, 4) world `(cx, cy, hx, hy)` for the k present slots, task ("left"|"right").
    """
    v = np.asarray(vec, dtype=np.float64)
    if v.shape != (STATE_DIM,) or not np.isfinite(v).all():
        raise ValueError(f"expected a finite state vector of shape ({STATE_DIM},), got shape {v.shape}")
    x, y, yaw = v[0], v[1], math.atan2(v[3], v[2])
    c, s = math.cos(yaw), math.sin(yaw)
    rot = np.array([[c, -s], [s, c]])  # robot -> world
    slots = v[9:9 + MAX_BOXES * _SLOT].reshape(MAX_BOXES, _SLOT)
    slots = slots[slots[:, 4] > 0.5]
    centres = slots[:, :2] @ rot.T + [x, y]
    return {
        "x": x, "y": y, "yaw": yaw, "velocity": v[4:7].copy(), "goal_rel": v[7:9].copy(),
        "goal": rot @ v[7:9] + [x, y], "boxes_rel": slots[:, :2].copy(), "boxes_half": slots[:, 2:4].copy(),
        "boxes": np.hstack([centres, slots[:, 2:4]]), "task": TASKS[int(np.argmax(v[-2:]))],
    }
