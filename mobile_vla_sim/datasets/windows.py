"""Training windows (ARCHITECTURE.md "Dataset contract"): 8 past frames in, the next `n` actions of each frame out.

`window_indices` and `future_actions` are pure numpy so they work equally over images and over cached features.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from torch.utils.data import Dataset

from mobile_vla_sim.errors import DatasetError
from mobile_vla_sim.datasets.hdf5_format import Episode
from mobile_vla_sim.datasets.reader import EpisodeDataset


def window_indices(t: int, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame indices t-window+1..t, left-padded by repeating frame 0, and a mask that is False on the padding."""
    if window < 1 or t < 0:
        raise DatasetError(f"need window >= 1 and frame t >= 0, got window={window}, t={t}")
    raw = np.arange(t - window + 1, t + 1)
    return np.maximum(raw, 0), raw >= 0


def future_actions(actions: np.ndarray, t: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Targets for frame t: actions t+1..t+n (n, *action_shape), zero past the end, with a validity mask (n,).

    After seeing image t the policy should take action t+1; past the last frame the robot is stopped.
    """
    actions = np.asarray(actions)
    idx = np.arange(t + 1, t + 1 + n)
    mask = idx < len(actions)
    targets = np.zeros((n, *actions.shape[1:]), dtype=actions.dtype)
    targets[mask] = actions[idx[mask]]
    return targets, mask


class WindowDataset(Dataset):
    """Every frame t with at least one future action, as a window ending at t, as torch tensors.

    Items: `images` uint8 (W, H, W, 3), `frame_mask` bool (W,), `actions` float32 (W, n, 3) targets of each window
    frame, `action_mask` bool (W, n), `instruction` str, `episode_index`, `frame_index`. Targets are the clean
    expert labels where noise was injected (`Episode.targets`).
    """

    def __init__(self, episodes: EpisodeDataset, window: int = 8, fwd_pred_next_n: int = 10, cache_episodes: int = 4):
        if window < 1 or fwd_pred_next_n < 1:
            raise DatasetError(f"window and fwd_pred_next_n must be >= 1, got {window} and {fwd_pred_next_n}")
        self.episodes, self.window, self.n = episodes, window, fwd_pred_next_n
        self.index = [(e, t) for e in range(len(episodes)) for t in range(episodes.num_frames(e) - 1)]
        # Consecutive windows share an episode; a small cache avoids re-decompressing its images each time
        # (a plain dict, so the dataset still pickles into spawned DataLoader workers).
        self.cache_episodes = max(1, cache_episodes)
        self._cache: OrderedDict[int, Episode] = OrderedDict()

    def __len__(self) -> int:
        return len(self.index)

    def _episode(self, e: int) -> Episode:
        if e not in self._cache:
            self._cache[e] = self.episodes[e]
            if len(self._cache) > self.cache_episodes:
                self._cache.popitem(last=False)
        self._cache.move_to_end(e)
        return self._cache[e]

    def __getitem__(self, i: int) -> dict:
        e, t = self.index[i]
        record = self._episode(e)
        frames, frame_mask = window_indices(t, self.window)
        pairs = [future_actions(record.targets, int(k), self.n) for k in frames]
        targets = np.stack([p[0] for p in pairs]).astype(np.float32)
        action_mask = np.stack([p[1] for p in pairs]) & frame_mask[:, None]
        return {
            "images": torch.from_numpy(record.images[frames]),
            "frame_mask": torch.from_numpy(frame_mask),
            "actions": torch.from_numpy(targets),
            "action_mask": torch.from_numpy(action_mask),
            "instruction": record.instruction,
            "episode_index": e,
            "frame_index": t,
        }
