"""Render cost of the `lab` look (textured floor, walls, box and bottle) against the plain look, frames at 224 px.

The same scenes (seeds, difficulty) and robot poses in both looks: the start view and a view part of the way to the
box, so the box and bottle fill more of the frame. The two looks alternate in rounds and the best round of each is
kept, so a busy machine slows both alike. Target: the lab look costs at most 1.5x the plain one.
"""

from __future__ import annotations

import argparse

import numpy as np

from benchmarks.common import report, timer
from mobile_vla_sim.envs.config import EnvConfig, make_env
from mobile_vla_sim.envs.look import LookConfig

TARGET_COST = 1.5


def _ms_per_frame(look: str, size: int, scenes: int, frames: int) -> float:
    """Mean camera frame time (ms) over `scenes` medium scenes, `frames` renders per pose, two poses per scene."""
    env = make_env(EnvConfig(image_size=size, look=LookConfig(look_preset=look)))
    total, count = 0.0, 0
    try:
        for seed in range(scenes):
            env.reset(seed=seed, options={"difficulty": "medium", "task": "left"})
            world = env.unwrapped._world
            for pose in range(2):
                if pose:
                    for _ in range(2):
                        env.step(np.array([0.4, 0.0], np.float32))
                world.camera_image()  # warm-up (textures)
                with timer() as t:
                    for _ in range(frames):
                        world.camera_image()
                total, count = total + t[0], count + frames
    finally:
        env.close()
    return 1000 * total / count


def run(size: int = 224, scenes: int = 6, frames: int = 10, rounds: int = 3) -> dict:
    best = {"plain": float("inf"), "lab": float("inf")}
    for _ in range(rounds):
        for look in best:
            best[look] = min(best[look], _ms_per_frame(look, size, scenes, frames))
    cost = best["lab"] / best["plain"]
    rows = [(f"{size}px plain look, ms per frame", f"{best['plain']:.2f}"),
            (f"{size}px lab look, ms per frame", f"{best['lab']:.2f}"),
            ("lab / plain render cost", f"{cost:.2f}x (target <= {TARGET_COST}x: "
                                        f"{'met' if cost <= TARGET_COST else 'NOT met'})")]
    return report(f"look render cost, camera frame at {size} px (best of {rounds} alternating rounds)", rows,
                  ("plain / lab frame rate (>= 0.67: lab costs <= 1.5x)", 1 / cost, 1 / TARGET_COST))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--scenes", type=int, default=6)
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    run(a.size, a.scenes, a.frames, a.rounds)
