"""Scripted expert: success on a sample of every difficulty, both drives, and noise injection."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import mobile_vla_sim  # noqa: F401
from mobile_vla_sim.envs import DIFFICULTIES
from mobile_vla_sim.envs.expert import ScriptedExpert, run_expert_episode


@pytest.mark.parametrize("difficulty", list(DIFFICULTIES))
def test_expert_succeeds_on_both_tasks(difficulty):
    env = gym.make("MobileVLA/Nav-v0", difficulty=difficulty, image_size=16)
    expert = ScriptedExpert()
    failures = [(seed, task) for seed in range(5) for task in ("left", "right")
                if not run_expert_episode(env, expert, seed, task)["success"]]
    assert failures == []
    env.close()


@pytest.mark.parametrize("drive,control", [("omni", "continuous"), ("diff", "pulse"), ("omni", "pulse")])
def test_expert_other_drive_and_control_modes(drive, control):
    env = gym.make("MobileVLA/Nav-v0", difficulty="hard", drive=drive, control=control, image_size=16)
    expert = ScriptedExpert(drive=drive)
    assert all(run_expert_episode(env, expert, seed, task)["success"] for seed in (0, 1) for task in ("left", "right"))
    env.close()


def test_noise_injection_keeps_the_clean_label_and_still_succeeds():
    env = gym.make("MobileVLA/Nav-v0", difficulty="medium", image_size=16)
    obs, _ = env.reset(seed=0)
    clean = ScriptedExpert().act(obs)
    a, b = ScriptedExpert(noise_std=0.2, seed=1), ScriptedExpert(noise_std=0.2, seed=1)
    executed, label = a.act_with_label(obs)
    np.testing.assert_array_equal(label, clean)
    np.testing.assert_array_equal(executed, b.act(obs))  # seeded noise is reproducible
    assert not np.allclose(executed, label)
    assert env.action_space.contains(executed)
    assert sum(run_expert_episode(env, a, seed, "left")["success"] for seed in range(4)) >= 3
    env.close()


def test_expert_rejects_bad_configuration():
    with pytest.raises(ValueError, match="unknown drive"):
        ScriptedExpert(drive="legs")
    with pytest.raises(ValueError, match="noise_std"):
        ScriptedExpert(noise_std=float("nan"))
    with pytest.raises(ValueError, match="unknown task"):
        ScriptedExpert().reset("up")
