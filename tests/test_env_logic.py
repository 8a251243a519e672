"""Episode outcome logic: collisions, wrong side, out of bounds, path lengths."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import mobile_vla_sim  # noqa: F401
from mobile_vla_sim.envs.expert import ScriptedExpert, run_expert_episode


def run_constant(env, action, seed=0, task="left"):
    env.reset(seed=seed, options={"task": task})
    done = False
    while not done:
        _, _, terminated, truncated, info = env.step(np.asarray(action, np.float32))
        done = terminated or truncated
    return terminated, info


@pytest.mark.parametrize("difficulty", ["easy", "hard"])
def test_driving_straight_ahead_collides(difficulty):
    env = gym.make("MobileVLA/Nav-v0", difficulty=difficulty, image_size=16)
    terminated, info = run_constant(env, [0.5, 0.0])
    assert terminated and info["collision"] and not info["success"]
    assert not info["out_of_bounds"]
    env.close()


def test_wrong_side_is_flagged_and_fails():
    env = gym.make("MobileVLA/Nav-v0", difficulty="medium", image_size=16)
    info = run_expert_episode(env, ScriptedExpert(), seed=2, task="right", expert_task="left")
    assert info["wrong_side"] and not info["success"] and not info["collision"]
    assert info["distance_to_goal"] < 0.25  # it did reach the bottle, just the wrong way around
    info = run_expert_episode(env, ScriptedExpert(), seed=2, task="right")
    assert info["success"] and not info["wrong_side"]
    env.close()


def test_leaving_the_arena_backwards():
    env = gym.make("MobileVLA/Nav-v0", image_size=16)
    terminated, info = run_constant(env, [-0.5, 0.0])
    assert terminated and info["out_of_bounds"] and not info["success"]
    env.close()


def test_shortest_path_is_a_lower_bound_of_the_expert_path():
    env = gym.make("MobileVLA/Nav-v0", difficulty="hard", image_size=16)
    for seed in range(3):
        info = run_expert_episode(env, ScriptedExpert(), seed=seed, task="left")
        start = env.unwrapped.scenario.start
        straight = np.hypot(*(env.unwrapped.scenario.goal - start[:2])) - 0.25
        assert straight < info["shortest_path_length"] <= info["path_length"] + 0.25
        assert info["shortest_path_length"] / info["path_length"] > 0.8
    env.close()
