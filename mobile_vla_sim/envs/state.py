"""The privileged state vector (for experts and RL baselines) and its decoder, so nobody needs magic indices.

Layout (float32): robot pose `x, y, cos(yaw), sin(yaw)` (world), velocity `forward, left, yaw_rate` (robot frame),
goal `dx, dy` (robot frame), `max_boxes` (the family's; default MAX_BOXES) obstacle slots of `dx, dy, half_x, half_y,
present` (robot frame; absent
slots are zeros), then the task one-hot over the family's tasks, then, for families whose demonstrations pass a via
point, `dx, dy, present` of it (robot frame; absent once passed). Boxes are axis-aligned in the world. With the
default family's two tasks and no via point the vector has STATE_DIM entries.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from mobile_vla_sim.envs.scenario import Box

MAX_BOXES = 2
_SLOT = 5
_HEAD = 4 + 3 + 2
#: The state's size with MAX_BOXES obstacle slots, two tasks and no via point (the detour family's).
STATE_DIM = _HEAD + MAX_BOXES * _SLOT + 2
#: Symmetric bound of every entry (declared in the observation space; values are clipped to it).
STATE_BOUND = 50.0


def state_dim(tasks: Sequence[str], via: bool = False, max_boxes: int = MAX_BOXES) -> int:
    return _HEAD + max_boxes * _SLOT + len(tasks) + (3 if via else 0)


def _to_robot(dx: float, dy: float, yaw: float) -> tuple[float, float]:
    c, s = math.cos(yaw), math.sin(yaw)
    return c * dx + s * dy, -s * dx + c * dy


def encode_state(pose: Sequence[float], velocity: Sequence[float], goal: Sequence[float], boxes: Sequence[Box],
                 task: str, tasks: Sequence[str] = ("left", "right"),
                 via: Sequence[float] | None | bool = False, max_boxes: int = MAX_BOXES) -> np.ndarray:
    """Pack world-frame quantities into the state vector. `via`: False for a family without via points, else the
    via point (x, y) still ahead, or None once passed."""
    x, y, yaw = pose
    vec = np.zeros(state_dim(tasks, via is not False, max_boxes), dtype=np.float32)
    base = _HEAD + max_boxes * _SLOT
    vec[0:4] = x, y, math.cos(yaw), math.sin(yaw)
    vec[4:7] = velocity
    vec[7:9] = _to_robot(goal[0] - x, goal[1] - y, yaw)
    for i, b in enumerate(boxes[:max_boxes]):
        k = 9 + i * _SLOT
        vec[k:k + 2] = _to_robot(b.x - x, b.y - y, yaw)
        vec[k + 2:k + 5] = b.hx, b.hy, 1.0
    vec[base + list(tasks).index(task)] = 1.0
    if via is not False and via is not None:
        k = base + len(tasks)
        vec[k:k + 2] = _to_robot(via[0] - x, via[1] - y, yaw)
        vec[k + 2] = 1.0
    return np.clip(vec, -STATE_BOUND, STATE_BOUND)


def decode_state(vec, tasks: Sequence[str] = ("left", "right"), via: bool = False, max_boxes: int = MAX_BOXES) -> dict:
    """Unpack a state vector; also returns world-frame goal and boxes recovered through the robot pose.

    Keys: x, y, yaw, velocity (3,), goal_rel (2,), goal (2,) world, boxes_rel (k, 2), boxes_half (k, 2),
    boxes (k, 4) world `(cx, cy, hx, hy)` for the k present slots, task (one of `tasks`), and with `via` the via
    point `via` (2,) world, or None once passed.
    """
    v = np.asarray(vec, dtype=np.float64)
    dim, base = state_dim(tasks, via, max_boxes), _HEAD + max_boxes * _SLOT
    if v.shape != (dim,) or not np.isfinite(v).all():
        raise ValueError(f"expected a finite state vector of shape ({dim},), got shape {v.shape}")
    x, y, yaw = v[0], v[1], math.atan2(v[3], v[2])
    c, s = math.cos(yaw), math.sin(yaw)
    rot = np.array([[c, -s], [s, c]])  # robot -> world
    slots = v[_HEAD:base].reshape(max_boxes, _SLOT)
    slots = slots[slots[:, 4] > 0.5]
    centres = slots[:, :2] @ rot.T + [x, y]
    out = {
        "x": x, "y": y, "yaw": yaw, "velocity": v[4:7].copy(), "goal_rel": v[7:9].copy(),
        "goal": rot @ v[7:9] + [x, y], "boxes_rel": slots[:, :2].copy(), "boxes_half": slots[:, 2:4].copy(),
        "boxes": np.hstack([centres, slots[:, 2:4]]),
        "task": tasks[int(np.argmax(v[base:base + len(tasks)]))],
    }
    if via:
        k = base + len(tasks)
        out["via"] = rot @ v[k:k + 2] + [x, y] if v[k + 2] > 0.5 else None
    return out
