"""Action layouts and speed limits shared by the env, the expert, datasets and policies.

The dataset stores every action as the real robot's 3-vector `[linear_x, linear_y, angular_z]`
(m/s, m/s, rad/s; +y left, +angular_z counter-clockwise); each env drive mode uses a subset of it.
"""

from __future__ import annotations

import numpy as np

#: Forward/backward speed limit (m/s), also the lateral limit in omni mode.
MAX_LINEAR = 0.5
#: Turn-rate limit (rad/s).
MAX_ANGULAR = 1.5
#: Indices of the dataset 3-vector used by each env action layout.
LAYOUT_DIMS: dict[str, tuple[int, ...]] = {"diff": (0, 2), "omni": (0, 1, 2)}
#: Per-dimension limits of the 3-vector.
LIMITS3 = np.array([MAX_LINEAR, MAX_LINEAR, MAX_ANGULAR], dtype=np.float32)


def check_drive(drive: str) -> str:
    """Return `drive` if it is a known layout, else raise a ValueError that lists the choices."""
    if drive not in LAYOUT_DIMS:
        raise ValueError(f"unknown drive {drive!r}: use one of {sorted(LAYOUT_DIMS)}")
    return drive


def action_limits(drive: str) -> np.ndarray:
    """Symmetric per-dimension limits of the env action for `drive`."""
    return LIMITS3[list(LAYOUT_DIMS[check_drive(drive)])].copy()


def to_action3(action, drive: str) -> np.ndarray:
    """Env action of layout `drive` -> dataset vector `[linear_x, linear_y, angular_z]` float32."""
    dims = LAYOUT_DIMS[check_drive(drive)]
    action = np.asarray(action, dtype=np.float32).reshape(-1)
    if action.shape[0] != len(dims):
        raise ValueError(f"a {drive!r} action has {len(dims)} values, got shape {action.shape}")
    out = np.zeros(3, dtype=np.float32)
    out[list(dims)] = action
    return out


def from_action3(a3, drive: str) -> np.ndarray:
    """Dataset vector (..., 3) -> env action (..., len(LAYOUT_DIMS[drive])); diff drops linear_y."""
    a3 = np.asarray(a3, dtype=np.float32)
    if a3.shape[-1] != 3:
        raise ValueError(f"expected [linear_x, linear_y, angular_z] on the last axis, got shape {a3.shape}")
    return a3[..., list(LAYOUT_DIMS[check_drive(drive)])].copy()


def noisy_action(action, rng: np.random.Generator, noise_std: float, limits: np.ndarray) -> np.ndarray:
    """`action` plus Gaussian noise of `noise_std` times each limit, clipped to the limits (demonstration noise)."""
    noisy = np.asarray(action, dtype=np.float32) + rng.normal(0.0, noise_std, np.shape(limits)) * limits
    return np.clip(noisy, -limits, limits).astype(np.float32)
