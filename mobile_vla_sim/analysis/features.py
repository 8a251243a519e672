"""Internal representations of a VLA checkpoint on dataset windows, for the frozen-vs-LoRA comparison report.

`extract_features` picks windows from the data with a seed only (never from the model), so two checkpoints with
the same window length probed on the same data and seed see exactly the same windows.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from mobile_vla_sim.datasets.reader import EpisodeDataset
from mobile_vla_sim.datasets.windows import window_index, window_indices
from mobile_vla_sim.errors import EvalError
from mobile_vla_sim.policies.checkpoint import load_policy_checkpoint
from mobile_vla_sim.policies.vla_policy import VLAPolicy


def _policy(policy_or_ckpt: VLAPolicy | str | os.PathLike) -> VLAPolicy:
    return policy_or_ckpt if isinstance(policy_or_ckpt, VLAPolicy) else load_policy_checkpoint(policy_or_ckpt)


def probe_windows(episodes: EpisodeDataset, window: int, max_windows: int, seed: int) -> np.ndarray:
    """(N, 2) (episode, t), sorted: full windows (t >= window - 1) with an action to take after t, a seeded subset."""
    candidates = window_index(episodes.targeted_frames(e) for e in range(len(episodes)))
    if len(candidates) == 0:
        raise EvalError(f"{episodes!r} has no window to probe; use a dataset with longer episodes")
    full = candidates[candidates[:, 1] >= window - 1]
    candidates = full if len(full) else candidates
    if len(candidates) > max_windows:
        pick = np.random.default_rng(seed).choice(len(candidates), size=max_windows, replace=False)
        candidates = candidates[np.sort(pick)]
    return candidates


@torch.no_grad()
def extract_features(policy_or_ckpt: VLAPolicy | str | os.PathLike, episodes: EpisodeDataset,
                     max_windows: int = 128, seed: int = 0) -> dict[str, Any]:
    """Per window: `context` (N, W, 64, D) image features, `action_token` (N, W, D) head inputs, `h_n` (N, hidden)
    last LSTM layer's final state, and `task`, `instruction`, `episode`, `frame` (the window's last frame)."""
    model = _policy(policy_or_ckpt).model
    window = model.head_cfg.window
    windows = probe_windows(episodes, window, max_windows, seed)
    contexts, tokens, meta = {}, {}, {}
    for e in np.unique(windows[:, 0]):
        rec = episodes[int(e)]
        ctx, prefix = model.encode_frames(rec.images, [rec.instruction] * rec.num_frames)
        contexts[e], tokens[e] = ctx.float().cpu(), model.action_features(prefix).float().cpu()
        meta[e] = (rec.task or "", rec.instruction)
    pairs = [window_indices(int(t), window) for _, t in windows]
    mask = torch.from_numpy(np.stack([m for _, m in pairs]))
    context = torch.stack([contexts[e][torch.from_numpy(i)] for (e, _), (i, _) in zip(windows, pairs)])
    action_token = torch.stack([tokens[e][torch.from_numpy(i)] for (e, _), (i, _) in zip(windows, pairs)])
    device = model.scale.device
    _, h_n = model.head(action_token.to(device), mask.to(device))
    return {"context": context.numpy(), "action_token": action_token.numpy(), "h_n": h_n.float().cpu().numpy(),
            "task": np.array([meta[e][0] for e, _ in windows]),
            "instruction": np.array([meta[e][1] for e, _ in windows]),
            "episode": windows[:, 0].copy(), "frame": windows[:, 1].copy()}
