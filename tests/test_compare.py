"""The comparison report: closed-loop pairing, hypotheses, report.md / compare.json, and the CLI end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from mobile_vla_sim.eval import report as eval_report
from mobile_vla_sim.analysis.compare import (
    CompareConfig,
    PolicyProbe,
    closed_loop_comparison,
    write_comparison,
)
from mobile_vla_sim.errors import EvalError
from mobile_vla_sim.eval.metrics import aggregate
from mobile_vla_sim.eval.records import EpisodeRecord

REPORT_SECTIONS = ("## Hypotheses", "## Offline performance", "## Closed-loop success", "## Representations",
                   "![Context-vector similarity](context_similarity.png)", "![t-SNE of h_n](tsne_h_n.png)")


@pytest.fixture(autouse=True)
def _no_trajectory_plots(monkeypatch):
    """The eval harness's trajectory plot is not under test here and costs seconds per results folder."""
    monkeypatch.setattr(eval_report, "plot_trajectories", lambda *args, **kwargs: None)


def write_results(directory: Path, outcomes: dict[tuple[str, str, int], bool]) -> Path:
    """A synthetic `mvla-sim eval --out` directory with one record per (difficulty, task, index)."""
    records = [EpisodeRecord(index=i, seed=1000 + i, difficulty=d, task=t, success=s)
               for (d, t, i), s in outcomes.items()]
    eval_report.write_results(directory, policy=directory.name, config={}, records=records,
                              aggregates=aggregate(records))
    return directory


def synthetic_probe(label: str, base: dict, noise: float, loss: float, seed: int) -> PolicyProbe:
    rng = np.random.default_rng(seed)
    features = {k: v + noise * rng.normal(size=v.shape).astype(np.float32) if k in ("context", "action_token", "h_n")
                else v for k, v in base.items()}
    return PolicyProbe(label, features, {"loss": loss, "rmse": np.sqrt(loss)}, checkpoint_val_loss=loss)


