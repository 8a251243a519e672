"""Failure taxonomy: every label on hand-built records, then scripted policies in closed loop (32 px, easy)."""

from __future__ import annotations

import csv
import json
import math
from typing import Sequence

import numpy as np
import pytest

from mobile_vla_sim.eval.episodes import episode_set
from mobile_vla_sim.eval.metrics import aggregate
from mobile_vla_sim.eval.records import CSV_COLUMNS, EpisodeRecord
from mobile_vla_sim.eval.report import summary_markdown
from mobile_vla_sim.eval.schema import json_safe
from mobile_vla_sim.envs.config import EnvConfig
from mobile_vla_sim.envs.engine import PoolConfig
from mobile_vla_sim.eval.rollout import eval_policy
from mobile_vla_sim.eval.run import EvalConfig, evaluate
from mobile_vla_sim.eval.taxonomy import LABELS, classify, label_failures, steer_signal
from mobile_vla_sim.policy import Policy
from mobile_vla_sim.envs.expert import AlwaysSidePolicy, ExpertPolicy

BOX = [1.1, 0.0, 0.15, 0.2]  # easy scene: near face at x = 0.95
GOAL = [1.9, 0.0]


def _rec(poses: Sequence[Sequence[float]], actions: Sequence[Sequence[float]], task: str = "left", index: int = 0,
         **kw) -> EpisodeRecord:
    """A record with (x, y) poses (yaw 0), the env actions sent between them, one box and the goal."""
    assert len(actions) == len(poses) - 1
    return EpisodeRecord(index=index, seed=0, difficulty="easy", task=task, steps=len(actions),
                         trajectory=[[float(x), float(y), 0.0] for x, y in poses], actions=[list(a) for a in actions],
                         obstacles=[BOX], goal=GOAL, **kw)


def _around(side: str) -> tuple[list, list]:
    """Poses and actions of a clean pass on `side` of the box up to the goal."""
    s = 1.0 if side == "left" else -1.0
    poses = [(0, 0), (0.5, 0.3 * s), (1.1, 0.5 * s), (1.6, 0.3 * s), (1.9, 0.0)]
    return poses, [[0.4, 0.6 * s], [0.4, 0.0], [0.4, -0.6 * s], [0.4, -0.3 * s]]


# ---- hand-built records: one per label ---------------------------------------------------------------------------
def test_success_has_no_label():
    assert classify(_rec(*_around("left"), success=True, side_taken="left")) == ("", [])


def test_left_right_confusion_needs_both_tasks_wrong():
    left = _rec(*_around("right"), task="left", side_taken="right", wrong_side=True)
    right = _rec(*_around("left"), task="right", side_taken="left", wrong_side=True)
    assert classify(left, right) == ("left_right_confusion", ["left_right_confusion", "wrong_side"])
    right_ok = _rec(*_around("right"), task="right", side_taken="right", success=True)
    assert classify(left, right_ok) == ("wrong_side", ["wrong_side"])  # partner obeyed: one-sided, not confused
    assert classify(left) == ("wrong_side", ["wrong_side"])  # no partner


def test_forward_collapse_drives_straight_into_the_box():
    rec = _rec([(0.2 * i, 0.0) for i in range(6)], [[0.4, 0.0]] * 5, collision=True)
    assert classify(rec) == ("forward_collapse", ["forward_collapse", "collision"])
    stopped = _rec([(0.0, 0.0)] * 6, [[0.0, 0.0]] * 5, timeout=True)  # never drove: not a forward collapse
    assert "forward_collapse" not in classify(stopped)[1]


def test_oscillation_counts_sign_flips_of_large_swings():
    weave = [[0.3, 0.9 * (-1) ** i] for i in range(6)]  # 0.6 of the limit, 5 flips
    rec = _rec([(0.15 * i, 0.03 * (i % 2)) for i in range(7)], weave, collision=True)
    assert classify(rec)[0] == "oscillation"
    small = [[0.3, 0.3 * (-1) ** i] for i in range(6)]  # 0.2 of the limit: corrections, not weaving
    assert "oscillation" not in classify(_rec([(0.15 * i, 0.0) for i in range(7)], small, collision=True))[1]


