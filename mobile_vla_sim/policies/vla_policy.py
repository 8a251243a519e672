"""`VLAPolicy`: a trained VLA checkpoint behind the evaluation `Policy` interface, batched across slots."""

from __future__ import annotations

from collections import deque
from typing import Any, Sequence

import numpy as np
import torch

from mobile_vla_sim.envs.actions import from_action3
from mobile_vla_sim.envs.config import ENV_DEFAULTS
from mobile_vla_sim.errors import ConfigError
from mobile_vla_sim.policy import Policy
from mobile_vla_sim.policies.vla import INFERENCE_BATCH, VLAModel


class VLAPolicy(Policy):
    """Per new frame: backbone calls for all slots, a per-slot window of action-token features, the LSTM head.

    Executes the first action of the chunk predicted at the window's last frame, like the real project;
    `act_chunk_batch` returns the whole chunk (for a deployment that executes several). `window` may be changed
    before `reset` (a deployment running another window than the trained one); float images are taken as already
    normalised pixels. Inference is batch-invariant: a slot's features, LSTM state and actions are bit-identical
    whichever slots, envs per worker or workers share its call (see `act_chunk_batch`).
    """

    takes_normalised_pixels = True

    def __init__(self, model: VLAModel, checkpoint: dict[str, Any], batch: int = INFERENCE_BATCH):
        if batch < 1:
            raise ConfigError(f"inference batch (rows of every policy call) must be >= 1, got {batch}")
        self.model = model.eval()
        self.batch = batch
        #: The checkpoint's config (training options, data, losses), as `read_checkpoint_config` gives it.
        self.checkpoint = checkpoint
        self.drive = checkpoint["drive"]
        self.name = f"vla-{checkpoint['mode']}"
        self.window = model.head_cfg.window
        trained = checkpoint.get("dataset_config") or {}
        self.trained_env = {k: trained[k] for k in ENV_DEFAULTS if k in trained}
        self.image_size = self.trained_env.get("image_size")
        self._instructions: dict[int, str] = {}
        self._history: dict[int, deque[torch.Tensor]] = {}

    def reset(self, instruction: str, slot: int = 0) -> None:
        self._instructions[slot] = instruction
        self._history[slot] = deque(maxlen=self.window)

    def _windows(self, slots: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded (B, W, D) features and (B, W) frame mask, as in training windows."""
        dim = self.model.backbone.hidden_size
        feats = torch.zeros(len(slots), self.window, dim, device=self.model.scale.device)
        mask = torch.zeros(len(slots), self.window, dtype=torch.bool, device=feats.device)
        for i, slot in enumerate(slots):
            hist = self._history[slot]
            feats[i, self.window - len(hist):] = torch.stack(list(hist))
            mask[i, self.window - len(hist):] = True
        return feats, mask

    def act_batch(self, obs: dict[str, np.ndarray], slots: Sequence[int]) -> np.ndarray:
        return self.act_chunk_batch(obs, slots)[:, 0]

    @torch.no_grad()
    def act_chunk_batch(self, obs: dict[str, np.ndarray], slots: Sequence[int]) -> np.ndarray:
        """(B, chunk, action dims): every future action the head predicts at the window's last frame.

        Computed in calls of one fixed shape so that it never depends on the other slots. Kernels choose their
        float summation order from the input shapes (a 1-row matmul, a 3-row one and an 8-row one round
        differently, and the closed loop amplifies 1e-6 into different episodes). So the backbone and the LSTM
        always run on exactly `self.batch` rows (short calls padded with a copy of a real row), and prefixes are
        padded to a length set by their own instruction (`VLAModel.invariant_frame_features`).
        """
        slots = list(slots)
        missing = [s for s in slots if s not in self._instructions]
        if missing:
            raise ValueError(f"slots {missing} were never reset; call policy.reset(instruction, slot) first")
        images = np.asarray(obs["image"])
        if len(images) != len(slots):
            raise ValueError(f"{len(images)} images for {len(slots)} slots; stack one observation per slot")
        feats = self.model.invariant_frame_features(images, [self._instructions[s] for s in slots], self.batch)
        for slot, f in zip(slots, feats):
            self._history[slot].append(f)
        pred, _ = self.model.invariant_head(*self._windows(slots), self.batch)
        action3 = self.model.denormalise(pred[:, -1]).cpu().numpy()
        return from_action3(action3, self.drive).astype(np.float32)

    def close(self) -> None:
        self._history.clear()
        self._instructions.clear()
