"""Nothing finished is lost: eval stopped by SIGTERM or `kill -9`, a plugin failing mid-run, a full disk at the end;
and no command overwrites earlier results (videos, compare, agree, train-rl).

The faults are real where a test can make them real: the policy plugin (`hostile.faulty`) sends SIGTERM or
SIGKILL to its own process, or raises, at a fixed episode. The full disk at the end of eval is simulated: the final
result writes raise `OSError(ENOSPC)` (a real small tmpfs is `test_hostile_inputs.test_real_full_disk`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

import hostile
from hostile import full_disk, one_line_error, run
from mobile_vla_sim.cli import main
from mobile_vla_sim.eval.report import JOURNAL, read_journal

ROOT, TESTS = Path(__file__).resolve().parents[1], Path(__file__).resolve().parent
#: 2 scenes x left/right = 4 easy episodes, one at a time, in this process (the fault strikes at the 3rd reset).
FAULTY = ["eval", "--policy", "hostile:faulty", *hostile.QUICK[:2], "--episodes", "2", *hostile.QUICK[4:]]


def results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def finish_and_compare(out: Path, clean: Path, resumed_episodes: int) -> None:
    """Re-running the same command finishes the run: only the missing episodes run, and the episodes equal those of
    an uninterrupted run."""
    again = run(*FAULTY, "--out", out)
    assert again.exit_code == 0, again.output
    done = results(out)
    assert not done["interrupted"] and len(done["episodes"]) == 4
    assert done["throughput"]["episodes"] == resumed_episodes and not (out / JOURNAL).exists()
    assert run(*FAULTY, "--out", clean).exit_code == 0
    assert (out / "episodes.csv").read_bytes() == (clean / "episodes.csv").read_bytes()


def test_sigterm_keeps_finished_episodes_and_the_run_resumes(tmp_path, monkeypatch):
    monkeypatch.setenv(hostile.FAULT, "sigterm")
    res = run(*FAULTY, "--out", tmp_path / "out")
    assert res.exit_code == 128 + signal.SIGTERM, res.output
    assert "Terminated: the 2 finished episodes are saved" in res.output
    partial = results(tmp_path / "out")
    assert partial["interrupted"] and len(partial["episodes"]) == 2
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the CLI put the default handler back
    monkeypatch.delenv(hostile.FAULT)
    finish_and_compare(tmp_path / "out", tmp_path / "clean", resumed_episodes=2)


def test_kill_9_keeps_finished_episodes_on_disk_and_the_run_resumes(tmp_path, monkeypatch):
    """SIGKILL runs no handler: the episodes are on disk because each one was journaled when it finished."""
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)]), "OMP_NUM_THREADS": "1",
           hostile.FAULT: "sigkill"}
    proc = subprocess.run([sys.executable, "-m", "mobile_vla_sim.cli", *FAULTY, "--out", str(out)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert not (out / "results.json").exists()
    header, kept = read_journal(out)
    assert header["policy"] == "faulty-expert" and [r.key for r in kept] == ["easy/left/0000", "easy/right/0000"]
    finish_and_compare(out, tmp_path / "clean", resumed_episodes=2)


def test_a_plugin_raising_mid_run_is_one_line_and_keeps_finished_episodes(tmp_path, monkeypatch):
    monkeypatch.setenv(hostile.FAULT, "raise")
    line = one_line_error(run(*FAULTY, "--out", tmp_path / "out"), "policy 'faulty-expert' failed in act_batch",
                          "RuntimeError: the model fell over", "the 2 finished episodes are saved",
                          "run the same command again")
    assert "Traceback" not in line
    assert results(tmp_path / "out")["interrupted"] and len(results(tmp_path / "out")["episodes"]) == 2
    debug = CliRunner().invoke(main, ["--debug", *FAULTY, "--out", str(tmp_path / "debug")])
    assert isinstance(debug.exception.__cause__.__cause__, RuntimeError)  # --debug shows the plugin's traceback
    monkeypatch.delenv(hostile.FAULT)
    finish_and_compare(tmp_path / "out", tmp_path / "clean", resumed_episodes=2)


def test_a_full_disk_at_the_end_of_eval_loses_nothing(tmp_path, monkeypatch):
    import mobile_vla_sim.eval.run as run_mod

    real = run_mod.write_results
    monkeypatch.setattr(run_mod, "write_results", full_disk())
    out = tmp_path / "out"
    one_line_error(run(*FAULTY, "--out", out), "cannot write the results", "No space left on device",
                   str(out / JOURNAL), "run the same command again")
    assert len(read_journal(out)[1]) == 4 and not (out / "results.json").exists()
    monkeypatch.setattr(run_mod, "write_results", real)
    finish_and_compare(out, tmp_path / "clean", resumed_episodes=0)


def test_a_journal_line_cut_by_a_kill_is_skipped_and_garbage_is_refused(tmp_path, monkeypatch):
    import mobile_vla_sim.eval.run as run_mod

    real = run_mod.write_results
    monkeypatch.setattr(run_mod, "write_results", full_disk())
    out = tmp_path / "out"
    run(*FAULTY, "--out", out)
    monkeypatch.setattr(run_mod, "write_results", real)
    journal = out / JOURNAL
    lines = journal.read_text().splitlines()
    assert len(lines) == 5  # the header and 4 episodes
    journal.write_text("\n".join(lines[:4]) + "\n" + lines[4][:50])  # killed while writing the last line
    assert len(read_journal(out)[1]) == 3
    text = journal.read_text()
    journal.write_text(lines[0] + "\nnot json\n" + lines[1] + "\n")
    one_line_error(run(*FAULTY, "--out", out), str(journal), "delete it")
    journal.write_bytes(b"\xff\xfe garbage")
    one_line_error(run(*FAULTY, "--out", out), "not an episode journal")
    journal.write_text(text)
    finish_and_compare(out, tmp_path / "clean", resumed_episodes=1)


def test_video_dir_of_another_evaluation_is_never_overwritten(tmp_path):
    videos = tmp_path / "videos"
    quick = [*hostile.QUICK, "--video-dir", videos, "--videos-per-group", "1"]
    assert run("eval", "--policy", "expert", *quick, "--out", tmp_path / "a").exit_code == 0
    before = {p.name: p.stat().st_mtime_ns for p in videos.glob("*.mp4")}
    assert len(before) == 2
    one_line_error(run("eval", "--policy", "random", *quick, "--out", tmp_path / "b"), "--video-dir",
                   "already holds easy_left_0000.mp4 and 1 more of another evaluation", "choose another --video-dir")
    assert {p.name: p.stat().st_mtime_ns for p in videos.glob("*.mp4")} == before
    same = run("eval", "--policy", "expert", *quick, "--out", tmp_path / "c")  # the same evaluation may redo them
    assert same.exit_code == 0, same.output


def test_compare_and_agree_refuse_other_results_before_any_work(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    compare = ["compare", tmp_path / "a.ckpt", tmp_path / "b.ckpt", "--data", tmp_path / "data"]
    one_line_error(run(*compare, "--out", a_file), "--out", "is a file")
    other = tmp_path / "cmp"
    other.mkdir()
    (other / "compare.json").write_text(json.dumps({"config": {"checkpoint_a": "x.ckpt"}}))
    one_line_error(run(*compare, "--out", other), "--out", "holds another comparison", "choose another --out")
    # the same comparison again passes the output check and stops at its (missing) inputs
    from mobile_vla_sim.analysis.compare import CompareConfig, _job

    cfg = CompareConfig(checkpoint_a=tmp_path / "a.ckpt", checkpoint_b=tmp_path / "b.ckpt", data=tmp_path / "data",
                        out=other)
    (other / "compare.json").write_text(json.dumps({"config": _job(cfg)}))
    one_line_error(run(*compare, "--out", other), "checkpoint A not found")

    real = tmp_path / "real.csv"
    real.write_text("policy,trials,successes\nexpert,10,9\nrandom,10,1\n")
    agree = ["agree", "--real", real, "--sim", tmp_path / "s1", "--sim", tmp_path / "s2"]
    one_line_error(run(*agree, "--out", a_file), "--out", "is a file")
    (tmp_path / "agreed").mkdir()
    (tmp_path / "agreed" / "agree.json").write_text(json.dumps({"sim": {"x": "elsewhere"}, "real_csv": "r.csv"}))
    one_line_error(run(*agree, "--out", tmp_path / "agreed"), "holds the agreement of other results")
    assert a_file.read_text() == "x"


def test_train_rl_never_overwrites_a_model(tmp_path):
    model = tmp_path / "ppo.zip"
    model.write_bytes(b"a trained model")
    one_line_error(run("train-rl", "--out", model, "--timesteps", "8"), "--out", "already holds a model")
    assert model.read_bytes() == b"a trained model"