def test_overshoot_passes_the_goal():
    poses = [(0, 0), (0.5, 0.4), (1.1, 0.5), (1.7, 0.4), (2.3, 0.4)]  # beside the goal circle and beyond it
    rec = _rec(poses, [[0.4, 0.6], [0.4, 0.0], [0.4, -0.3], [0.4, 0.0]], side_taken="left", collision=True)
    assert classify(rec) == ("overshoot", ["overshoot", "collision"])


def test_false_stop_rests_away_from_the_goal():
    poses = [(0, 0), (0.3, 0.0), (0.5, 0.0), (0.5, 0.0), (0.5, 0.0), (0.5, 0.0)]
    rec = _rec(poses, [[0.4, 0.3], [0.4, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]], timeout=True)
    assert classify(rec) == ("false_stop", ["false_stop", "timeout"])
    spinning = _rec(poses, [[0.4, 0.3], [0.4, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]], timeout=True)
    spinning.trajectory[-1][2] = 1.2  # turning on the spot is not a stop
    assert classify(spinning)[0] == "timeout"


def test_late_turn_starts_turning_in_line_with_the_box():
    poses = [(0, 0), (0.35, 0.0), (0.7, 0.0), (0.85, 0.05)]
    rec = _rec(poses, [[0.4, 0.0], [0.4, 0.0], [0.3, 1.0]], collision=True)
    assert classify(rec) == ("late_turn", ["late_turn", "collision"])
    early = _rec(poses, [[0.4, 0.6], [0.4, 0.0], [0.3, 1.0]], collision=True)  # turned in time, not enough
    assert classify(early) == ("collision", ["collision"])
    wrong_way = _rec(poses, [[0.4, 0.0], [0.4, 0.0], [0.3, -1.0]], collision=True)  # turned right on a left task
    assert classify(wrong_way)[0] == "collision"


def test_outcome_labels_when_nothing_more_specific_applies():
    poses, acts = [(0.1 * i, 0.02 * i) for i in range(6)], [[0.3, 0.4]] * 5
    both = _rec(poses, acts, collision=True, out_of_bounds=True)
    assert classify(both) == ("collision", ["collision", "out_of_bounds"])
    assert classify(_rec(poses, acts, out_of_bounds=True)) == ("out_of_bounds", ["out_of_bounds"])
    assert classify(_rec(poses, acts, timeout=True)) == ("timeout", ["timeout"])
    assert classify(_rec(poses, acts))[0] == "timeout"  # the outcome's own fallback
    bare = EpisodeRecord(index=0, seed=0, difficulty="easy", task="left", collision=True)  # no poses or actions
    assert classify(bare) == ("collision", ["collision"])


def test_precedence_order_and_failure_summary():
    assert LABELS == ("left_right_confusion", "wrong_side", "forward_collapse", "oscillation", "overshoot",
                      "false_stop", "late_turn", "collision", "out_of_bounds", "timeout")
    recs = [_rec(*_around("right"), task="left", side_taken="right", wrong_side=True),
            _rec(*_around("left"), task="right", side_taken="left", wrong_side=True),
            _rec([(0.2 * i, 0.0) for i in range(6)], [[0.4, 0.0]] * 5, index=1, collision=True),
            _rec(*_around("right"), task="right", index=1, side_taken="right", success=True)]
    agg = aggregate(recs)  # labels the records in place, with the partners found across the whole set
    assert [r.failure_label for r in recs] == ["left_right_confusion", "left_right_confusion", "forward_collapse", ""]
    assert recs[2].failure_flags == "forward_collapse;collision"
    f = agg["by_difficulty"]["easy"]["failures"]
    assert f["failed"] == 3 and f["counts"]["left_right_confusion"] == 2 and f["counts"]["forward_collapse"] == 1
    assert f["rates"]["forward_collapse"] == pytest.approx(0.25) and f["flags"]["collision"] == 1
    md = summary_markdown("p", agg)
    assert "## Failure labels" in md and "| easy | 3/4 | 2 (50%) | 1 (25%) |" in md


