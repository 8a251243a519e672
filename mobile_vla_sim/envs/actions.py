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

#: How the omni env reads an action: `velocity` (m/s, rad/s) or `direction` (the real base's `move(angle, throttle)`:
#: only the direction of (linear_x, linear_y) and the sign of angular_z count, at constant speeds).
ACTION_MODES = ("velocity", "direction")
#: The real teleop's key magnitude: every component of a key label is 0 or +-KEY_VALUE (a label, not a speed).
KEY_VALUE = 1.15
#: The real robot's teleop keys -> `[linear_x, linear_y, angular_z]` labels (+y left, +angular_z counter-clockwise).
#: The real project published w/a/d/q/e with these values and the other keys by name; s/z/c mirror w/q/e backwards,
#: r/t are assumed to rotate counter-clockwise/clockwise.
KEYS: dict[str, tuple[float, float, float]] = {
    "w": (KEY_VALUE, 0.0, 0.0), "a": (0.0, KEY_VALUE, 0.0), "d": (0.0, -KEY_VALUE, 0.0),
    "q": (KEY_VALUE, KEY_VALUE, 0.0), "e": (KEY_VALUE, -KEY_VALUE, 0.0), "s": (-KEY_VALUE, 0.0, 0.0),
    "z": (-KEY_VALUE, KEY_VALUE, 0.0), "c": (-KEY_VALUE, -KEY_VALUE, 0.0),
    "r": (0.0, 0.0, KEY_VALUE), "t": (0.0, 0.0, -KEY_VALUE), "stop": (0.0, 0.0, 0.0),
}


def check_drive(drive: str) -> str:
    """Return `drive` if it is a known layout, else raise a ValueError that lists the choices."""
    if drive not in LAYOUT_DIMS:
        raise ValueError(f"unknown drive {drive!r}: use one of {sorted(LAYOUT_DIMS)}")
    return drive


def action_limits(drive: str, mode: str = "velocity") -> np.ndarray:
    """Symmetric per-dimension limits of the env action for `drive`; direction mode takes the key labels (+-1.15)."""
    limits = LIMITS3 if mode == "velocity" else np.full(3, KEY_VALUE, np.float32)
    return limits[list(LAYOUT_DIMS[check_drive(drive)])].copy()


def key_action(key: str) -> np.ndarray:
    """The real label `[linear_x, linear_y, angular_z]` of teleop key `key` (see KEYS)."""
    if key not in KEYS:
        raise ValueError(f"unknown key {key!r}: use one of {', '.join(KEYS)}")
    return np.array(KEYS[key], np.float32)


def snap_to_keys(a3) -> np.ndarray:
    """Dataset vectors (..., 3) -> the nearest real key label: the (linear_x, linear_y) direction snapped to the
    eight key directions (45 degree sectors), zero stays zero; angular_z to its sign. All components 0 or +-1.15."""
    a3 = np.asarray(a3, dtype=np.float32)
    out = np.zeros_like(a3)
    x, y = a3[..., 0], a3[..., 1]
    moving = np.hypot(x, y) > 0
    sector = np.round(np.arctan2(y, x) / (np.pi / 4))
    out[..., 0] = np.where(moving, np.round(np.cos(sector * np.pi / 4)), 0) * KEY_VALUE
    out[..., 1] = np.where(moving, np.round(np.sin(sector * np.pi / 4)), 0) * KEY_VALUE
    out[..., 2] = np.sign(a3[..., 2]) * KEY_VALUE
    return out + 0.0  # no negative zeros: labels compare and print as the real ones


def to_action3(action, drive: str) -> np.ndarray:
    """Env action(s) (..., len(LAYOUT_DIMS[drive])) of layout `drive` -> dataset vectors (..., 3)
    `[linear_x, linear_y, angular_z]` float32."""
    dims = LAYOUT_DIMS[check_drive(drive)]
    action = np.asarray(action, dtype=np.float32)
    if action.ndim == 0 or action.shape[-1] != len(dims):
        raise ValueError(f"a {drive!r} action has {len(dims)} values, got shape {action.shape}")
    out = np.zeros((*action.shape[:-1], 3), dtype=np.float32)
    out[..., list(dims)] = action
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
