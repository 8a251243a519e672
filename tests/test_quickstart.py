"""The README's main job, shrunk: every stage runs, the combined table is written, and a re-run skips finished work."""

from __future__ import annotations

import json

import pytest

from click.testing import CliRunner

from mobile_vla_sim.cli import main


@pytest.mark.slow  # ~3 min; CI runs it (.ci/run runs the slow tests)
def test_quickstart_runs_every_stage_and_resumes(tmp_path):
    out = tmp_path / "qs"
    args = ["quickstart", "--out", str(out), "--episodes", "8", "--frozen-epochs", "1", "--lora-epochs", "1",
            "--eval-episodes", "1", "--probe-episodes", "1", "--workers", "1"]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    results = (out / "results.md").read_text()
    for policy in ("expert", "random", "constant", "always-left", "frozen.ckpt", "lora.ckpt"):
        assert f"| {policy} | all |" in results
    assert "| frozen.ckpt |" in results.split("| RMSE |")[1]  # offline RMSE next to closed-loop success
    assert json.loads((out / "compare" / "compare.json").read_text())["hypotheses"]
    assert list((out / "eval" / "lora" / "videos").glob("*.mp4"))
    assert "## Verdict" in (out / "probe" / "probe.md").read_text()  # the frozen policy's robustness probe

    frozen_mtime = (out / "frozen.ckpt").stat().st_mtime_ns
    second = CliRunner().invoke(main, args)
    assert second.exit_code == 0, second.output
    assert "already trained" in second.output and "already evaluated" in second.output
    assert (out / "frozen.ckpt").stat().st_mtime_ns == frozen_mtime
