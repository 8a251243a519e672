"""Verdicts that hold, end to end: `mvla-sim ab` (sequential A/B, resumable), `eval --target-halfwidth` (stops on an
anytime-valid interval, independent of the workers) and `mvla-sim plan`, on tiny 32 px episodes."""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

import mobile_vla_sim.analysis.ab as ab_module
from mobile_vla_sim.analysis.ab import ABConfig, run_ab, stream
from mobile_vla_sim.cli import main
from mobile_vla_sim.config import build
from mobile_vla_sim.eval.report import read_results
from mobile_vla_sim.eval.run import EvalConfig, evaluate
from mobile_vla_sim.eval.stats import (episodes_for_halfwidth, minimum_detectable_difference,
                                       paired_episodes_for_difference, rate_confidence_sequence, sequential_ab)

TINY = ["--image-size", "32", "--workers", "1"]


def _ab(tmp_path, a: str, b: str, **kw) -> ABConfig:
    return build(ABConfig, dict(policy_a=a, policy_b=b, difficulty="easy", image_size=32, workers=1,
                                out=tmp_path / "ab", **kw))


# --- sequential A/B ---------------------------------------------------------------------------------------------
def test_ab_decides_for_the_expert_in_far_fewer_pairs(tmp_path):
    out = tmp_path / "ab"
    run = CliRunner().invoke(main, ["ab", "expert", "random", "--difficulty", "easy", "--max-episodes", "200",
                                    "--batch", "10", "--out", str(out), *TINY])
    assert run.exit_code == 0, run.output
    result = json.loads((out / "ab.json").read_text())
    assert result["decision"] == "A" and result["status"] == "decided" and result["pairs_used"] < 20
    assert result["test"]["only_a"] == result["pairs_used"] and result["test"]["only_b"] == 0
    assert 0 < result["fixed_sample_pairs"] <= 200 and result["success"]["A"]["rate"] == 1.0
    assert "`expert` is better than `random`" in (out / "ab.md").read_text()
    for side, rate in (("a", 1.0), ("b", 0.0)):  # each side's episodes: the eval results writers, pairs used only
        results = read_results(out / side)
        assert len(results.episodes) == result["pairs_used"] and not results.interrupted
        assert results.aggregates["overall"]["success"]["rate"] == rate and (out / side / "summary.md").is_file()


def test_ab_of_a_policy_against_itself_never_declares_a_difference(tmp_path):
    """always-left succeeds on every left episode and fails every right one: concordant pairs only."""
    summary = run_ab(_ab(tmp_path, "always-left", "always-left", max_episodes=12, batch=12), progress=False,
                     echo=lambda line: None).summary
    assert summary["decision"] == "undecided" and summary["pairs_used"] == 12 and summary["status"] == "budget spent"
    assert summary["test"]["concordant"] == 12 and summary["fixed_sample_pairs"] is None
    assert summary["success"]["A"]["rate"] == summary["success"]["B"]["rate"] == 0.5
    assert summary["detectable"]["discordance_source"] == "assumed"


@pytest.mark.slow  # slow on 2 cores; CI runs it (.ci/run runs the slow tests)
def test_ab_resumes_after_an_interruption_with_the_same_decision(tmp_path, monkeypatch):
    """Expert against the constant policy (it drives into the box): an uninterrupted run, then one whose second
    batch of B is cut short by Ctrl-C and re-run; the same decision, and no finished episode runs twice."""
    whole = run_ab(_ab(tmp_path / "whole", "expert", "constant", batch=3), progress=False, echo=lambda line: None)
    assert whole.summary["decision"] == "A" and 3 < whole.summary["pairs_used"] < 12

    real, calls, ran = ab_module.eval_policy, [], []

    def interrupted_once(policy, specs, env, **kw):
        calls.append(policy.name)
        if len(calls) == 4:  # B's second batch: two episodes finish, then Ctrl-C
            result = real(policy, specs[:2], env, **kw)
            result.interrupted = True
        else:
            result = real(policy, specs, env, **kw)
        ran.extend((policy.name, r.key) for r in result.results)
        return result

    monkeypatch.setattr(ab_module, "eval_policy", interrupted_once)
    cfg = _ab(tmp_path / "cut", "expert", "constant", batch=3)
    first = run_ab(cfg, progress=False, echo=lambda line: None)
    assert first.interrupted and first.summary["status"] == "interrupted" and first.summary["pairs_used"] == 3
    resumed = run_ab(cfg, progress=False, echo=lambda line: None)
    assert not resumed.interrupted
    for key in ("decision", "pairs_used", "test", "fixed_sample_pairs", "success"):
        assert resumed.summary[key] == whole.summary[key]
    assert len(ran) == len(set(ran))  # nothing finished was run again
    outcomes = [[r.success for r in read_results(tmp_path / "cut" / "ab" / side).episodes] for side in "ab"]
    assert sequential_ab(*outcomes).decision == "A"