@pytest.fixture
def base_features() -> dict:
    rng = np.random.default_rng(0)
    n, t = 12, 4
    return {"context": rng.normal(size=(n, t, 64, 32)).astype(np.float32),
            "action_token": rng.normal(size=(n, t, 24)).astype(np.float32),
            "h_n": rng.normal(size=(n, 16)).astype(np.float32),
            "task": np.array(["left", "right"] * (n // 2)),
            "episode": np.repeat(np.arange(n // 2), 2), "frame": np.tile([0, 4], n // 2)}


def test_closed_loop_pairs_shared_episodes_and_runs_exact_mcnemar(tmp_path):
    # A succeeds on 10 easy episodes, B on only 1 of them; B also ran 3 episodes A did not.
    a = {("easy", "left", i): True for i in range(10)} | {("hard", "right", i): False for i in range(4)}
    b = {k: (k == ("easy", "left", 0)) for k in reversed(list(a))} | {("medium", "left", i): True for i in range(3)}
    res = closed_loop_comparison((write_results(tmp_path / "a", a), write_results(tmp_path / "b", b)))
    assert res["shared_episodes"] == 14 and res["episodes_b"] == 17
    easy = res["mcnemar"]["easy"]
    assert (easy["only_a"], easy["only_b"], easy["both_success"]) == (9, 0, 1)
    assert easy["p_value"] == pytest.approx(stats.binomtest(0, 9, 0.5).pvalue) and easy["significant"]
    assert res["mcnemar"]["hard"]["p_value"] == 1.0 and not res["mcnemar"]["hard"]["significant"]
    # easy, hard and all are one family: Holm (3 tests) triples the smallest p-value; significance is decided on it
    assert res["adjustment"]["tests"] == 3 and res["adjustment"]["method"] == "holm"
    assert easy["p_adjusted"] == pytest.approx(3 * easy["p_value"])
    assert res["mcnemar"]["all"]["p_adjusted"] == pytest.approx(3 * easy["p_value"])  # its raw p is easy's
    assert res["detectable"]["pairs"] == 14 and res["detectable"]["discordance_source"] == "observed"
    bh = closed_loop_comparison((tmp_path / "a", tmp_path / "b"), alpha=0.01, adjust="bh")["mcnemar"]
    assert bh["easy"]["p_adjusted"] == pytest.approx(1.5 * easy["p_value"]) and bh["easy"]["significant"]
    held = closed_loop_comparison((tmp_path / "a", tmp_path / "b"), alpha=0.01)["mcnemar"]["easy"]
    assert held["p_value"] < 0.01 < held["p_adjusted"] and not held["significant"]  # raw would star it
    assert res["success_a"]["easy"]["success"]["k"] == 10 and res["success_b"]["easy"]["success"]["k"] == 1
    medium = res["success_b"]["medium"]["success"]
    assert medium["rate"] == 1.0 and 0.3 < medium["ci95"][0] < medium["ci95"][1] == 1.0
    assert list(res["success_b"]) == ["easy", "medium", "hard", "all"]
    assert closed_loop_comparison(None) == {"status": "not run"}


def test_closed_loop_rejects_missing_or_corrupt_results(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.json").write_text("{not json")
    good = write_results(tmp_path / "good", {("easy", "left", 0): True})
    with pytest.raises(EvalError, match="results.json"):
        closed_loop_comparison((good, tmp_path / "bad"))
    with pytest.raises(EvalError, match="mvla-sim eval"):
        closed_loop_comparison((good, tmp_path))


def test_write_comparison_report_and_json(tmp_path, base_features):
    outcomes = {("easy", t, i): True for t in ("left", "right") for i in range(3)}
    eval_dirs = (write_results(tmp_path / "ea", outcomes),
                 write_results(tmp_path / "eb", {k: k[1] == "left" for k in outcomes}))
    cfg = CompareConfig(checkpoint_a=tmp_path / "a.ckpt", checkpoint_b=tmp_path / "b.ckpt", data=tmp_path,
                        eval_dirs=eval_dirs, out=tmp_path / "out")
    close = synthetic_probe("frozen", base_features, 0.0, 0.0300, seed=1)
    near = synthetic_probe("lora", base_features, 0.1, 0.0350, seed=2)
    result = write_comparison(close, near, cfg)
    report = (cfg.out / "report.md").read_text()
    for section in REPORT_SECTIONS:
        assert section in report
    for png in result["plots"].values():
        assert (cfg.out / png).stat().st_size > 10_000
    assert json.loads((cfg.out / "compare.json").read_text()) == result
    hyp = result["hypotheses"]
    assert hyp["H1"]["holds"] and hyp["H1"]["value"] > 0.95  # B is A plus 10% noise
    assert not hyp["H2"]["holds"] and hyp["H2"]["value"] < 0.05
    assert hyp["H3"]["holds"] and hyp["H3"]["value"] == pytest.approx(0.005)
    assert result["representations"]["h_n"]["linear_cka"] > 0.9
    assert result["closed_loop"]["mcnemar"]["all"]["only_a"] == 3
    assert "Holm p" in report and "over the 1 tests of this table" in report
    tests = result["closed_loop"]["mcnemar"]
    assert tests["all"]["p_adjusted"] == tests["easy"]["p_adjusted"]  # one difficulty: the same test
    assert "holds" in report and "does not hold" in report and "0.0300" in report

    far = synthetic_probe("lora", base_features, 10.0, 0.0500, seed=3)
    far_result = write_comparison(close, far, CompareConfig(**{**cfg.__dict__, "eval_dirs": None}))
    hyp = far_result["hypotheses"]
    assert not hyp["H1"]["holds"] and hyp["H2"]["holds"] and not hyp["H3"]["holds"]
    assert far_result["closed_loop"] == {"status": "not run"}
    assert "**not run**" in (cfg.out / "report.md").read_text()


def test_write_comparison_refuses_different_windows(tmp_path, base_features):
    other = dict(base_features, frame=base_features["frame"] + 1)
    cfg = CompareConfig(checkpoint_a=tmp_path / "a", checkpoint_b=tmp_path / "b", data=tmp_path, out=tmp_path)
    with pytest.raises(EvalError, match="different windows"):
        write_comparison(synthetic_probe("a", base_features, 0, 0, 0), synthetic_probe("b", other, 0, 0, 0), cfg)


def test_compare_cli_end_to_end_on_tiny_checkpoints(tiny_checkpoints, tiny_dataset, tmp_path):
    from click.testing import CliRunner

    from mobile_vla_sim.cli import main

    outcomes = {(d, t, i): True for d in ("easy", "hard") for t in ("left", "right") for i in range(4)}
    eval_a = write_results(tmp_path / "eval_frozen", outcomes)
    eval_b = write_results(tmp_path / "eval_lora", {k: k[0] == "easy" for k in outcomes})
    out = tmp_path / "report"
    args = ["compare", str(tiny_checkpoints["frozen"]), str(tiny_checkpoints["lora"]), "--data", str(tiny_dataset),
            "--eval", str(eval_a), str(eval_b), "--out", str(out), "--max-windows", "6"]
    run = CliRunner().invoke(main, args)
    assert run.exit_code == 0, run.output
    assert "H1 context similarity" in run.output and "report:" in run.output

    result = json.loads((out / "compare.json").read_text())
    report = (out / "report.md").read_text()
    for section in REPORT_SECTIONS:
        assert section in report
    assert result["labels"] == ["frozen", "lora"] and result["windows"] == 6
    for name in ("context", "action_token", "h_n"):
        rep = result["representations"][name]
        assert -1.0 <= rep["cosine_per_token"]["min"] <= rep["cosine_per_token"]["max"] <= 1.0 + 1e-9
        assert 0.0 <= rep["linear_cka"] <= 1.0 + 1e-9 and rep["euclidean_per_token"]["min"] >= 0.0
    assert result["representations"]["context"]["cosine_per_token"]["n"] == 6 * 8 * 64  # windows x frames x tokens
    for side in ("a", "b"):  # the loss measured here is the validation loss training recorded
        offline = result["offline"][side]
        assert offline["loss"] == pytest.approx(offline["checkpoint_val_loss"], rel=1e-3) and offline["rmse"] > 0
    h3 = result["hypotheses"]["H3"]
    assert h3["value"] == pytest.approx(abs(result["offline"]["a"]["loss"] - result["offline"]["b"]["loss"]))
    assert {h["holds"] for h in result["hypotheses"].values()} <= {True, False}
    hard = result["closed_loop"]["mcnemar"]["hard"]
    assert (hard["only_a"], hard["only_b"]) == (8, 0) and hard["significant"]
    for png in result["plots"].values():
        assert (out / png).stat().st_size > 10_000


def test_compare_cli_reports_bad_input_in_one_line(tiny_dataset, tmp_path):
    from click.testing import CliRunner

    from mobile_vla_sim.cli import main

    missing = CliRunner().invoke(main, ["compare", str(tmp_path / "a.ckpt"), str(tmp_path / "b.ckpt"),
                                        "--data", str(tiny_dataset)])
    assert missing.exit_code != 0 and "checkpoint A not found" in missing.output
    assert len(missing.output.strip().splitlines()) == 1
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"not a checkpoint")
    bad = CliRunner().invoke(main, ["compare", str(corrupt), str(corrupt), "--data", str(tiny_dataset),
                                    "--out", str(tmp_path / "out")])
    assert bad.exit_code != 0 and "safetensors" in bad.output and "Traceback" not in bad.output
