"""The interface every evaluated policy implements (VLA checkpoints, baselines, RL models).

A policy drives one or several concurrent episodes, each in a numbered *slot*, so that the evaluation
harness can batch inference across episodes. It keeps its own per-slot history (frames, LSTM state).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Sequence

import numpy as np

from mobile_vla_sim.errors import EvalError


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


def next_actions(policy: Policy, obs: dict[str, np.ndarray], slots: Sequence[int]) -> np.ndarray:
    """The (B, dims) actions the env executes now: `act_batch` as is, or the first action of each chunk.

    The one place that turns a policy's output into env actions, so how many actions of a chunk to execute
    is decided here for every caller.
    """
    actions = np.asarray(policy.act_batch(obs, slots), dtype=np.float32)
    if actions.ndim == 3 and actions.shape[1] >= 1:
        actions = actions[:, 0]
    if actions.ndim != 2 or actions.shape[0] != len(slots):
        raise EvalError(f"policy {policy.name!r} returned actions of shape {actions.shape} for {len(slots)} slots; "
                        "act_batch must return (B, dims) or an action chunk (B, K, dims)")
    return actions
