"""Env overhead: `env.step` frames/s against the bare cost of the same physics substeps + one TinyRenderer frame.

The bare loop talks to the env's own PyBullet client and replays the env run's episodes (same seeds, wheel
command, substeps, camera pose, lighting and renderer), so the ratio isolates what the env adds (action
handling, contact polling, geometry, state, info, the image as an array).
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np

import mobile_vla_sim  # noqa: F401  (registers the env)
from benchmarks.common import report, timer
from mobile_vla_sim.envs.sim import CONTROL_PERIOD, PHYSICS_HZ


_ACTION = np.array([0.3, 0.4], np.float32)  # a gentle forward-and-turn command: the camera sweeps the scene


def _env_fps(env, steps: int, seed: int) -> tuple[float, list[int]]:
    """Frames/s of env.step; resets are excluded from the clock. Also returns the step counts at which episodes
    ended, so the bare loop can replay exactly the same motion (render cost depends on what the camera sees)."""
    env.reset(seed=seed)
    elapsed, ends = 0.0, []
    for k in range(1, steps + 1):
        with timer() as t:
            _, _, term, trunc, _ = env.step(_ACTION)
        elapsed += t[0]
        if term or trunc:
            ends.append(k)
            env.reset(seed=seed + k)
    return steps / elapsed, ends


def _bare_fps(env, steps: int, seed: int, ends: list[int]) -> float:
    """Frames/s of the same wheel command, stepSimulation calls and one getCameraImage at the robot's camera pose
    (same camera, lighting and renderer), replaying the env run's episodes: nothing the env adds on top."""
    world = env.unwrapped._world
    client = world.client
    substeps = int(round(CONTROL_PERIOD * PHYSICS_HZ))
    env.reset(seed=seed)
    elapsed = 0.0
    for k in range(1, steps + 1):
        with timer() as t:
            world.set_wheel_speeds(float(_ACTION[0]), float(_ACTION[1]))
            for _ in range(substeps):
                client.stepSimulation()
            world.raw_render(world.width, world.height, world.camera_view(), world.camera_projection)
        elapsed += t[0]
        if k in ends:
            env.reset(seed=seed + k)
    return steps / elapsed


def run(image_size: int = 224, steps: int = 300, difficulty: str = "medium", seed: int = 0) -> dict:
    env = gym.make("MobileVLA/Nav-v0", difficulty=difficulty, image_size=image_size)
    try:
        _env_fps(env, 20, seed)  # warm-up
        env_fps, ends = _env_fps(env, steps, seed)
        bare_fps = _bare_fps(env, steps, seed, ends)
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
