"""`train_rl` options are checked up front with one-line messages, and Ctrl-C keeps (and reports) the model so far."""

from __future__ import annotations

import pytest

from mobile_vla_sim.errors import ConfigError
from mobile_vla_sim.policies import rl
from mobile_vla_sim.policies.baselines import SB3Policy
from mobile_vla_sim.policies.rl import RLConfig, train_rl


@pytest.mark.parametrize("change, match", [
    ({"n_envs": 0}, "--n-envs must be >= 1, got 0"),
    ({"timesteps": 0}, "--timesteps must be >= 1, got 0"),
    ({"n_steps": -1}, "--n-steps must be >= 1, got -1"),
    ({"out": "ppo.pt"}, "--out must end in .zip"),
    ({"difficulty": "mix"}, "unknown difficulty 'mix': --difficulty must be one of easy, medium, hard"),
    ({"drive": "tank"}, "unknown drive 'tank': --drive must be one of diff, omni"),
])
def test_bad_options_are_one_line_config_errors(tmp_path, change, match):
    with pytest.raises(ConfigError, match=match) as err:
        RLConfig(**{"out": tmp_path / "ppo.zip", **change})
    assert "\n" not in str(err.value)


def test_every_option_has_help():
    from dataclasses import fields

    assert all(f.metadata.get("help") for f in fields(RLConfig))


def test_ctrl_c_saves_the_model_and_reports_it(tmp_path, monkeypatch):
    """A KeyboardInterrupt inside PPO's learning loop (where Ctrl-C lands): interrupted=True and a usable zip."""
    original = rl._progress_callback

    def interrupting(bar):
        callback = original(bar)
        step = callback._on_step

        def on_step() -> bool:
            if callback.num_timesteps >= 32:
                raise KeyboardInterrupt
            return step()

        callback._on_step = on_step
        return callback

    monkeypatch.setattr(rl, "_progress_callback", interrupting)
    path, interrupted = train_rl(RLConfig(out=tmp_path / "ppo.zip", timesteps=10_000, n_envs=1, n_steps=64),
                                 progress=False)
    assert interrupted and path == tmp_path / "ppo.zip"
    assert [p.name for p in tmp_path.iterdir()] == ["ppo.zip"]  # no partial file left behind
    assert SB3Policy(path).drive == "diff"
