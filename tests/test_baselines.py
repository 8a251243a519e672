"""Baseline policies, the policy registry, offline metrics and the PPO reference policy."""

from __future__ import annotations

import numpy as np
import pytest

from mobile_vla_sim.eval.episodes import episode_set
from mobile_vla_sim.eval.offline import offline_metrics
from mobile_vla_sim.envs.config import EnvConfig
from mobile_vla_sim.eval.rollout import eval_policy
from mobile_vla_sim.policies.baselines import DEFAULT_MEAN_ACTION3, ConstantPolicy, PolicyLoadError, RandomPolicy
from mobile_vla_sim.policies.registry import load_policy


def test_registry_names_and_layouts():
    for spec in ("expert", "random", "constant", "always-left", "always-right"):
        for drive, dim in (("diff", 2), ("omni", 3)):
            policy = load_policy(spec, drive=drive)
            assert policy.drive == drive
            policy.reset("Navigate around obstacles and reach the front of the beverage bottle on the left", slot=3)
            if spec in ("random", "constant"):
                obs = {"image": np.zeros((1, 8, 8, 3), np.uint8)}
                assert policy.act_batch(obs, [3]).shape == (1, dim)


def test_random_policy_depends_on_episode_not_slot():
    img = np.random.default_rng(1).integers(0, 255, (2, 8, 8, 3), dtype=np.uint8)
    a, b = RandomPolicy(seed=0), RandomPolicy(seed=0)
    a.reset("left", 0)
    b.reset("left", 5)
    first_a = a.act_batch({"image": img[:1]}, [0])
    assert np.array_equal(first_a, b.act_batch({"image": img[:1]}, [5]))
    assert not np.array_equal(first_a, a.act_batch({"image": img[:1]}, [0]))  # a stream, not a constant
    assert np.all(np.abs(first_a) <= [0.5, 1.5])


def test_constant_mean_from_manifest(tiny_dataset):
    from mobile_vla_sim.datasets.manifest import load_manifest

    mean3 = load_manifest(tiny_dataset)["action_stats"]["mean"]
    policy = ConstantPolicy.mean_action("diff", offline_data=tiny_dataset)
    assert np.allclose(policy.action, [mean3[0], mean3[2]])
    assert np.allclose(ConstantPolicy.mean_action("omni").action, DEFAULT_MEAN_ACTION3)
    with pytest.raises(PolicyLoadError, match="action statistics"):
        ConstantPolicy.mean_action("diff", offline_data=tiny_dataset / "nowhere")


def test_offline_metrics_rank_expert_above_constant(tiny_dataset):
    expert = offline_metrics(load_policy("expert"), tiny_dataset, split="all")
    constant = offline_metrics(load_policy("constant", offline_data=tiny_dataset), tiny_dataset, split="all")
    assert expert.episodes == constant.episodes == 12 and expert.frames == constant.frames > 12
    assert set(expert.rmse_per_dim) == {"linear_x", "angular_z"}
    assert expert.rmse < 0.5 * constant.rmse
    assert expert.sign_agreement > 0.9


def test_sb3_refuses_non_zip(tmp_path):
    fake = tmp_path / "model.pkl"
    fake.write_bytes(b"\x80\x04not a zip")
    with pytest.raises(PolicyLoadError, match="not a stable-baselines3 .zip"):
        load_policy(f"sb3:{fake}")


def test_train_rl_then_evaluate(tmp_path):
    from mobile_vla_sim.policies.rl import RLConfig, train_rl

    path, interrupted = train_rl(RLConfig(out=tmp_path / "ppo.zip", timesteps=64, n_envs=1, n_steps=64), progress=False)
    assert path.is_file() and not interrupted
    policy = load_policy(f"sb3:{path}")
    recs = eval_policy(policy, episode_set(0, "easy", "left", 1), EnvConfig(image_size=48), progress=False).results
    assert len(recs) == 1 and recs[0].steps > 0
    with pytest.raises(PolicyLoadError, match="--drive diff"):
        load_policy(f"sb3:{path}", drive="omni")
