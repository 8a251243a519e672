"""Task families: `reach` (the real project's 2026 task) end to end, and a family defined outside the package."""

from __future__ import annotations

import glob
import re
import sys
from pathlib import Path

import h5py
import pytest

from mobile_vla_sim.analysis.agree import agree
from mobile_vla_sim.config import build
from mobile_vla_sim.datasets.generate import GenerateConfig, generate_dataset
from mobile_vla_sim.datasets.hdf5_format import MOVES, read_episode
from mobile_vla_sim.envs import EnvConfig
from mobile_vla_sim.envs.engine import PoolConfig
from mobile_vla_sim.envs.tasks import get_family
from mobile_vla_sim.envs.tasks.reach import TRIAL_CX, lateral_at
from mobile_vla_sim.errors import ConfigError, EvalError
from mobile_vla_sim.eval.episodes import episode_set
from mobile_vla_sim.eval.run import EvalConfig, evaluate

V5_NAME = re.compile(r"^episode_\d{6}_\d{6}_target_(left|center|right)_(left|straight|right)_path__core__fixed_"
                     r"(left|center|right)\.h5$")
FAMILY_MODULE = '''
from mobile_vla_sim.envs.tasks.template import Template


class Corner(Template):
    """A lab's own family: the template's, with its targets further out."""

    name = "corner"

    def sample_scenario(self, rng, difficulty, task, instructions=None):
        from dataclasses import replace

        scene = super().sample_scenario(rng, difficulty, task, instructions)
        return replace(scene, target=replace(scene.target, y=scene.target.y * 1.5))
'''


def v5_loader(folder: Path) -> list[dict]:
    """What a loader written for the real V5 layout reads: images under observations/images, actions, the
    instruction, the target position and path type from the file name."""
    out = []
    for path in sorted(glob.glob(str(folder / "episode_*.h5"))):
        with h5py.File(path, "r") as f:
            images, actions = f["observations/images"][()], f["actions"][()]
            instruction = f["language_instruction"][0].decode()
        target, path_type, _ = V5_NAME.match(Path(path).name).groups()
        out.append({"images": images, "actions": actions, "instruction": instruction, "target": target,
                    "path": path_type})
    return out


def test_reach_generates_the_v5_layout_with_every_expert_episode_a_success(tmp_path):
    out = tmp_path / "reach"
    generate_dataset(build(GenerateConfig, dict(task_family="reach", episodes=18, out=out, image_size=32,
                                                workers=1)), progress=False)
    files = sorted(out.glob("*.h5"))
    assert len(files) == 18 and all(V5_NAME.match(p.name) for p in files)
    episodes = v5_loader(out)
    assert {e["target"] for e in episodes} == {"left", "center", "right"}
    assert all(e["images"].shape[1:] == (32, 32, 3) and len(e["images"]) == len(e["actions"]) for e in episodes)
    assert all(e["target"] in e["instruction"] or e["target"] == "center" for e in episodes)
    first = read_episode(files[0])
    assert first.frame_convention == MOVES and first.actions[0].any()  # frame 0 is a move: no episode_start frame
    assert all(read_episode(p, load_images=False).success for p in files)

    # V5 data trains (frames under observations/images), and the policy is evaluated on the family it was trained on
    from mobile_vla_sim.policies.config import TrainConfig
    from mobile_vla_sim.policies.train import train

    ckpt = tmp_path / "reach.ckpt"
    train(TrainConfig(data=out, mode="frozen", backbone="tiny", epochs=1, out=ckpt), progress=False)
    result = evaluate(EvalConfig(policy=str(ckpt), difficulty="easy", episodes=1, out=tmp_path / "eval",
                                 pool=PoolConfig(workers=1)),
                      progress=False)
    assert result.config.env.task_family == "reach" and {r.task for r in result.records} == {"left", "center", "right"}


def test_reach_expert_succeeds_and_always_left_misses_right_targets(tmp_path):
    env = EnvConfig(task_family="reach", image_size=32)
    common = dict(difficulty="all", episodes=2, env=env, pool=PoolConfig(workers=1))
    expert = evaluate(EvalConfig(policy="expert", out=tmp_path / "expert", **common), progress=False)
    assert all(r.success for r in expert.records) and len(expert.records) == 18
    left = evaluate(EvalConfig(policy="always-left", out=tmp_path / "left", **common), progress=False)
    right = [r for r in left.records if r.task == "right"]
    assert right and not any(r.success for r in right)
    assert {r.failure_label for r in right} == {"wrong_target"}
    assert all(r.success for r in left.records if r.task == "left")


