"""The robustness-probe env options (light, camera mount, extra clutter) and `stop_at_goal`."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest

import mobile_vla_sim  # noqa: F401  (registers the env)
from mobile_vla_sim.datasets.generate import GenerateConfig, generate_dataset
from mobile_vla_sim.envs.config import EnvConfig
from mobile_vla_sim.envs.expert import ExpertPolicy, KeysExpert, ScriptedExpert, run_expert_episode
from mobile_vla_sim.envs.nav_env import STOP_SPEED, NavEnv
from mobile_vla_sim.envs.scenario import GOAL_RADIUS
from mobile_vla_sim.errors import ConfigError

SIZE = 32


def make(**kw) -> gym.Env:
    kw.setdefault("image_size", SIZE)
    return gym.make("MobileVLA/Nav-v0", **kw)


def first_obs(seed: int = 3, difficulty: str = "medium", **kw):
    env = make(difficulty=difficulty, **kw)
    obs, info = env.reset(seed=seed, options={"task": "left"})
    scenario = env.unwrapped.scenario
    env.close()
    return obs, info, scenario


@pytest.mark.parametrize("option", [{"light_scale": 0.5}, {"light_scale": 1.5}, {"camera_height_shift": 0.08},
                                    {"camera_pitch_shift": -8.0}])
def test_probe_shifts_change_the_image_not_the_state(option):
    base, base_info, _ = first_obs()
    shifted, info, _ = first_obs(**option)
    assert np.abs(shifted["image"].astype(int) - base["image"]).mean() > 1.0
    np.testing.assert_array_equal(shifted["state"], base["state"])
    np.testing.assert_array_equal(info["robot_pose"], base_info["robot_pose"])
    if "light_scale" in option:  # darker is darker, brighter is brighter
        assert (shifted["image"].mean() < base["image"].mean()) == (option["light_scale"] < 1)


def _unshifted(self, scenario, scene_seed):
    return scenario


@pytest.mark.parametrize("difficulty", ["easy", "hard"])
def test_defaults_give_the_pixels_and_poses_of_an_env_without_the_options(difficulty, monkeypatch):
    """The defaults are exact no-ops: a whole expert episode matches one where the shifts are never applied."""
    def episode() -> list[np.ndarray]:
        env = make(difficulty=difficulty)
        expert, frames = ScriptedExpert(), []
        obs, info = env.reset(seed=5, options={"task": "right"})
        done = False
        while not done:
            frames += [obs["image"], obs["state"], info["robot_pose"]]
            obs, _, terminated, truncated, info = env.step(expert.act(obs))
            done = terminated or truncated
        env.close()
        return frames + [obs["image"], info["robot_pose"], np.array([info["success"], info["steps"]])]

    with_options = episode()
    monkeypatch.setattr(NavEnv, "_probe_shifts", _unshifted)
    without = episode()
    assert len(with_options) == len(without)
    for a, b in zip(with_options, without):
        np.testing.assert_array_equal(a, b)


def test_extra_distractors_add_bodies_to_the_same_scene():
    env, more = make(difficulty="hard"), make(difficulty="hard", extra_distractors=3)
    for seed in range(3):
        obs, info = env.reset(seed=seed)
        obs3, info3 = more.reset(seed=seed)
        s, s3 = env.unwrapped.scenario, more.unwrapped.scenario
        assert dataclasses.replace(s3, distractors=s.distractors) == s  # boxes, bottle, start, light, ... unchanged
        assert s3.distractors[:len(s.distractors)] == s.distractors and len(s3.distractors) == len(s.distractors) + 3
        assert (more.unwrapped._world.client.getNumBodies()
                == env.unwrapped._world.client.getNumBodies() + 3)
        np.testing.assert_array_equal(obs3["state"], obs["state"])
        assert info3["task"] == info["task"]
        last = s.boxes[-1]
        for d in s3.distractors[len(s.distractors):]:  # against a wall past the boxes, or behind the bottle
            assert d.x - d.radius > last.x + last.hx + 0.2
            assert abs(d.y) + d.radius > s.half_width - 0.05 or d.x > s.target.x + 0.2
            assert np.hypot(d.x - s.goal[0], d.y - s.goal[1]) > GOAL_RADIUS + d.radius + 0.2
    env.close()
    more.close()


def test_extra_distractors_are_seen_and_the_expert_still_succeeds():
    changed = [np.abs(first_obs(seed, "easy", extra_distractors=3)[0]["image"].astype(int)
                      - first_obs(seed, "easy")[0]["image"]).max() > 30 for seed in range(4)]
    assert sum(changed) >= 3
    for difficulty in ("medium", "hard"):
        env = make(difficulty=difficulty, extra_distractors=3)
        assert all(run_expert_episode(env, ScriptedExpert(), seed, task)["success"]
                   for seed in (0, 1) for task in ("left", "right"))
        env.close()


def test_option_bounds():
    with pytest.raises(ConfigError, match="--light-scale"):
        EnvConfig(light_scale=-0.1)
    with pytest.raises(ConfigError, match="--extra-distractors"):
        EnvConfig(extra_distractors=-1)


@pytest.mark.parametrize("kw,expert", [({}, ScriptedExpert), ({"control": "pulse"}, ScriptedExpert),
                                       ({"drive": "omni", "action_mode": "direction"}, KeysExpert)])
def test_stop_at_goal_the_expert_stops_inside_the_goal(kw, expert):
    env = make(difficulty="hard", stop_at_goal=True, **kw)
    for seed, task in ((0, "left"), (1, "right")):
        ex = KeysExpert.for_env(env.unwrapped.config) if expert is KeysExpert else ScriptedExpert(env.unwrapped.drive)
        info = run_expert_episode(env, ex, seed, task)
        assert info["success"] and info["stopped"] and info["in_goal"] and info["goal_entered"]
        assert info["distance_to_goal"] < GOAL_RADIUS
    env.close()


def never_stop_episode(env, seed: int, task: str) -> dict:
    """The expert, except that where it would stop it keeps driving forward."""
    expert = ScriptedExpert()
    obs, info = env.reset(seed=seed, options={"task": task})
    expert.reset()
    done = False
    while not done:
        action = expert.act(obs)
        if not action.any():
            action = np.array([0.3, 0.0], np.float32)
        obs, _, terminated, truncated, info = env.step(action)
        done = terminated or truncated
    return info


def test_driving_through_the_goal_only_succeeds_without_stop_at_goal():
    default, stopping = make(difficulty="easy"), make(difficulty="easy", stop_at_goal=True)
    for seed, task in ((0, "left"), (1, "right")):
        ended = never_stop_episode(default, seed, task)
        assert ended["success"] and ended["in_goal"] and not ended["stopped"]
        through = never_stop_episode(stopping, seed, task)
        assert through["goal_entered"] and not through["success"]
    default.close()
    stopping.close()


def test_a_stop_outside_the_goal_ends_nothing():
    env = make(stop_at_goal=True)
    _, info = env.reset(seed=0)
    assert not (info["stopped"] or info["in_goal"] or info["goal_entered"])
    for action in ([0.0, 0.0], [STOP_SPEED / 2, -STOP_SPEED / 2]):
        _, _, terminated, truncated, info = env.step(np.array(action, np.float32))
        assert info["stopped"] and not info["in_goal"] and not (terminated or truncated or info["success"])
    _, _, _, _, info = env.step(np.array([STOP_SPEED * 2, 0.0], np.float32))
    assert not info["stopped"]
    env.close()


def test_noisy_demonstrations_end_with_a_stop(tmp_path):
    """Demonstration noise leaves the expert's stop alone, so noisy stop_at_goal demos still end (and succeed)."""
    env = make(difficulty="medium", stop_at_goal=True)
    expert = ScriptedExpert(noise_std=0.3, seed=2)
    assert all(run_expert_episode(env, expert, seed, "left")["success"] for seed in range(2))
    env.close()
    cfg = GenerateConfig(episodes=2, out=tmp_path / "d", difficulty="easy", noise_std=0.3,
                         env=EnvConfig(image_size=16, stop_at_goal=True))
    cfg.pool = dataclasses.replace(cfg.pool, workers=1)
    assert generate_dataset(cfg, progress=False).successes == 2


def test_expert_policy_stops_in_the_batched_interface():
    env = make(difficulty="medium", stop_at_goal=True)
    policy = ExpertPolicy()
    obs, info = env.reset(seed=4, options={"task": "right"})
    policy.reset(info["instruction"])
    done, actions = False, []
    while not done:
        actions.append(policy.act(obs))
        obs, _, terminated, truncated, info = env.step(actions[-1])
        done = terminated or truncated
    assert info["success"] and not actions[-1].any() and all(a.any() for a in actions[:-1])
    env.close()
