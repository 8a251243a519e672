"""The one policy interface: everything that drives the robot (experts, baselines, checkpoints, plugins, servers).

A policy drives one or several concurrent episodes, each in a numbered *slot*, so that inference is batched across
episodes; it keeps its own per-slot history (frames, LSTM state). It lives on the ground floor so that the episode
engine, every policy kind and the server all implement or call this one class.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Sequence

import numpy as np

from mobile_vla_sim.errors import EvalError, MvlaError


class Policy(ABC):
    """Implement `act_batch`; `reset` and `act` come for free where nothing is stateful.

    Class attributes are the policy's metadata (what a server tells its clients, what eval checks):
    `drive` the env action layout it emits, `inputs` the observation keys it reads (None: all; the expert needs no
    image, so rollout workers send none), `image_size` the camera side it was trained on, `chunk_size` the future
    actions `act_batch` returns per slot, `window` its frames of history (None: none), `max_slots` how many episodes
    it can run at once (None: any; an inference server holding one episode's history: 1), `takes_normalised_pixels`
    whether it also accepts float32 images already normalised (a deployment's `normalize`), and `trained_env` the
    env knobs it was trained with (eval uses them for knobs the user left unset).
    """

    name: str = "policy"
    drive: str = "diff"
    inputs: tuple[str, ...] | None = None
    image_size: int | None = None
    chunk_size: int = 1
    window: int | None = None
    max_slots: int | None = None
    takes_normalised_pixels: bool = False
    trained_env: dict[str, Any] = {}

    def reset(self, instruction: str, slot: int = 0) -> None:
        """Start a new episode in `slot` with this instruction."""

    @abstractmethod
    def act_batch(self, obs: dict[str, np.ndarray], slots: Sequence[int]) -> np.ndarray:
        """float32 actions for observations stacked on axis 0, one row per slot: (B, dims), or an action chunk
        (B, K, dims) of the next K actions; `next_actions` decides what the env executes."""

    def act(self, obs: dict[str, np.ndarray], slot: int = 0) -> np.ndarray:
        """The action to execute for one unbatched observation."""
        return next_actions(self, {k: np.asarray(v)[None] for k, v in obs.items()}, [slot])[0]

    @property
    def metadata(self) -> dict[str, Any]:
        """The policy's metadata as plain values (sent by the policy server on connect)."""
        return {"policy": self.name, "drive": self.drive, "image_size": self.image_size,
                "chunk_size": self.chunk_size, "window": self.window, "trained_env": dict(self.trained_env)}

    def stats(self) -> dict:
        """Figures the policy measured about itself (e.g. a remote policy's latency) for results.json; still valid
        after `close`."""
        return {}

    def close(self) -> None:
        """Release resources (models, connections)."""


def next_actions(policy: Policy, obs: dict[str, np.ndarray], slots: Sequence[int]) -> np.ndarray:
    """The (B, dims) actions the env executes now: `act_batch` as is, or the first action of each chunk.

    The one place that turns a policy's output into env actions, for every caller (rollouts, offline metrics,
    `Policy.act`).
    """
    try:
        raw = policy.act_batch(obs, slots)
    except MvlaError:
        raise
    except Exception as err:  # a plugin's (or model's) own failure: one line naming it; callers keep finished work
        message = str(err).splitlines()[0][:200] if str(err) else ""
        raise EvalError(f"policy {policy.name!r} failed in act_batch ({type(err).__name__}: {message}); fix the "
                        "policy (`mvla-sim --debug ...` shows its traceback)") from err
    try:
        actions = np.asarray(raw, dtype=np.float32)
    except (TypeError, ValueError) as err:
        raise EvalError(f"policy {policy.name!r} returned a {type(raw).__name__} from act_batch that is not an array "
                        f"of numbers ({str(err)[:120]}); return float32 actions (B, dims)") from None
    if actions.ndim == 3 and actions.shape[1] >= 1:
        actions = actions[:, 0]
    if actions.ndim != 2 or actions.shape[0] != len(slots):
        raise EvalError(f"policy {policy.name!r} returned actions of shape {actions.shape} for {len(slots)} slots; "
                        "act_batch must return (B, dims) or an action chunk (B, K, dims)")
    return actions
