"""Offline metrics on held-out demonstrations, computed through the policy's own interface: the one RMSE.

Each val episode is one slot: the policy is `reset` with the episode's instruction and fed its frames one at a
time through `act_batch` (all episodes batched), so it windows frames exactly as in closed loop. The prediction
after image t (what the policy would execute) is compared with the recorded action to take after it (the clean expert
label where noise was injected) in the dims of the policy's action layout, in m/s and rad/s. The val episodes are
the ones training validated on (`datasets.splits`); `compare` reports this RMSE too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from mobile_vla_sim.datasets.hdf5_format import first_target, targeted_frames
from mobile_vla_sim.datasets.reader import EpisodeDataset
from mobile_vla_sim.envs.actions import LAYOUT_DIMS
from mobile_vla_sim.envs.engine import next_actions
from mobile_vla_sim.errors import EvalError
from mobile_vla_sim.eval.schema import OfflineMetrics
from mobile_vla_sim.policy import Policy

DIM_NAMES = ("linear_x", "linear_y", "angular_z")
#: Targets smaller than this (m/s or rad/s) have no meaningful sign and are left out of sign agreement.
SIGN_EPS = 1e-3


def offline_metrics(policy: Policy, data: str | Path | EpisodeDataset, split: str = "val",
                    max_episodes: int | None = None, batch_episodes: int = 32) -> OfflineMetrics:
    """RMSE (overall and per dim), MAE and sign agreement of `policy` on a dataset split (or on `data` itself when
    it is an `EpisodeDataset`); `split="all"` uses every successful demonstration."""
    ds = data if isinstance(data, EpisodeDataset) else EpisodeDataset(data, split=split, only_success=True)
    if len(ds) == 0:
        raise EvalError(f"{ds!r} has no successful episode; generate more episodes or pass another --offline-data")
    n = len(ds) if max_episodes is None else min(max_episodes, len(ds))
    dims = list(LAYOUT_DIMS[policy.drive])
    preds, targets = [], []
    for start in range(0, n, batch_episodes):
        episodes = [ds[i] for i in range(start, min(n, start + batch_episodes))]
        p, t = predict_episodes(policy, episodes, dims)
        preds.append(p)
        targets.append(t)
    pred, target = np.concatenate(preds), np.concatenate(targets)
    err = pred - target
    sig = np.abs(target) > SIGN_EPS
    return OfflineMetrics(
        data=str(ds.root), split=ds.split, episodes=n, frames=len(pred),
        rmse=float(np.sqrt(np.mean(err**2))),
        rmse_per_dim={DIM_NAMES[d]: float(np.sqrt(np.mean(err[:, j] ** 2))) for j, d in enumerate(dims)},
        mae=float(np.mean(np.abs(err))),
        sign_agreement=float(np.mean(np.sign(pred[sig]) == np.sign(target[sig]))) if sig.any() else float("nan"),
        episode_names=ds.names[:n])


def predict_episodes(policy: Policy, episodes: list, dims: Sequence[int],
                     instructions: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Feed every frame with an action to take after it (slot = episode) and pair each prediction with that action
    (`hdf5_format.first_target`: the move stored with the frame, or the next one in files of the older convention).

    `instructions` (one per episode) replaces the recorded instructions, for text sensitivity (`probe.text`)."""
    for slot, ep in enumerate(episodes):
        policy.reset(ep.instruction if instructions is None else instructions[slot], slot=slot)
    counts = [targeted_frames(ep.num_frames, ep.frame_convention) for ep in episodes]
    preds, targets = [], []
    for t in range(max(counts)):
        live = [i for i, n in enumerate(counts) if t < n]
        obs = {"image": np.stack([episodes[i].images[t] for i in live])}
        if all(getattr(episodes[i], "states", None) is not None for i in live):
            obs["state"] = np.stack([episodes[i].states[t] for i in live]).astype(np.float32)
        action = np.asarray(next_actions(policy, obs, live), dtype=np.float64)
        preds.append(action)
        targets.append(np.stack([np.asarray(episodes[i].targets[first_target(episodes[i].frame_convention, t)],
                                            dtype=np.float64)[dims] for i in live]))
    return np.concatenate(preds), np.concatenate(targets)
