"""Sim-vs-real agreement (MMRV, Pearson r) on eval folders written from hand-built records (no simulation)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from mobile_vla_sim.errors import ConfigError, EvalError
from mobile_vla_sim.analysis.agree import AgreeConfig, agree, mmrv, pearson
from mobile_vla_sim.eval.metrics import aggregate
from mobile_vla_sim.eval.records import EpisodeRecord
from mobile_vla_sim.eval.report import write_results


def _sim(root: Path, policy: str, successes: dict[str, tuple[int, int]]) -> Path:
    """An eval folder for `policy` with k of n successes per difficulty."""
    records = [EpisodeRecord(index=i, seed=i, difficulty=d, task="left", success=i < k, collision=i >= k)
               for d, (k, n) in successes.items() for i in range(n)]
    out = root / policy.replace(".", "_")
    write_results(out, policy=policy, config={}, records=records, aggregates=aggregate(records))
    return out


def _csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_mmrv_matches_hand_computation():
    # i=0 vs 1: sim says 0 > 1, real says 0 < 1 -> violation |0.6 - 0.7| = 0.1; likewise i=1 vs 0; i=2 ordered.
    assert mmrv([0.9, 0.5, 0.2], [0.6, 0.7, 0.1]) == pytest.approx((0.1 + 0.1 + 0.0) / 3)
    # a sim tie is a violation only from the side whose real rate is higher (strict comparisons, as SimplerEnv)
    assert mmrv([0.5, 0.5], [0.4, 0.6]) == pytest.approx((0.0 + 0.2) / 2)
    assert mmrv([0.1, 0.2, 0.3], [0.1, 0.2, 0.3]) == 0.0
    assert pearson([0.1, 0.2, 0.4], [0.2, 0.4, 0.8]) == pytest.approx(1.0)
    assert math.isnan(pearson([0.5, 0.5], [0.2, 0.8]))


def test_perfect_agreement_gives_mmrv_0_and_r_1(tmp_path):
    dirs = [_sim(tmp_path, "frozen.ckpt", {"easy": (9, 10)}), _sim(tmp_path, "lora.ckpt", {"easy": (5, 10)}),
            _sim(tmp_path, "random", {"easy": (2, 10)})]
    real = _csv(tmp_path / "real.csv", "policy,trials,successes\nfrozen.ckpt,10,9\nlora.ckpt,20,10\nrandom,10,2\n")
    res = agree(dirs, real, out=tmp_path / "agree")
    c = res["conditions"]["all"]
    assert c["mmrv"] == 0.0 and c["pearson_r"] == pytest.approx(1.0)
    assert [p["policy"] for p in c["points"]] == ["frozen.ckpt", "lora.ckpt", "random"]
    assert c["points"][1]["real"] == 0.5 and c["points"][1]["sim_n"] == 10
    saved = json.loads((tmp_path / "agree" / "agree.json").read_text())
    assert saved["mean"]["mmrv"] == 0.0
    assert "| all | 3 | 0.000 | 1.000 |" in (tmp_path / "agree" / "agree.md").read_text()
    assert (tmp_path / "agree" / "agree.png").stat().st_size > 1000


def test_known_example_through_files_with_conditions(tmp_path):
    dirs = [_sim(tmp_path, "a", {"easy": (9, 10), "hard": (5, 10)}),
            _sim(tmp_path, "b", {"easy": (5, 10), "hard": (5, 10)}),
            _sim(tmp_path, "c", {"easy": (2, 10), "hard": (1, 10)})]
    real = _csv(tmp_path / "real.csv", "policy,trials,successes,condition\n"
                "a,10,6,easy\nb,5,3,easy\nb,5,4,easy\nc,10,1,easy\n"      # b's two sessions sum to 7/10
                "a,10,4,hard\nb,10,6,hard\nc,10,0,hard\n")
    res = agree(dirs, real)
    assert res["conditions"]["easy"]["mmrv"] == pytest.approx(0.2 / 3)
    # hard: sim a == b (tie), real a < b: only b's row violates, by 0.2
    assert res["conditions"]["hard"]["mmrv"] == pytest.approx(0.2 / 3)
    assert res["mean"]["mmrv"] == pytest.approx(0.2 / 3)
    assert res["conditions"]["easy"]["points"][1]["real_n"] == 10


def test_mismatched_policy_names_are_refused_with_both_lists(tmp_path):
    dirs = [_sim(tmp_path, "frozen.ckpt", {"easy": (9, 10)}), _sim(tmp_path, "lora.ckpt", {"easy": (5, 10)})]
    real = _csv(tmp_path / "real.csv", "policy,trials,successes\nfrozen,10,9\nlora.ckpt,10,5\n")
    with pytest.raises(EvalError, match=r"sim has frozen.ckpt, lora.ckpt; real CSV has frozen, lora.ckpt") as err:
        agree(dirs, real)
    assert "\n" not in str(err.value)
    missing = _csv(tmp_path / "hard.csv", "policy,trials,successes,condition\nfrozen.ckpt,10,9,easy\n"
                   "lora.ckpt,10,5,easy\nfrozen.ckpt,10,3,hard\n")
    with pytest.raises(EvalError, match="for condition 'hard'"):
        agree(dirs, missing)
    with pytest.raises(EvalError, match="both evaluate policy 'frozen.ckpt'"):
        agree([dirs[0], dirs[0]], real)


def test_bad_real_csv_and_config(tmp_path):
    dirs = [_sim(tmp_path, "a", {"easy": (9, 10)}), _sim(tmp_path, "b", {"easy": (5, 10)})]
    with pytest.raises(EvalError, match="lacks column"):
        agree(dirs, _csv(tmp_path / "x.csv", "policy,n,successes\na,10,9\n"))
    with pytest.raises(EvalError, match="line 3"):
        agree(dirs, _csv(tmp_path / "y.csv", "policy,trials,successes\na,10,9\nb,10,11\n"))
    with pytest.raises(EvalError, match="not a difficulty"):
        agree(dirs, _csv(tmp_path / "z.csv", "policy,trials,successes,condition\na,10,9,hard\nb,10,5,hard\n"))
    with pytest.raises(EvalError, match="not found"):
        agree(dirs, tmp_path / "none.csv")
    with pytest.raises(ConfigError, match="at least two"):
        AgreeConfig(sim=(dirs[0],), real=tmp_path / "x.csv")
    cfg = AgreeConfig(sim=[str(d) for d in dirs], real=str(tmp_path / "x.csv"))
    assert cfg.sim == tuple(dirs) and isinstance(cfg.real, Path)
