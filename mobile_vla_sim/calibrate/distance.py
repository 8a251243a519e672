"""The image-domain distance between a real start frame and its sim render: three terms, each 0 for equal frames.

* **colour**: RMS difference of the mean colour (0..1) of a 6 x 8 grid of cells. A cell is ~12 x 21 px at the default
  fit size, so a box that stands a few centimetres apart in the real scene and the sim moves it little, while the
  colours of floor, walls and box, the light, and the camera (which moves the horizon and the floor's share of the
  frame) move it a lot.
* **texture**: RMS difference, per cell, of the mean absolute luminance gradient along x and y at the frame's size and
  at half of it: tile grout, speckle and plain paint differ here even at equal mean colour.
* **features**: mean cosine distance between the per-patch features of a fixed vision tower (the tiny sim-pretrained
  Kosmos-2 tower of `policies.tiny_kosmos`, post-layernorm patch tokens, frames squashed to its 112 px as the real
  project squashes to 224): what a Kosmos-2-style policy's own first stage sees, beyond hand-picked statistics. It is
  fixed (no training, offline, deterministic) and costs well under a millisecond per frame, so hundreds of
  evaluations stay cheap; the 1.66 B-parameter Kosmos-2 would take seconds per frame on a CPU.

`distance = colour + 5 x texture + feature_weight x features` (`feature_weight` 0.1 by default), averaged over
episodes. The weights were set from measured profiles: a mis-set knob moves the colour term by ~0.03, the texture
term by ~0.005 and the feature term by ~0.3. The feature term is also sharp: it drops steeply within a degree or a
centimetre of the right camera and is flat and bumpy further away, so at a small weight it sharpens the optimum
without steering the search into its bumps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GRID = (6, 8)
#: Gradients differ less than colours (a mis-set texture moves the texture term ~5x less than a mis-set colour moves
#: the colour term), so the texture term weighs 5 (module doc).
TEXTURE_WEIGHT = 5.0
TERMS = ("colour", "texture", "features")
#: Rows per call of the vision tower: one fixed shape, so an episode's features never depend on how episodes are
#: split between worker processes (CPU kernels choose their summation order from the shapes).
FEATURE_BATCH = 4


@dataclass
class FrameStats:
    """What the distance compares of one frame."""

    colour: np.ndarray    # (6, 8, 3) cell mean colour, 0..1
    texture: np.ndarray   # (6, 8, 4) cell mean |d/dx|, |d/dy| of luminance, full and half size
    features: np.ndarray  # (patches, dim) unit-norm vision-tower features; (0, 0) when not computed


def cells(x: np.ndarray) -> np.ndarray:
    """Mean of `x` (H, W, C) over a GRID of near-equal cells."""
    rows = np.linspace(0, x.shape[0], GRID[0] + 1).round().astype(int)
    cols = np.linspace(0, x.shape[1], GRID[1] + 1).round().astype(int)
    sums = np.add.reduceat(np.add.reduceat(x, rows[:-1], axis=0), cols[:-1], axis=1)
    counts = np.diff(rows)[:, None, None] * np.diff(cols)[None, :, None]
    return sums / counts


def _gradients(lum: np.ndarray) -> np.ndarray:
    """|d/dx| and |d/dy| of `lum` (H, W), each padded back to (H, W) by repeating the last row/column."""
    dx = np.abs(np.diff(lum, axis=1, append=lum[:, -1:]))
    dy = np.abs(np.diff(lum, axis=0, append=lum[-1:, :]))
    return np.stack([dx, dy], axis=-1)


def frame_stats(image: np.ndarray, features: np.ndarray | None = None) -> FrameStats:
    """The colour and texture statistics of an RGB uint8 frame (and its vision-tower features, if computed)."""
    rgb = image.astype(np.float64) / 255.0
    lum = rgb @ np.array([0.299, 0.587, 0.114])
    half = lum[: lum.shape[0] // 2 * 2, : lum.shape[1] // 2 * 2]
    half = half.reshape(half.shape[0] // 2, 2, half.shape[1] // 2, 2).mean(axis=(1, 3))
    texture = np.concatenate([cells(_gradients(lum)), cells(_gradients(half))], axis=-1)
    return FrameStats(colour=cells(rgb), texture=texture,
                      features=np.zeros((0, 0)) if features is None else features)


def terms(real: FrameStats, sim: FrameStats) -> dict[str, float]:
    """The three terms between a real frame's statistics and a sim frame's."""
    out = {"colour": float(np.sqrt(np.mean((real.colour - sim.colour) ** 2))),
           "texture": float(np.sqrt(np.mean((real.texture - sim.texture) ** 2))),
           "features": 0.0}
    if real.features.size and sim.features.size:
        out["features"] = float(np.mean(1.0 - np.sum(real.features * sim.features, axis=-1)))
    return out


def combine(parts: dict[str, float], feature_weight: float) -> float:
    """The distance from its terms."""
    return parts["colour"] + TEXTURE_WEIGHT * parts["texture"] + feature_weight * parts["features"]


class FeatureTower:
    """The tiny sim-pretrained Kosmos-2 vision tower as a fixed feature extractor (CPU, one thread, no grad)."""

    def __init__(self):
        import torch

        from mobile_vla_sim.policies.config import CLIP_MEAN, CLIP_STD
        from mobile_vla_sim.policies.tiny_kosmos import build_tiny_pretrained

        model, _ = build_tiny_pretrained()
        self.tower = model.vision_model.eval()
        self.size = int(model.config.vision_config.image_size)
        self.mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)

    def __call__(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        """Unit-norm per-patch features (patches, dim) of RGB uint8 frames, squashed to the tower's size."""
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # one thread: the same summation order in every process
        try:
            return [f for i in range(0, len(frames), FEATURE_BATCH) for f in self._batch(frames[i:i + FEATURE_BATCH])]
        finally:
            torch.set_num_threads(threads)

    def _batch(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        """Features of up to FEATURE_BATCH frames, in one call of FEATURE_BATCH rows (zero frames pad it)."""
        import torch
        import torch.nn.functional as F

        with torch.no_grad():
            x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255.0
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
            x = torch.cat([x, x.new_zeros(FEATURE_BATCH - len(frames), *x.shape[1:])])
            hidden = self.tower(pixel_values=(x - self.mean) / self.std).last_hidden_state
            patches = F.normalize(self.tower.model.post_layernorm(hidden[:, 1:]), dim=-1)
        return list(patches[:len(frames)].double().numpy())
