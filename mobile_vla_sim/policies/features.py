"""Internal representations and offline loss of a VLA checkpoint, for the frozen-vs-LoRA comparison report.

`extract_features` picks windows from the data with a seed only (never from the model), so two checkpoints with
the same window length probed on the same data and seed see exactly the same windows.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from mobile_vla_sim.datasets.reader import EpisodeDataset
from mobile_vla_sim.datasets.windows import window_indices
from mobile_vla_sim.policies.checkpoint import load_policy_checkpoint
from mobile_vla_sim.policies.train import FrameFeatures, all_windows, load_episodes, mean_loss, window_batch
from mobile_vla_sim.policies.vla_policy import VLAPolicy


def _policy(policy_or_ckpt: VLAPolicy | str | os.PathLike) -> VLAPolicy:
    return policy_or_ckpt if isinstance(policy_or_ckpt, VLAPolicy) else load_policy_checkpoint(policy_or_ckpt)


def probe_windows(episodes: EpisodeDataset, window: int, max_windows: int, seed: int) -> np.ndarray:
    """(N, 2) (episode, t), sorted: full windows (t >= window - 1) with a next action, a seeded subset of them."""
    if len(episodes) == 0:
        raise ValueError(f"{episodes!r} has no episodes to probe; use a dataset split that has some")
    lengths = [episodes.num_frames(e) for e in range(len(episodes))]
    full = [(e, t) for e, n in enumerate(lengths) for t in range(window - 1, n - 1)]
    candidates = np.array(full or [(e, t) for e, n in enumerate(lengths) for t in range(n - 1)], dtype=np.int64)
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


@torch.no_grad()
def evaluate_offline_loss(policy_or_ckpt: VLAPolicy | str | os.PathLike, episodes: EpisodeDataset,
                          batch_size: int = 32) -> dict[str, float]:
    """The training objective (masked Huber on normalised chunks) and the RMSE of the executed action.

    RMSE compares the first action predicted at each window's last frame t (what the policy would execute) with the
    recorded action t + 1, in the layout's dims and in physical units (m/s, rad/s).
    """
    model = _policy(policy_or_ckpt).model.eval()
    eps = load_episodes(episodes, list(range(len(episodes))), model.head_cfg.chunk)
    feats = FrameFeatures(model, eps, cache=True)
    windows = all_windows(eps)
    if len(windows) == 0:
        raise ValueError(f"{episodes!r} has no frame with a next action; use longer episodes")
    window, dims = model.head_cfg.window, list(model.head_cfg.dims)
    sq_err, count = 0.0, 0
    for s in range(0, len(windows), batch_size):
        batch = window_batch(eps, windows[s:s + batch_size], window)
        pred, _ = model.head(feats(batch.frames), batch.frame_mask.to(model.scale.device))
        executed = model.denormalise(pred[:, -1, 0]).cpu()[:, dims]
        sq_err += float(((executed - batch.targets[:, -1, 0, dims]) ** 2).sum())
        count += executed.numel()
    return {"loss": mean_loss(model, feats, windows, window, batch_size), "rmse": float(np.sqrt(sq_err / count))}
