"""The interface every evaluated policy implements (VLA checkpoints, baselines, RL models).

A policy drives one or several concurrent episodes, each in a numbered *slot*, so that the evaluation
harness can batch inference across episodes. It keeps its own per-slot history (frames, LSTM state).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Sequence

import numpy as np


class Policy(ABC):
    """Base class: implement `act_batch`; `reset` and `act` come for free where nothing is stateful."""

    #: Env action layout the policy emits: "diff" (linear_x, angular_z) or "omni" (linear_x, linear_y, angular_z).
    drive: str = "diff"
    #: Short name for reports.
    name: str = "policy"
    #: Whether `act_batch` also takes float32 images of already normalised pixels (a deployment's `normalize`).
    takes_normalised_pixels: bool = False

    def reset(self, instruction: str, slot: int = 0) -> None:
        """Start a new episode in `slot` with this instruction."""

    @abstractmethod
    def act_batch(self, obs: dict[str, np.ndarray], slots: Sequence[int]) -> np.ndarray:
        """Actions (len(slots), action_dim) float32 for observations stacked on axis 0, one row per slot."""

    def act(self, obs: dict[str, np.ndarray], slot: int = 0) -> np.ndarray:
        """Action for a single, unbatched observation."""
        batched = {k: np.asarray(v)[None] for k, v in obs.items()}
        return self.act_batch(batched, [slot])[0]

    def close(self) -> None:
        """Release resources (models, files)."""
