"""`sb3:MODEL.zip` is data, never code: the zip is read without unpickling, yet acts exactly like `PPO.load`."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import pickle
import zipfile

import numpy as np
import pytest
import torch

from mobile_vla_sim.envs.state import STATE_BOUND, STATE_DIM
from mobile_vla_sim.errors import PolicyLoadError
from mobile_vla_sim.policies.baselines import SB3Policy


@pytest.fixture(scope="module")
def ppo_zip(tmp_path_factory):
    """A real PPO model from `train_rl`: 256 steps, 4 updates, so its weights are trained, not just initialised."""
    from mobile_vla_sim.policies.rl import RLConfig, train_rl

    out = tmp_path_factory.mktemp("rl") / "ppo.zip"
    path, interrupted = train_rl(RLConfig(out=out, timesteps=256, n_envs=2, n_steps=64), progress=False)
    assert not interrupted
    return path


def _states(n: int = 64) -> np.ndarray:
    """Env states from real resets (both tasks) plus random ones, some beyond the bounds (clipped by sb3)."""
    from mobile_vla_sim.policies.rl import make_state_env

    env = make_state_env("medium")
    real = [env.reset(seed=s)[0] for s in range(8)]
    env.close()
    rng = np.random.default_rng(0)
    extreme = rng.uniform(-STATE_BOUND, STATE_BOUND, (8, STATE_DIM))
    return np.concatenate([real, rng.uniform(-3, 3, (n, STATE_DIM)), extreme]).astype(np.float32)


def _rewrite(src, dst, data=None, **entries: bytes):
    """Copy an sb3 zip, replacing the `data` JSON by `data(old) -> new` and any other entry by raw bytes."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            content = zin.read(name)
            if name == "data" and data is not None:
                content = json.dumps(data(json.loads(content))).encode()
            zout.writestr(name, entries.get(name.replace(".", "_"), content))
    return dst


def _serialized(obj) -> dict:
    """A `data` value as sb3 writes a non-JSON object: base64 of its (cloud)pickle."""
    return {":type:": "<class 'object'>", ":serialized:": base64.b64encode(pickle.dumps(obj)).decode()}


def test_same_actions_as_ppo_load(ppo_zip):
    from stable_baselines3 import PPO

    policy = SB3Policy(ppo_zip)
    states = _states()
    expected, _ = PPO.load(ppo_zip, device="cpu").predict(states, deterministic=True)
    actions = policy.act_batch({"state": states}, list(range(len(states))))
    assert policy.drive == "diff" and actions.shape == (len(states), 2)
    np.testing.assert_array_equal(actions, expected)
    assert np.abs(actions).max() > 0  # a real network, not zeros


def test_pickled_payload_in_data_never_runs(ppo_zip, tmp_path, exploit):
    """The payload is live (sb3's PPO.load runs it), but our loader ignores it and acts as the clean model."""
    from stable_baselines3 import PPO

    payload, marker = exploit
    evil = _rewrite(ppo_zip, tmp_path / "evil.zip",
                    data=lambda d: {**d, "policy_class": _serialized(payload), "lr_schedule": _serialized(payload)})
    policy = SB3Policy(evil)
    assert not marker.exists()
    states = _states(8)
    np.testing.assert_array_equal(policy.act_batch({"state": states}, range(len(states))),
                                  SB3Policy(ppo_zip).act_batch({"state": states}, range(len(states))))
    with contextlib.suppress(Exception):  # the check that the test can fail: sb3 itself executes the payload
        PPO.load(evil, device="cpu")
    assert marker.exists()


def test_pickled_policy_kwargs_are_refused_unread(ppo_zip, tmp_path, exploit):
    payload, marker = exploit
    evil = _rewrite(ppo_zip, tmp_path / "evil.zip", data=lambda d: {**d, "policy_kwargs": _serialized(payload)})
    with pytest.raises(PolicyLoadError, match="policy_kwargs are pickled"):
        SB3Policy(evil)
    assert not marker.exists()


def test_pickled_object_in_weights_is_refused_unread(ppo_zip, tmp_path, exploit):
    payload, marker = exploit
    buffer = io.BytesIO()
    torch.save({"action_net.weight": payload}, buffer)
    for i, weights in enumerate((buffer.getvalue(), pickle.dumps({"action_net.weight": payload}, protocol=2))):
        evil = _rewrite(ppo_zip, tmp_path / f"evil{i}.zip", policy_pth=weights)
        with pytest.raises(PolicyLoadError, match="refused, its policy.pth or data entry is not plain") as err:
            SB3Policy(evil)
        assert "\n" not in str(err.value)
    assert not marker.exists()


def test_models_that_do_not_fit_are_refused(ppo_zip, tmp_path):
    with zipfile.ZipFile(ppo_zip) as z:
        weights = torch.load(io.BytesIO(z.read("policy.pth")), weights_only=True)

    def saved(tensors) -> bytes:
        buffer = io.BytesIO()
        torch.save(tensors, buffer)
        return buffer.getvalue()

    narrow = {k: (v[:, :5] if k.endswith("_net.0.weight") else v) for k, v in weights.items()}
    cases = [
        (_rewrite(ppo_zip, tmp_path / "obs.zip", policy_pth=saved(narrow)), "takes 5-d observations"),
        (_rewrite(ppo_zip, tmp_path / "sde.zip", data=lambda d: {**d, "use_sde": True}), r"\['use_sde'\]"),
        (_rewrite(ppo_zip, tmp_path / "kw.zip", data=lambda d: {**d, "policy_kwargs": {"squash_output": True}}),
         r"\['squash_output'\]"),
        (_rewrite(ppo_zip, tmp_path / "cut.zip", policy_pth=saved({k: v for k, v in weights.items()
                                                                    if k != "value_net.bias"})),
         "do not fit an MlpPolicy"),
        (_rewrite(ppo_zip, tmp_path / "json.zip", data=lambda d: [d]), "data a JSON object"),
    ]
    for path, match in cases:
        with pytest.raises(PolicyLoadError, match=match) as err:
            SB3Policy(path)
        assert "\n" not in str(err.value)
    with zipfile.ZipFile(tmp_path / "nopth.zip", "w") as z:
        z.writestr("data", "{}")
    with pytest.raises(PolicyLoadError, match="no policy.pth and data entries"):
        SB3Policy(tmp_path / "nopth.zip")


def test_plain_net_arch_kwargs_are_accepted(tmp_path):
    """A model trained with plain-JSON policy_kwargs (other layer sizes) loads and matches PPO.load."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    from mobile_vla_sim.policies.rl import make_state_env

    env = make_vec_env(make_state_env, n_envs=1, seed=0, env_kwargs={"difficulty": "easy", "drive": "omni"})
    PPO("MlpPolicy", env, seed=1, policy_kwargs={"net_arch": {"pi": [32], "vf": [16, 8]}, "log_std_init": -1.0}
        ).save(tmp_path / "omni.zip")
    env.close()
    policy, states = SB3Policy(tmp_path / "omni.zip"), _states(8)
    expected, _ = PPO.load(tmp_path / "omni.zip", device="cpu").predict(states, deterministic=True)
    assert policy.drive == "omni"
    np.testing.assert_array_equal(policy.act_batch({"state": states}, range(len(states))), expected)


def test_directory_named_zip(tmp_path):
    (tmp_path / "ppo.zip").mkdir()
    with pytest.raises(PolicyLoadError, match="ppo.zip is a directory, not a file"):
        SB3Policy(tmp_path / "ppo.zip")
