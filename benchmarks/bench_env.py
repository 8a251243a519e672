"""Env overhead: `env.step` frames/s against the bare cost of the same physics substeps + one TinyRenderer frame.

The bare loop talks to the env's own PyBullet client with the same scene, robot, substep count and camera
matrices, so the ratio isolates what the env adds (action handling, contact polling, geometry, state, info).
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np

import mobile_vla_sim  # noqa: F401  (registers the env)
from benchmarks.common import report, timer
from mobile_vla_sim.envs.sim import CONTROL_PERIOD, PHYSICS_HZ


def _env_fps(env, steps: int, seed: int) -> float:
    """Frames/s of env.step with a gentle forward-and-turn command; resets are excluded from the clock."""
    action = np.array([0.3, 0.4], np.float32)
    env.reset(seed=seed)
    elapsed, done_steps = 0.0, 0
    while done_steps < steps:
        with timer() as t:
            _, _, term, trunc, _ = env.step(action)
        elapsed += t[0]
        done_steps += 1
        if term or trunc:
            env.reset(seed=seed + done_steps)
    return steps / elapsed


def _bare_fps(env, steps: int, seed: int) -> float:
    """Frames/s of the same stepSimulation calls plus one getCameraImage (same camera and lighting), nothing else."""
    env.reset(seed=seed)
    world = env.unwrapped._world
    client, size = world.client, world.image_size
    substeps = int(round(CONTROL_PERIOD * PHYSICS_HZ))
    view = world.camera_view()  # the same camera, lighting and renderer as the env; computed once, outside the clock
    with timer() as t:
        for _ in range(steps):
            for _ in range(substeps):
                client.stepSimulation()
            world.raw_render(size, size, view, world.camera_projection)
    return steps / t[0]


def run(image_size: int = 224, steps: int = 300, difficulty: str = "medium", seed: int = 0) -> dict:
    env = gym.make("MobileVLA/Nav-v0", difficulty=difficulty, image_size=image_size)
    try:
        _env_fps(env, 20, seed)  # warm-up
        env_fps = _env_fps(env, steps, seed)
        bare_fps = _bare_fps(env, steps, seed)
    finally:
        env.close()
    return report(f"env overhead ({difficulty}, {image_size}px, {steps} steps)",
                  [("env.step frames/s", f"{env_fps:.1f}"),
                   ("bare substeps + 1 TinyRenderer frame, frames/s", f"{bare_fps:.1f}"),
                   ("env.step ms/frame", f"{1000 / env_fps:.2f}"),
                   ("bare ms/frame", f"{1000 / bare_fps:.2f}")],
                  ("env / bare throughput", env_fps / bare_fps, 0.85))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--difficulty", default="medium")
    run(**{k.replace("-", "_"): v for k, v in vars(ap.parse_args()).items()})
