"""Metrics and episode sets on known inputs (no simulation needed)."""

from __future__ import annotations

import math

import pytest

from mobile_vla_sim.eval.episodes import EpisodeSpec, episode_set, scene_seed
from mobile_vla_sim.errors import EvalError
from mobile_vla_sim.eval.metrics import aggregate, grounding, spl
from mobile_vla_sim.eval.records import EpisodeRecord


def test_spl_definition():
    assert spl(True, 4.0, 5.0) == pytest.approx(0.8)
    assert spl(True, 4.0, 3.0) == pytest.approx(1.0)  # path shorter than the estimate never exceeds 1
    assert spl(False, 4.0, 4.0) == 0.0
    assert spl(True, float("nan"), 4.0) == 0.0


def _rec(index, task, success, side, difficulty="easy", **kw):
    return EpisodeRecord(index=index, seed=index, difficulty=difficulty, task=task, success=success,
                         side_taken=side, **kw)


def test_aggregate_and_grounding():
    recs = [_rec(0, "left", True, "left", spl=1.0, steps=10, final_distance=0.1),
            _rec(0, "right", True, "right", spl=0.5, steps=20, final_distance=0.3),
            _rec(1, "left", True, "left", steps=10, final_distance=0.1),
            _rec(1, "right", False, "left", wrong_side=True, steps=30, final_distance=1.0),
            _rec(2, "left", False, "none", collision=True, steps=5, final_distance=2.0, difficulty="hard")]
    agg = aggregate(recs)
    assert agg["overall"]["success"]["k"] == 3 and agg["overall"]["episodes"] == 5
    assert agg["by_difficulty"]["easy"]["success"]["rate"] == pytest.approx(0.75)
    assert agg["by_task"]["right"]["wrong_side_rate"] == pytest.approx(0.5)
    assert agg["overall"]["collision_rate"] == pytest.approx(0.2)
    assert agg["overall"]["mean_steps"] == pytest.approx(15.0)
    g = grounding(recs)
    assert g["pairs"] == 2  # the hard episode has no right partner
    assert g["both_success"]["rate"] == pytest.approx(0.5)
    assert g["same_side"]["rate"] == pytest.approx(0.5)
    assert g["same_path"]["rate"] == 0.0  # no trajectories recorded: nothing can match
    straight = [[0.0, 0.0, 0.0], [0.4, 0.0, 0.0], [0.8, 0.01, 0.0]]
    pair = [_rec(0, "left", False, "none", trajectory=straight), _rec(0, "right", False, "none", trajectory=straight[:2])]
    assert grounding(pair)["same_path"]["rate"] == 1.0 and grounding(pair)["same_side"]["rate"] == 0.0
    pair[1].trajectory = [[0.0, 0.0, 0.0], [0.4, -0.2, 0.0]]
    assert grounding(pair)["same_path"]["rate"] == 0.0


def test_episode_set_deterministic_and_paired():
    a = episode_set(7, "all", "both", 5)
    assert a == episode_set(7, ["easy", "medium", "hard"], ["left", "right"], 5)
    assert len(a) == 30 and len({s.key for s in a}) == 30
    for d in ("easy", "hard"):
        left = {s.index: s.seed for s in a if s.difficulty == d and s.task == "left"}
        right = {s.index: s.seed for s in a if s.difficulty == d and s.task == "right"}
        assert left == right and len(set(left.values())) == 5
    assert scene_seed(7, "easy", 0) != scene_seed(7, "hard", 0) != scene_seed(8, "hard", 0)
    assert episode_set(7, "hard", "left", 2) == [EpisodeSpec(i, scene_seed(7, "hard", i), "hard", "left")
                                                 for i in range(2)]


@pytest.mark.parametrize("kwargs, word", [({"difficulties": "extreme"}, "difficulty"),
                                          ({"tasks": "up"}, "task"), ({"n": 0}, "episodes")])
def test_episode_set_bad_input(kwargs, word):
    with pytest.raises(EvalError, match=word):
        episode_set(0, **{"difficulties": "easy", "tasks": "both", "n": 2, **kwargs})


def test_record_nan_survives_json_roundtrip(tmp_path):
    from mobile_vla_sim.eval.report import read_results, write_results

    recs = [_rec(0, "left", True, "left", trajectory=[[0.0, 0.0, 0.0], [1.0, 0.2, 0.1]])]
    paths = write_results(tmp_path, policy="p", config={"a": 1}, records=recs, aggregates=aggregate(recs))
    back = read_results(tmp_path).episodes
    assert back[0].success and math.isnan(back[0].final_distance)
    assert "| p | easy |" in paths["summary.md"].read_text()
    assert paths["episodes.csv"].read_text().splitlines()[0].startswith("index,seed,difficulty,task")
