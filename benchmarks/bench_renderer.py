"""Camera render time per frame: TinyRenderer (CPU) against the EGL plugin, at several resolutions.

On a CPU-only machine EGL runs on Mesa's llvmpipe (software); on a GPU machine it runs on the GPU.
"""

from __future__ import annotations

import argparse

import gymnasium as gym

import mobile_vla_sim  # noqa: F401
from benchmarks.common import report, timer

SIZES = (224, 112, 64)  # default camera, the tiny backbone's input, the tests' size


def _ms_per_frame(renderer: str, size: int, frames: int) -> float | None:
    try:
        env = gym.make("MobileVLA/Nav-v0", difficulty="medium", image_size=size, renderer=renderer)
    except ValueError as e:  # no EGL plugin / display
        print(f"  ({renderer} unavailable: {e})")
        return None
    try:
        env.reset(seed=0)
        world = env.unwrapped._world
        world.camera_image()  # warm-up (EGL context, textures)
        with timer() as t:
            for _ in range(frames):
                world.camera_image()
        return 1000 * t[0] / frames
    finally:
        env.close()


def run(frames: int = 100) -> dict:
    tiny = {s: _ms_per_frame("tiny", s, frames) for s in SIZES}
    egl = {s: _ms_per_frame("egl", s, frames) for s in SIZES}
    rows = [(f"{s}px: tiny / egl ms per frame", f"{tiny[s]:.2f} / " + ("n/a" if egl[s] is None else f"{egl[s]:.2f}"))
            for s in SIZES]
    ratio = tiny[224] / egl[224] if egl[224] else float("nan")
    return report("renderer, camera frame at 224/112/64 px", rows, ("tiny / egl time at 224px (>1: egl faster)", ratio, None))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--frames", type=int, default=100)
    run(ap.parse_args().frames)