def test_reach_target_is_the_object_the_instructions_name():
    from mobile_vla_sim.envs import make_env

    for kind in ("basket", "pot", "cup", "bottle"):
        env = make_env(EnvConfig(task_family="reach", instructions=kind, image_size=32, difficulty="medium"))
        try:
            _, info = env.reset(seed=3, options={"task": "left"})
            assert env.unwrapped.scenario.target.kind == kind
            assert {d.kind for d in env.unwrapped.scenario.decoys} == {kind}
            assert (kind if kind != "bottle" else "beverage bottle") in info["instruction"]
        finally:
            env.close()


def test_reach_trial_conditions_sit_beside_the_real_trials(tmp_path):
    specs = episode_set(0, "trials", "all", 1, "reach")
    assert [(s.difficulty, s.task) for s in specs] == [
        ("trial_strong_left", "left"), ("trial_weak_left", "left"), ("trial_centre", "center"),
        ("trial_weak_right", "right"), ("trial_strong_right", "right")]
    reach = get_family("reach")
    assert reach.difficulty("trial_weak_left").lateral == pytest.approx(lateral_at(TRIAL_CX["trial_weak_left"]))
    result = evaluate(EvalConfig(policy="expert", difficulty="trials", episodes=1, out=tmp_path / "trials",
                                 env=EnvConfig(task_family="reach", image_size=32), pool=PoolConfig(workers=1)),
                      progress=False)
    summary = (tmp_path / "trials" / "summary.md").read_text()
    assert "## Beside the real trials" in summary and "(18/20)" in summary
    assert all(r.success for r in result.records)
    evaluate(EvalConfig(policy="always-left", difficulty="trials", episodes=1, out=tmp_path / "left",
                        env=EnvConfig(task_family="reach", image_size=32), pool=PoolConfig(workers=1)), progress=False)
    real = tmp_path / "real.csv"  # the real per-condition counts, as `agree` takes them
    real.write_text("policy,trials,successes,condition\n" + "".join(
        f"{policy},{trials},{successes},{condition}\n" for condition, (real_ok, trials) in reach.real_trials.items()
        for policy, successes in (("expert", real_ok), ("always-left", trials - real_ok))))
    agreement = agree([tmp_path / "trials", tmp_path / "left"], real)
    assert set(agreement["conditions"]) == set(TRIAL_CX)
    with pytest.raises(EvalError, match="unknown difficulty 'trials'"):
        episode_set(0, "trials", "all", 1, "detour")


def test_a_family_defined_outside_the_package_runs_end_to_end(tmp_path, monkeypatch):
    (tmp_path / "lab_tasks.py").write_text(FAMILY_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = "lab_tasks:Corner"
    generate_dataset(build(GenerateConfig, dict(task_family=spec, episodes=6, out=tmp_path / "data", image_size=32,
                                                workers=2)), progress=False)  # spawned workers import it too
    names = sorted(p.name for p in (tmp_path / "data").glob("*.h5"))
    assert len(names) == 6 and all("_bottle_" in n for n in names)
    result = evaluate(EvalConfig(policy="expert", difficulty="easy", episodes=2, out=tmp_path / "eval",
                                 env=EnvConfig(task_family=spec, image_size=32), pool=PoolConfig(workers=2)),
                      progress=False)
    assert len(result.records) == 6 and all(r.success for r in result.records)
    assert result.config.env.task_family == spec
    del sys.modules["lab_tasks"]
    with pytest.raises(ConfigError, match="cannot load task family"):
        get_family("no_such_module:Family")
    with pytest.raises(ConfigError, match="unknown task family"):
        get_family("nope")


def test_docs_show_the_reach_levels():
    from mobile_vla_sim.envs import difficulty_table_markdown
    from mobile_vla_sim.envs.tasks.reach import DIFFICULTIES

    page = Path(__file__).resolve().parents[1] / "docs" / "tasks.md"
    assert difficulty_table_markdown(DIFFICULTIES) in page.read_text(), "docs/tasks.md's table is stale"
