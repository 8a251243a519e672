"""The deployment adapter: what sits between the robot's camera/motors and a policy, as a config.

The real project's first closed-loop runs failed on train/deploy mismatches that no offline metric showed: colour
order, resize and normalisation of the frames, the frame window, how many actions of a predicted chunk run before
the next inference, the action post-processing (safety scale, gain, deadzone, a sign flip) and the instruction
string. `DeployConfig` declares each of these stages once; `deploy_policy` wraps any policy (checkpoints,
baselines, later plugin or server policies) so that the simulator runs the same stack as the robot. The defaults
change nothing, and a default config returns the policy itself.

Frame stages, in order: colour order, resize, normalisation. Action stages, in order, on the dataset vector
`[linear_x, linear_y, angular_z]`: scale, gain, clamp, deadzone, sign flips, snapping to the real keys.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from mobile_vla_sim.config import check_knobs, coerce_config, knob
from mobile_vla_sim.envs.actions import from_action3, snap_to_keys, to_action3
from mobile_vla_sim.envs.tasks import TaskFamily, get_family
from mobile_vla_sim.errors import ConfigError, PolicyLoadError
from mobile_vla_sim.policy import Policy
from mobile_vla_sim.envs.config import MAX_IMAGE_SIZE
from mobile_vla_sim.policies.config import CLIP_MEAN as _MEAN, CLIP_STD as _STD, MAX_CHUNK, MAX_WINDOW
from mobile_vla_sim.moved import moved_name

#: Names of the dataset action components, for `flip_sign`.
AXES = ("linear_x", "linear_y", "angular_z")
RESIZE_MODES = ("none", "squash", "center-crop")
NORMALIZE_MODES = ("policy", "clip", "unit", "none")
CLIP_MEAN, CLIP_STD = np.array(_MEAN, np.float32), np.array(_STD, np.float32)


@dataclass(frozen=True)
class DeployConfig:
    """One deployment stack (a YAML file for `mvla-sim eval --deploy`); every default leaves the policy unchanged."""

    color_order: str = knob("camera", "channel order handed to the policy: camera (as the env's --color-order "
                            "delivers it), rgb or bgr", choices=("camera", "rgb", "bgr"))
    resize: str = knob("none", "frame resize before the policy: none, squash (to resize_to x resize_to whatever the "
                       "aspect, like the real loader) or center-crop (short side to resize_to, then the centre)",
                       choices=RESIZE_MODES)
    resize_to: int = knob(224, "side of the square frame made by resize", min=8, max=MAX_IMAGE_SIZE)
    normalize: str = knob("policy", "pixels: policy (uint8 frames, the policy normalises them itself), or float32 "
                          "pixels normalised here: clip (CLIP mean/std), unit (/255) or none (raw 0-255); only for "
                          "policies that take normalised pixels (VLA checkpoints)", choices=NORMALIZE_MODES)
    window: int | None = knob(None, "frames of history a VLA checkpoint sees [default: its trained window]", min=1,
                              max=MAX_WINDOW)
    execute_chunk: int = knob(1, "execute the first k actions of each predicted chunk before the next inference "
                              "(the frames in between are not shown to the policy)", min=1, max=MAX_CHUNK)
    scale: float = knob(1.0, "multiply every action by this (e.g. a safety factor)")
    gain: float = knob(1.0, "then multiply by this (e.g. a motor gain)")
    clamp: float | None = knob(None, "then clamp every component to [-clamp, clamp]", min=0.0)
    deadzone: float = knob(0.0, "then zero every component whose magnitude is below this", min=0.0)
    flip_sign: tuple[str, ...] = knob((), "then invert the sign of these components: linear_x, linear_y, angular_z")
    snap_keys: bool = knob(False, "then snap to the nearest real teleop key label: (linear_x, linear_y) to one of "
                           "the 8 key directions or stop, angular_z to its sign, components 0 or +-1.15")
    instruction: str | None = knob(None, "send this fixed instruction to the policy instead of the episode's")
    instructions: str | None = knob(None, "send the episode's side in this instruction set instead of the env's "
                                    "sentence: a set name (bottle, cup, korean, inference, basket) or a template "
                                    "containing {side}")
    swap_sides: bool = knob(False, "send the sentence of the opposite task (left <-> right; the task family's "
                            "`opposite`) than the episode's")

    def __post_init__(self) -> None:
        check_knobs(self)
        object.__setattr__(self, "flip_sign", tuple(self.flip_sign))
        unknown = [a for a in self.flip_sign if a not in AXES]
        if unknown:
            raise ConfigError(f"flip_sign: unknown component(s) {', '.join(map(str, unknown))}; use "
                              f"{', '.join(AXES)}")
        if self.instruction is not None and (self.instructions is not None or self.swap_sides):
            raise ConfigError("instruction (one fixed sentence) cannot be combined with instructions or swap_sides "
                              "(which pick the episode's side); keep one of them")

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> DeployConfig:
        """The stack of a YAML file (keys as the field names; examples/deploy_jan2026.yaml)."""
        return coerce_config(path, cls, "deploy")


# --- the stages ---------------------------------------------------------------------------------------------------
def convert_colors(images: np.ndarray, camera_order: str, wanted: str) -> np.ndarray:
    """(..., 3) frames in `camera_order` -> `wanted` ("camera" keeps them)."""
    if wanted in ("camera", camera_order):
        return images
    return np.ascontiguousarray(images[..., ::-1])


def resize_frames(images: np.ndarray, mode: str, size: int) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, size, size, 3) uint8: squashed (aspect lost) or short side + centre crop; bilinear,
    antialiased when shrinking."""
    if mode == "none":
        return images
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    h, w = x.shape[-2:]
    if mode == "squash":
        out_h = out_w = size
    else:
        scale = size / min(h, w)
        out_h, out_w = max(size, round(h * scale)), max(size, round(w * scale))
    if (out_h, out_w) != (h, w):
        x = F.interpolate(x, size=(out_h, out_w), mode="bilinear", antialias=out_h < h or out_w < w,
                          align_corners=False)
    top, left = (out_h - size) // 2, (out_w - size) // 2
    x = x[..., top:top + size, left:left + size]
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def normalize_frames(images: np.ndarray, mode: str) -> np.ndarray:
    """uint8 frames -> float32 pixels: CLIP mean/std, /255, or raw 0-255 ("policy" keeps uint8)."""
    if mode == "policy":
        return images
    x = images.astype(np.float32)
    if mode == "none":
        return x
    x /= 255.0
    return x if mode == "unit" else (x - CLIP_MEAN) / CLIP_STD


