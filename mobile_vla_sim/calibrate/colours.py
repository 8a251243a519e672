"""The fitted colours of a candidate camera, light and textures, solved rather than searched.

PyBullet's TinyRenderer multiplies each pixel of a surface by the surface's colour (per channel), so a render with
the fitted surfaces white, split by surface (its segmentation mask), gives every tinted render of the same camera,
light and textures as `sum over surfaces of colour x white part` (exact to about one grey level of 255, measured).
The colour term of the distance compares cell means, which are then linear in the colours: the best colours are a
bounded linear least-squares problem per channel, over every cell of every episode at once. A small ridge pulls a
surface the frames hardly show (the bottle, behind the box in most start views) to the base look's colour instead of
letting it take any value.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mobile_vla_sim.calibrate.distance import cells

#: Look colour knob -> the `BulletWorld.parts` surface it colours.
SURFACES = {"floor_rgb": "floor", "wall_rgb": "wall", "box_rgb": "box", "bottle_rgb": "target"}
#: Ridge weight per equation: a surface covering more than ~0.1 % of all cells is set by the frames, less by the prior.
RIDGE = 1e-4


@dataclass
class Split:
    """One episode's render with the fitted surfaces white, as layers at the compared size: one per body of a fitted
    surface (its pixels, the rest black), then everything else; each body's colour is its surface's fitted colour
    plus the body's own jitter (`envs.look.jitter`: zero in an easy scene), as the env renders it."""

    layers: np.ndarray    # (bodies + 1, h, w, 3) float32, 0..255
    surface: np.ndarray   # (bodies,) index of each body's fitted surface
    offsets: np.ndarray   # (bodies, 3) each body's colour jitter

    def basis(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Cell means (0..1) of each of the `n` fitted surfaces' layers at colour 1 (cells, n, 3), and of what does
        not depend on the fitted colours (cells, 3): the rest, and the bodies' jitter."""
        means = np.stack([cells(layer / 255.0).reshape(-1, 3) for layer in self.layers])
        bodies, rest = means[:-1], means[-1]
        per_surface = np.stack([bodies[self.surface == k].sum(axis=0) for k in range(n)], axis=1)
        return per_surface, rest + np.einsum("bcx,bx->cx", bodies, self.offsets)

    def tinted(self, colours: np.ndarray) -> np.ndarray:
        """The render with the fitted surfaces in `colours` (n, 3), RGB uint8."""
        body_colours = np.clip(colours[self.surface] + self.offsets, 0.0, 1.0)
        out = self.layers[-1] + np.einsum("bhwc,bc->hwc", self.layers[:-1], body_colours)
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def solve(bases: list[tuple[np.ndarray, np.ndarray]], reals: list[np.ndarray], prior: np.ndarray) -> np.ndarray:
    """Colours (n, 3) in 0..1 minimising the squared cell-mean differences to `reals` (each (cells, 3)), given each
    episode's `Split.basis`, with a ridge towards `prior` (n, 3)."""
    from scipy.optimize import lsq_linear

    n = prior.shape[0]
    rows = sum(len(real) for real in reals)
    ridge = np.sqrt(RIDGE * rows)
    out = np.empty((n, 3))
    for c in range(3):
        a = np.concatenate([basis[:, :, c] for basis, _ in bases] + [ridge * np.eye(n)])
        b = np.concatenate([real[:, c] - rest[:, c] for (_, rest), real in zip(bases, reals)] + [ridge * prior[:, c]])
        out[:, c] = lsq_linear(a, b, bounds=(0.0, 1.0), method="bvls").x
    return out
