"""`--policy package.module:factory` plugins, `--policy-arg` parsing and action chunks."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest

from mobile_vla_sim.errors import ConfigError, EvalError, PolicyLoadError
from mobile_vla_sim.envs.config import EnvConfig
from mobile_vla_sim.envs.engine import PoolConfig
from mobile_vla_sim.eval.run import EvalConfig, evaluate
from mobile_vla_sim.policy import next_actions
from mobile_vla_sim.policies.registry import load_policy, parse_policy_args

#: A user's plugin: a small torch model behind the Policy interface that steers towards the instructed side
#: (it never reaches the bottle: scored, not solved), plus factories that break in each way load_policy reports.
PLUGIN = '''
import numpy as np
import torch
from mobile_vla_sim.policy import Policy


class Steer(Policy):
    name = "steer"

    def __init__(self, drive, device, turn, speed=0.3):
        self.drive, self.turn, self.speed = drive, turn, speed
        self.net = torch.nn.Linear(3, 2).to(device)
        self.sides = {}

    def reset(self, instruction, slot=0):
        self.sides[slot] = 1.0 if "left" in instruction else -1.0

    @torch.no_grad()
    def act_batch(self, obs, slots):
        mean_rgb = torch.as_tensor(np.asarray(obs["image"]), dtype=torch.float32).mean(dim=(1, 2)) / 255
        base = torch.tensor([[self.speed, self.turn * self.sides[s]] for s in slots])
        return (base + 0.0 * self.net(mean_rgb)).numpy()


class Duck:
    drive = "diff"
    def reset(self, instruction, slot=0): pass
    def act_batch(self, obs, slots): return np.zeros((len(slots), 4, 2), np.float32)


def make(drive, device, turn=0.4, **kw):
    return Steer(drive, device, turn, **kw)

def duck(drive, device):
    return Duck()

def broken(drive, device):
    raise RuntimeError("no weights here")

def not_a_policy(drive, device):
    return object()

not_callable = 3
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    (tmp_path / "mymod.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "mymod"
    sys.modules.pop("mymod", None)


def test_parse_policy_args():
    assert parse_policy_args(["turn=0.5", "layers=[1, 2]", "name=big model", "flag=true", "s=\"3\""]) == {
        "turn": 0.5, "layers": [1, 2], "name": "big model", "flag": True, "s": "3"}
    assert parse_policy_args(["path=/tmp/w.pt"]) == {"path": "/tmp/w.pt"}
    for bad in ("turn", "=3", "2x=1"):
        with pytest.raises(ConfigError, match="KEY=VALUE"):
            parse_policy_args([bad])


def test_plugin_loaded_with_args(plugin):
    policy = load_policy("mymod:make", policy_args={"turn": 0.2, "speed": 0.1})
    assert policy.name == "steer" and (policy.turn, policy.speed) == (0.2, 0.1)
    policy.reset("go around it on the right", 4)
    assert np.allclose(policy.act({"image": np.zeros((8, 8, 3), np.uint8)}, 4), [0.1, -0.2])


@pytest.mark.parametrize("spec, match", [
    ("nosuchmod_xyz:make", "cannot import 'nosuchmod_xyz'"),
    ("mymod:missing", "no callable 'missing'"),
    ("mymod:not_callable", "no callable 'not_callable'"),
    ("mymod:broken", "raised RuntimeError: no weights here"),
    ("mymod:not_a_policy", "returned a object without reset, act_batch, drive"),
])
def test_plugin_errors_are_one_line(plugin, spec, match):
    with pytest.raises(PolicyLoadError, match=match) as err:
        load_policy(spec)
    assert "\n" not in str(err.value)


def test_plugin_drive_and_args_checked(plugin):
    with pytest.raises(PolicyLoadError, match="unexpected keyword argument 'bogus'"):
        load_policy("mymod:make", policy_args={"bogus": 1})
    with pytest.raises(PolicyLoadError, match="--policy-arg only applies"):
        load_policy("expert", policy_args={"turn": 1})
    with pytest.raises(PolicyLoadError, match="pass --drive diff"):
        load_policy("mymod:duck", drive="omni")


def test_action_chunk_executes_first_action(plugin):
    policy = load_policy("mymod:duck")  # duck-typed: wrapped into a Policy
    assert policy.name == "mymod:duck"
    obs = {"image": np.zeros((3, 8, 8, 3), np.uint8)}
    assert policy.act_batch(obs, [0, 1, 2]).shape == (3, 4, 2)
    assert next_actions(policy, obs, [0, 1, 2]).shape == (3, 2)
    chunk = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2)
    policy.inner.act_batch = lambda obs, slots: chunk
    assert np.array_equal(next_actions(policy, obs, [0, 1]), chunk[:, 0])
    policy.inner.act_batch = lambda obs, slots: np.zeros(5)
    with pytest.raises(EvalError, match=r"returned actions of shape \(5,\) for 2 slots"):
        next_actions(policy, obs, [0, 1])


def test_plugin_scored_by_evaluate(plugin):
    res = evaluate(EvalConfig(policy="mymod:make", difficulty="easy", episodes=2, pool=PoolConfig(workers=1),
                              out=None, env=EnvConfig(image_size=48)), progress=False)
    assert len(res.records) == 4
    left = [r for r in res.records if r.task == "left"]
    right = [r for r in res.records if r.task == "right"]
    assert all(r.trajectory[-1][1] > r.trajectory[0][1] for r in left)  # it turned the instructed way
    assert all(r.trajectory[-1][1] < r.trajectory[0][1] for r in right)
    assert res.aggregates["overall"]["episodes"] == 4 and res.aggregates["overall"]["success"]["rate"] == 0.0