def test_ab_stream_is_the_eval_set_index_by_index_and_refuses_another_test(tmp_path):
    cfg = build(ABConfig, dict(policy_a="expert", policy_b="random", max_episodes=7, out=tmp_path / "ab"))
    specs = stream(cfg)
    assert [(s.index, s.difficulty, s.task) for s in specs[:6]] == [
        (0, d, t) for d in ("easy", "medium", "hard") for t in ("left", "right")]
    assert len(specs) == 7 and stream(build(ABConfig, {**cfg.__dict__, "max_episodes": 30}))[:7] == specs
    (tmp_path / "ab").mkdir()
    (tmp_path / "ab" / "ab.json").write_text(json.dumps({"identity": {"policy_a": "other"}, "specs": "x"}))
    run = CliRunner().invoke(main, ["ab", "expert", "random", "--out", str(tmp_path / "ab")])
    assert run.exit_code == 1 and "holds another A/B test" in run.output and len(run.output.strip().splitlines()) == 1


# --- eval --target-halfwidth -------------------------------------------------------------------------------------
def test_target_halfwidth_stops_early_and_does_not_depend_on_workers(tmp_path):
    runs = {}
    for workers in (1, 2):
        cfg = build(EvalConfig, dict(policy="expert", difficulty="easy", episodes=10, image_size=32, workers=workers,
                                     target_halfwidth=0.2, out=tmp_path / f"w{workers}"))
        runs[workers] = evaluate(cfg, progress=False)
    one, two = runs[1], runs[2]
    n = len(one.records)
    assert 5 < n < 20 and not one.interrupted  # the budget is 20 episodes
    low, high = rate_confidence_sequence(n, n)
    assert (high - low) / 2 <= 0.2 < (1 - rate_confidence_sequence(n - 1, n - 1)[0]) / 2  # the first narrow prefix
    assert [r.to_dict() for r in one.records] == [r.to_dict() for r in two.records]
    stopping = read_results(tmp_path / "w2").stopping
    assert stopping["reached"] and stopping["episodes"] == n and stopping["budget"] == 20
    assert stopping["confidence_sequence"] == pytest.approx([low, high])
    assert {r.task for r in one.records} == {"left", "right"}  # run index by index: both sides in the prefix
    assert "Stopped after" in (tmp_path / "w1" / "summary.md").read_text()
    resumed = evaluate(build(EvalConfig, dict(policy="expert", difficulty="easy", episodes=10, image_size=32,
                                              workers=1, target_halfwidth=0.2, out=tmp_path / "w1")), progress=False)
    assert len(resumed.records) == n and read_results(tmp_path / "w1").throughput["episodes"] == 0


def test_results_state_what_the_evaluation_could_detect(tmp_path):
    result = evaluate(build(EvalConfig, dict(policy="always-left", difficulty="easy", episodes=3, image_size=32,
                                             workers=1, out=tmp_path / "e")), progress=False)
    found = read_results(tmp_path / "e").detectable
    assert found["episodes"] == 6 and found["success"] == 0.5 and found["paired"]["discordance_source"] == "assumed"
    assert found["paired"]["difference"] is None  # 6 pairs detect nothing at alpha 0.05 (NaN, written as null)
    assert "What these episodes can detect" in result.paths["summary.md"].read_text()


# --- plan -------------------------------------------------------------------------------------------------------
def test_plan_answers_both_questions():
    run = CliRunner().invoke(main, ["plan", "--halfwidth", "0.05", "--difference", "0.1", "--discordance", "0.3"])
    assert run.exit_code == 0, run.output
    n, pairs = episodes_for_halfwidth(0.05), paired_episodes_for_difference(0.1, 0.3)
    assert f"{n} episodes (--episodes {math.ceil(n / 6)} over 6 groups)" in run.output
    assert f"{pairs} paired episodes" in run.output and "discordance 0.3 (given)" in run.output
    family = CliRunner().invoke(main, ["plan", "--difference", "0.1", "--tests", "64"])
    assert f"{paired_episodes_for_difference(0.1, 0.5, 0.05 / 64)} paired episodes" in family.output
    assert "assumed" in family.output
    detect = CliRunner().invoke(main, ["plan", "--episodes", "100"])
    assert f"{100 * minimum_detectable_difference(100):.1f} percentage points" in detect.output
    nothing = CliRunner().invoke(main, ["plan"])
    assert nothing.exit_code == 1 and "nothing to plan" in nothing.output
    too_big = CliRunner().invoke(main, ["plan", "--difference", "0.6"])
    assert too_big.exit_code == 1 and "discordance" in too_big.output and "Traceback" not in too_big.output
