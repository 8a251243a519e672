"""The interface every evaluated policy implements (VLA checkpoints, baselines, RL models).

A policy drives one or several concurrent episodes, each in a numbered *slot*, so that the evaluation
harness can batch inference across episodes. It keeps its own per-slot history (frames, LSTM state).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Sequence

import numpy as np

from mobile_vla_sim.envs.engine import next_actions


class Policy(ABC):
    """Base class: implement `act_batch`; `reset` and `act` come for free where nothing is stateful."""

    #: Env action layout the policy emits: "diff" (linear_x, angular_z) or "omni" (linear_x, linear_y, angular_z).
    drive: str = "diff"
    #: Short name for reports.
    name: str = "policy"
    #: Camera image side the policy was trained on (None: any); a policy server tells its clients.
    image_size: int | None = None
    #: Future actions `act_batch` returns per slot: 1 -> (B, dims), K > 1 -> an action chunk (B, K, dims).
    chunk_size: int = 1
    #: Whether `act_batch` also takes float32 images of already normalised pixels (a deployment's `normalize`).
    takes_normalised_pixels: bool = False

    def reset(self, instruction: str, slot: int = 0) -> None:
        """Start a new episode in `slot` with this instruction."""

    @abstractmethod
    def act_batch(self, obs: dict[str, np.ndarray], slots: Sequence[int]) -> np.ndarray:
        """Actions float32 for observations stacked on axis 0, one row per slot: (B, dims), or an action chunk
        (B, K, dims) of the next K actions; `next_actions` decides what the env executes."""

    def act(self, obs: dict[str, np.ndarray], slot: int = 0) -> np.ndarray:
        """Action to execute for a single, unbatched observation."""
        batched = {k: np.asarray(v)[None] for k, v in obs.items()}
        return next_actions(self, batched, [slot])[0]

    def stats(self) -> dict:
        """Figures the policy measured about itself (e.g. a remote policy's round-trip latency) for results.json;
        still valid after `close`."""
        return {}

    def close(self) -> None:
        """Release resources (models, files)."""
