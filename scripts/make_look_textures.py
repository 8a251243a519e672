"""Make the textures of the `lab` look (`mobile_vla_sim.envs.look`): seeded, so the same pixels every run.

    python scripts/make_look_textures.py [--out mobile_vla_sim/assets/textures]

Drawn in NumPy from the real corridor as the real project describes it, so no third-party images or licences are involved:
grey floor tiles, white painted walls with a grey skirting board, grey cardboard, a PET bottle's label. Textures are
near-white where a surface's colour knob should decide the colour (walls, cardboard): PyBullet multiplies a texture
by the body's colour, so `--box-rgb` and `--wall-rgb` still set the colour of a textured surface.

How PyBullet maps them (measured with a texture that encodes its own coordinates): the floor (pybullet_data's
plane.obj) repeats the image every 2 m; each face of a box shows one 64 x 64 cell of the 256 x 256 image (a cube
atlas: +y face columns 0-63 rows 192-255 with its bottom at row 255, -y face columns 64-127 rows 128-191 with its
bottom at row 128, -x face columns 128-191 rows 192-255 with its bottom at row 255); a cylinder wraps the rows
around it and runs columns 0-127 from its bottom to its top.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import imageio.v3 as iio
import numpy as np

SIZE = 256
OUT = Path(__file__).resolve().parents[1] / "mobile_vla_sim" / "assets" / "textures"


def _smooth_noise(rng: np.random.Generator, cells: int, size: int = SIZE) -> np.ndarray:
    """Low-frequency noise in about -1..1: a cells x cells grid of values, bilinearly upsampled (tileable)."""
    grid = rng.uniform(-1, 1, (cells, cells))
    pos = np.arange(size) * cells / size
    i0 = np.floor(pos).astype(int)
    t = pos - i0
    i1 = (i0 + 1) % cells
    rows = grid[i0] * (1 - t)[:, None] + grid[i1] * t[:, None]
    return rows[:, i0] * (1 - t)[None, :] + rows[:, i1] * t[None, :]


def lab_floor(rng: np.random.Generator) -> np.ndarray:
    """Grey terrazzo-like tiles, 50 cm (4 per 2 m image), each a slightly different shade, thin dark grout."""
    per, img = 4, np.zeros((SIZE, SIZE), np.float32)
    step = SIZE // per
    shades = rng.normal(0, 5, (per, per))
    for r in range(per):
        for c in range(per):
            img[r * step:(r + 1) * step, c * step:(c + 1) * step] = 158 + shades[r, c]
    img += 6 * _smooth_noise(rng, 16) + rng.normal(0, 4, img.shape)
    speckle = rng.random(img.shape)
    img[speckle < 0.015] -= 45          # dark stone chips
    img[speckle > 0.99] += 30           # light chips
    for k in range(0, SIZE, step):
        img[k:k + 2, :] = 112
        img[:, k:k + 2] = 112
    return np.repeat(np.clip(img, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def lab_wall(rng: np.random.Generator) -> np.ndarray:
    """White paint (faint roller marks) with a grey skirting board (~12 cm of the 1 m walls) along the bottom of the
    three faces the camera sees: the corridor's two inner faces and the far wall's."""
    img = 246 + 3 * _smooth_noise(rng, 32) + rng.normal(0, 1.5, (SIZE, SIZE))
    board = lambda rows, cols: 120 + rng.normal(0, 2, (len(range(*rows)), len(range(*cols))))  # noqa: E731
    for rows, cols in (((248, 256), (0, 64)), ((248, 256), (128, 192)), ((128, 136), (64, 128))):
        img[slice(*rows), slice(*cols)] = board(rows, cols)
    return np.repeat(np.clip(img, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def cardboard(rng: np.random.Generator) -> np.ndarray:
    """Corrugated cardboard: faint flutes, fibres, blotches; near-white so the box colour sets the tone."""
    y = np.arange(SIZE)[:, None]
    flutes = 4 * np.sin(2 * np.pi * y / 5.0) * np.ones((1, SIZE))
    fibres = np.cumsum(rng.normal(0, 1.2, (SIZE, SIZE)), axis=1)
    fibres = (fibres - fibres.mean(axis=1, keepdims=True)) * 0.25
    img = 232 + flutes + fibres + 8 * _smooth_noise(rng, 8) + rng.normal(0, 3, (SIZE, SIZE))
    rgb = np.stack([img * 1.0, img * 0.97, img * 0.92], axis=2)   # slightly warm
    return np.clip(rgb, 0, 255).astype(np.uint8)


def bottle_label(rng: np.random.Generator) -> np.ndarray:
    """A PET bottle: dark liquid, a white label band (35-62 % of the height) with a red and a green stripe and print
    marks, a vertical highlight where the light catches the PET."""
    img = np.empty((SIZE, SIZE, 3), np.float32)
    img[:] = (40, 32, 26)
    img += rng.normal(0, 3, (SIZE, SIZE, 1))
    img[: SIZE // 12] += 90                                 # highlight: a few rows, i.e. a stripe up the bottle
    side = SIZE // 2                                        # columns 0-127 run up the side
    lo, hi = int(0.35 * side), int(0.62 * side)
    img[:, lo:hi] = (235, 232, 225)
    img[:, lo + 3:lo + 8] = (200, 30, 35)                   # red stripe
    img[:, hi - 7:hi - 3] = (30, 110, 60)                   # green stripe
    marks = rng.random((SIZE // 4, (hi - lo - 20) // 2)) < 0.3
    img[:, lo + 10:lo + 10 + marks.shape[1] * 2][np.kron(marks, np.ones((4, 2), bool))] = (60, 60, 70)
    return np.clip(img, 0, 255).astype(np.uint8)


TEXTURES = {"lab_floor": lab_floor, "lab_wall": lab_wall, "cardboard": cardboard, "bottle_label": bottle_label}


def make(out: Path = OUT) -> list[Path]:
    """Write every texture of the `lab` look to `out`; each from its own seeded stream."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed, (name, draw) in enumerate(TEXTURES.items()):
        path = out / f"{name}.png"
        iio.imwrite(path, draw(np.random.default_rng([2026, seed])))
        paths.append(path)
    return paths


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=OUT)
    for p in make(ap.parse_args().out):
        print(p, f"{p.stat().st_size / 1024:.0f} KiB")
