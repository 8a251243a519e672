"""Training windows (docs/architecture.md "Dataset contract"): 8 past frames in, the next `n` actions of each frame
out, paired by the episode's frame convention (`hdf5_format.first_target`).

The one windowing code path: `EpisodeTargets.window` builds every window, for `WindowDataset` (torch items over
images) and for training's batches over cached features alike. `window_indices` and `future_actions` are pure
numpy so they work equally over images and over features.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch
from torch.utils.data import Dataset

from mobile_vla_sim.errors import DatasetError
from mobile_vla_sim.datasets.hdf5_format import CAPTURE, Episode, first_target
from mobile_vla_sim.datasets.reader import EpisodeDataset


def window_indices(t: int, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame indices t-window+1..t, left-padded by repeating frame 0, and a mask that is False on the padding."""
    if window < 1 or t < 0:
        raise DatasetError(f"need window >= 1 and frame t >= 0, got window={window}, t={t}")
    raw = np.arange(t - window + 1, t + 1)
    return np.maximum(raw, 0), raw >= 0


def future_actions(actions: np.ndarray, t: int, n: int, convention: str = CAPTURE) -> tuple[np.ndarray, np.ndarray]:
    """Targets for frame t: the n actions from `first_target(convention, t)` on (n, *action_shape), zero past the
    end, with a validity mask (n,). Past the last frame the robot is stopped."""
    actions = np.asarray(actions)
    start = first_target(convention, t)
    idx = np.arange(start, start + n)
    mask = idx < len(actions)
    targets = np.zeros((n, *actions.shape[1:]), dtype=actions.dtype)
    targets[mask] = actions[idx[mask]]
    return targets, mask


@dataclass
class EpisodeTargets:
    """One episode as training sees it: instruction, images (None once features are cached) and the targets of
    every frame, computed once so that each window is a slice."""

    instruction: str
    images: np.ndarray | None
    future: np.ndarray  # (T, n, 3) float32: the n actions to take after each frame t (clean labels where noise was
    #                      injected), from `first_target`
    future_mask: np.ndarray  # (T, n) bool

    @classmethod
    def of(cls, episode: Episode, n: int) -> "EpisodeTargets":
        pairs = [future_actions(episode.targets, t, n, episode.frame_convention) for t in range(episode.num_frames)]
        return cls(episode.instruction, episode.images, np.stack([p[0] for p in pairs]).astype(np.float32),
                   np.stack([p[1] for p in pairs]))

    @property
    def num_frames(self) -> int:
        return len(self.future)

    @property
    def targeted_frames(self) -> int:
        """Frames (a prefix) with an action to take after them; the rest serve only as history."""
        return int(self.future_mask[:, 0].sum())

    def window(self, t: int, window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The window ending at frame t: frame indices (W,), frame mask (W,), targets (W, n, 3) and target mask
        (W, n), False on padding frames and past the episode's end."""
        frames, frame_mask = window_indices(t, window)
        return frames, frame_mask, self.future[frames], self.future_mask[frames] & frame_mask[:, None]


def window_index(targeted: Iterable[int]) -> np.ndarray:
    """(N, 2) (episode, t) for every frame t with an action to take after it (`targeted_frames` per episode)."""
    return np.array([(e, t) for e, n in enumerate(targeted) for t in range(n)], dtype=np.int64).reshape(-1, 2)


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
        self.index = window_index(episodes.targeted_frames(e) for e in range(len(episodes)))
        # Consecutive windows share an episode; a small cache avoids re-decompressing its images each time
        # (a plain dict, so the dataset still pickles into spawned DataLoader workers).
        self.cache_episodes = max(1, cache_episodes)
        self._cache: OrderedDict[int, EpisodeTargets] = OrderedDict()

    def __len__(self) -> int:
        return len(self.index)

    def _episode(self, e: int) -> EpisodeTargets:
        if e not in self._cache:
            self._cache[e] = EpisodeTargets.of(self.episodes[e], self.n)
            if len(self._cache) > self.cache_episodes:
                self._cache.popitem(last=False)
        self._cache.move_to_end(e)
        return self._cache[e]

    def __getitem__(self, i: int) -> dict:
        e, t = (int(v) for v in self.index[i])
        episode = self._episode(e)
        frames, frame_mask, targets, action_mask = episode.window(t, self.window)
        return {
            "images": torch.from_numpy(episode.images[frames]),
            "frame_mask": torch.from_numpy(frame_mask),
            "actions": torch.from_numpy(targets),
            "action_mask": torch.from_numpy(action_mask),
            "instruction": episode.instruction,
            "episode_index": e,
            "frame_index": t,
        }
