"""Regenerate the shipped textures (`python -m scripts.make_textures` from the repository root); seeded, so
reproducible."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np

OUT = Path(__file__).resolve().parents[1] / "mobile_vla_sim" / "assets" / "textures"


def _tiles(rng: np.random.Generator, base, grout, per_image: int = 4, size: int = 256, noise: float = 6.0) -> np.ndarray:
    """Square floor tiles with grout lines; one image covers 2 m x 2 m of floor (pybullet_data plane.obj UVs)."""
    img = np.full((size, size, 3), base, np.float32) + rng.normal(0, noise, (size, size, 1))
    for k in range(0, size, size // per_image):
        img[k:k + 3, :] = grout
        img[:, k:k + 3] = grout
    return np.clip(img, 0, 255).astype(np.uint8)


def _speckle(rng: np.random.Generator, base, noise: float, size: int = 256) -> np.ndarray:
    return np.clip(np.asarray(base, np.float32) + rng.normal(0, noise, (size, size, 1)), 0, 255).astype(np.uint8)


def main() -> None:
    rng = np.random.default_rng(0)
    OUT.mkdir(exist_ok=True)
    iio.imwrite(OUT / "tile_grey.png", _tiles(rng, [150, 150, 150], [105, 105, 105]))
    iio.imwrite(OUT / "tile_beige.png", _tiles(rng, [190, 175, 150], [130, 120, 105]))
    iio.imwrite(OUT / "tile_small.png", _tiles(rng, [120, 125, 130], [80, 85, 90], per_image=8))
    iio.imwrite(OUT / "concrete.png", _speckle(rng, [140, 140, 140], 14))
    iio.imwrite(OUT / "plaster.png", _speckle(rng, [235, 235, 227], 8))


if __name__ == "__main__":
    main()