def test_actions_survive_json_with_nan_and_omni_steers_by_strafing():
    rec = _rec([(0.2 * i, 0.0) for i in range(4)], [[0.4, float("nan")]] * 3, collision=True)
    back = EpisodeRecord.from_dict(json.loads(json.dumps(json_safe(rec.to_dict()))))
    assert back.actions[0][1] is None and np.all(steer_signal(back) == 0.0)
    assert classify(back)[0] == "forward_collapse"  # NaN executes as 0
    assert "actions" not in CSV_COLUMNS and {"failure_label", "failure_flags"} <= set(CSV_COLUMNS)
    omni = _rec([(0.2 * i, 0.0) for i in range(4)], [[0.4, 0.25, 0.0]] * 3, collision=True)
    assert steer_signal(omni) == pytest.approx([0.5] * 3)  # linear_y / MAX_LINEAR


# ---- scripted policies in closed loop -----------------------------------------------------------------------------
ENV = EnvConfig(image_size=32)


def _labels(policy: Policy, n: int = 2) -> list[EpisodeRecord]:
    recs = eval_policy(policy, episode_set(0, "easy", "both", n), ENV, pool=PoolConfig(workers=1), progress=False).results
    label_failures(recs)
    return recs


class _OppositeExpert(ExpertPolicy):
    """The expert told the other side than the instruction says."""

    name = "opposite-expert"

    def reset(self, instruction: str, slot: int = 0) -> None:
        super().reset(instruction, slot)
        self._experts[slot].reset("right" if "left" in instruction else "left")


class _Scripted(Policy):
    """A fixed action sequence per episode, `actions[k]` at step k (the last one repeated)."""

    def __init__(self, name: str, actions: Sequence[Sequence[float]]):
        self.name, self.actions, self.steps = name, np.asarray(actions, np.float32), {}

    def reset(self, instruction: str, slot: int = 0) -> None:
        self.steps[slot] = 0

    def act_batch(self, obs: dict[str, np.ndarray], slots: Sequence[int]) -> np.ndarray:
        out = []
        for s in slots:
            out.append(self.actions[min(self.steps[s], len(self.actions) - 1)])
            self.steps[s] += 1
        return np.stack(out)


def test_drive_straight_is_forward_collapse_into_a_collision(tmp_path):
    res = evaluate(EvalConfig(policy="constant", difficulty="easy", episodes=2, pool=PoolConfig(workers=1), out=tmp_path,
                              env=EnvConfig(image_size=32)), progress=False)
    assert {r.failure_label for r in res.records} == {"forward_collapse"}
    assert all(r.failure_flags.split(";") == ["forward_collapse", "collision"] for r in res.records)
    with (tmp_path / "episodes.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [row["failure_label"] for row in rows] == ["forward_collapse"] * 4 and "actions" not in rows[0]
    episodes = json.loads((tmp_path / "results.json").read_text())["episodes"]
    assert all(len(e["actions"]) == e["steps"] and len(e["actions"][0]) == 2 for e in episodes)
    assert res.aggregates["overall"]["failures"]["rates"]["forward_collapse"] == 1.0
    assert "## Failure labels" in (tmp_path / "summary.md").read_text()


def test_expert_told_the_opposite_side_is_left_right_confusion():
    recs = _labels(_OppositeExpert())
    assert [r.failure_label for r in recs] == ["left_right_confusion"] * 4
    assert all("wrong_side" in r.failure_flags for r in recs)


def test_always_left_is_wrong_side_on_right_tasks_never_confusion():
    recs = _labels(AlwaysSidePolicy("left"))
    assert [r.failure_label for r in recs if r.task == "right"] == ["wrong_side"] * 2
    assert all(r.success and r.failure_label == "" for r in recs if r.task == "left")
    assert not any("left_right_confusion" in r.failure_flags for r in recs)


def test_expert_has_no_flags():
    recs = _labels(ExpertPolicy())
    assert all(r.success and r.failure_label == "" and r.failure_flags == "" for r in recs)


def test_alternating_turns_oscillate():
    recs = _labels(_Scripted("weave", [[0.2, 1.0], [0.2, -1.0]] * 30))
    assert [r.failure_label for r in recs] == ["oscillation"] * 4


def test_stopping_early_is_a_false_stop():
    recs = _labels(_Scripted("early-stop", [[0.3, 0.0], [0.3, 0.0], [0.0, 0.0]]))
    assert [r.failure_label for r in recs] == ["false_stop"] * 4
    assert all(r.timeout and math.isfinite(r.final_distance) and r.final_distance > 0.5 for r in recs)