def postprocess(actions: np.ndarray, cfg: DeployConfig, drive: str) -> np.ndarray:
    """Env actions (..., dims) of layout `drive` through scale, gain, clamp, deadzone, sign flips and key snapping."""
    a3 = to_action3(actions, drive) * cfg.scale * cfg.gain
    if cfg.clamp is not None:
        a3 = np.clip(a3, -cfg.clamp, cfg.clamp)
    a3 = np.where(np.abs(a3) < cfg.deadzone, 0.0, a3)
    for axis in cfg.flip_sign:
        a3[..., AXES.index(axis)] *= -1
    if cfg.snap_keys:
        a3 = snap_to_keys(a3)
    return from_action3(a3.astype(np.float32), drive)


class DeployedPolicy(Policy):
    """`policy` behind a deployment stack; keeps the wrapped policy's name, drive and inputs.

    `env_instructions` is the env's instruction set (`EnvConfig.instructions`, None: the family's default) and
    `family` its task family: the adapter reads the episode's task from the env's sentence with them, for
    `instructions` and `swap_sides`.
    """

    def __init__(self, policy: Policy, cfg: DeployConfig, camera_order: str = "rgb",
                 env_instructions: str | None = None, family: TaskFamily | None = None):
        self.policy, self.cfg, self.camera_order = policy, cfg, camera_order
        self.family = family or get_family()
        self._env_set = self.family.instruction_set(env_instructions)
        self._sides = {sentence: side for side, sentence in self._env_set.items()}
        self._sent_set = self._env_set if cfg.instructions is None else self.family.instruction_set(cfg.instructions)
        self.name, self.drive, self.inputs = policy.name, policy.drive, policy.inputs
        self.image_size, self.chunk_size, self.trained_env = policy.image_size, policy.chunk_size, policy.trained_env
        self.max_slots = policy.max_slots  # the engine schedules concurrent episodes by it
        reads_images = self.inputs is None or "image" in self.inputs
        if cfg.normalize != "policy" and reads_images and not policy.takes_normalised_pixels:
            raise PolicyLoadError(f"deploy normalize={cfg.normalize!r}: policy {policy.name} takes only uint8 frames; "
                                  "use normalize: policy for it")
        self._trained_window = policy.window
        if cfg.window is not None:
            if policy.window is None:
                raise PolicyLoadError(f"deploy window: policy {policy.name} has no frame window (only VLA "
                                      "checkpoints have one); remove window from the deploy file")
            policy.window = cfg.window
        self.window = policy.window
        self._queued: dict[int, deque[np.ndarray]] = {}

    def reset(self, instruction: str, slot: int = 0) -> None:
        self._queued[slot] = deque()
        self.policy.reset(self.instruction(instruction), slot)

    def instruction(self, sentence: str) -> str:
        """What the policy is told for the env's `sentence`: the fixed instruction, or the episode's side (swapped
        with `swap_sides`) in the `instructions` set, or the sentence itself."""
        if self.cfg.instruction is not None:
            return self.cfg.instruction
        if self.cfg.instructions is None and not self.cfg.swap_sides:
            return sentence
        side = self._sides.get(sentence)
        if side is None:
            raise ConfigError(f"deploy instructions/swap_sides: the env's sentence {sentence!r} is not in its "
                              f"instruction set ({', '.join(map(repr, self._sides))}); pass the env's "
                              "--instructions to the adapter")
        if self.cfg.swap_sides:
            side = self.family.opposite[side]
        return self._sent_set[side]

    def frames(self, images: np.ndarray) -> np.ndarray:
        """Camera frames (N, H, W, 3) uint8 -> what the policy is handed."""
        images = convert_colors(np.asarray(images), self.camera_order, self.cfg.color_order)
        return normalize_frames(resize_frames(images, self.cfg.resize, self.cfg.resize_to), self.cfg.normalize)

    def act_batch(self, obs: dict[str, np.ndarray], slots: Sequence[int]) -> np.ndarray:
        slots = list(slots)
        ask = [i for i, s in enumerate(slots) if not self._queued[s]]
        if ask:
            sub = {k: np.asarray(v)[ask] for k, v in obs.items()}
            if "image" in sub:
                sub["image"] = self.frames(sub["image"])
            chunks = self._chunks(sub, [slots[i] for i in ask])
            for i, chunk in zip(ask, chunks):
                self._queued[slots[i]].extend(postprocess(chunk[:self.cfg.execute_chunk], self.cfg, self.drive))
        return np.stack([self._queued[s].popleft() for s in slots]).astype(np.float32)

    def _chunks(self, obs: dict[str, np.ndarray], slots: list[int]) -> np.ndarray:
        """(B, K, dims): the whole predicted chunk when more than one action runs per inference, else (B, 1, dims).
        A policy without `act_chunk_batch` may return a chunk from `act_batch`."""
        if self.cfg.execute_chunk > 1 and hasattr(self.policy, "act_chunk_batch"):
            out = np.asarray(self.policy.act_chunk_batch(obs, slots), np.float32)
        else:
            out = np.asarray(self.policy.act_batch(obs, slots), np.float32)
        return out if out.ndim == 3 else out[:, None]

    def close(self) -> None:
        """Undo the stack's changes to the wrapped policy (its window); the policy itself stays open for its owner,
        who may deploy it again under another stack."""
        self._queued.clear()
        self.policy.window = self._trained_window


def deploy_policy(policy: Policy, cfg: DeployConfig, camera_order: str = "rgb",
                  env_instructions: str | None = None, family: TaskFamily | None = None) -> Policy:
    """`policy` behind `cfg`'s stack; the policy itself when `cfg` is the default (results stay bit-identical)."""
    return policy if cfg == DeployConfig() else DeployedPolicy(policy, cfg, camera_order, env_instructions, family)


def __getattr__(name: str):
    """Names that moved or are gone since the reorganisation (`mobile_vla_sim.moved`)."""
    return moved_name(__name__, name)
