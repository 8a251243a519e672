"""Messages: a stalled policy server is reported, not waited on forever; `serve` stopped by Ctrl-C or SIGTERM exits
non-zero; `1e9` in YAML is a number; probe `--text-data` errors come before the closed-loop runs; secrets given
as `--policy-arg` never reach a results file."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import pytest
import yaml

from hostile import META, QUICK, FakeServer, one_line_error, run

pytestmark = pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager:DeprecationWarning")


def test_a_stalled_policy_server_is_reported_not_waited_on(tmp_path):
    with FakeServer(META, lambda request: None) as server:  # connects, sends metadata, never answers
        start = time.perf_counter()
        one_line_error(run("eval", "--policy", server.url, "--policy-arg", "reply_timeout=1", *QUICK, "--out",
                           tmp_path / "o"), "sent no reply within 1 s", "reply_timeout=SECONDS")
        assert time.perf_counter() - start < 30
    one_line_error(run("eval", "--policy", server.url, "--policy-arg", "reply_timeout=-3", *QUICK, "--out",
                       tmp_path / "o2"), "reply_timeout=-3", "seconds")


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_serve_stopped_by_a_signal_exits_non_zero(monkeypatch, signum, code):
    """The signal is real (sent to this process once the server listens); the server loop is replaced by a wait."""
    import mobile_vla_sim.serving.server as server_mod

    async def serving(self, started=None, stop=None):
        started(8000)
        os.kill(os.getpid(), signum)
        await asyncio.sleep(30)
    monkeypatch.setattr(server_mod.PolicyServer, "run", serving)
    res = run("serve", "--policy", "expert")
    assert res.exit_code == code and "stopped" in res.output, (res.exit_code, res.output)


def test_exponent_numbers_in_yaml_are_numbers(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("timesteps: 1e6\nn_steps: 1.28e2\n")
    res = run("train-rl", "--config", config, "--print-config")
    assert res.exit_code == 0, res.output
    printed = yaml.safe_load(res.output)
    assert printed["timesteps"] == 1_000_000 and printed["n_steps"] == 128
    config.write_text("lr_head: 1e-4\nepochs: '2e1'\n")  # a quoted numeric string too
    res = run("train", "--config", config, "--data", tmp_path, "--backbone", "tiny", "--print-config")
    assert res.exit_code == 0 and yaml.safe_load(res.output)["lr_head"] == 1e-4, res.output
    assert yaml.safe_load(res.output)["epochs"] == 20
    config.write_text("epochs: 2.5e0\n")
    one_line_error(run("train", "--config", config, "--data", tmp_path, "--print-config"), "--epochs expects int")


def test_probe_text_data_errors_come_before_the_closed_loop_runs(tmp_path):
    (tmp_path / "empty").mkdir()
    probe = ["probe", "--policy", "expert", "--difficulty", "easy", "--episodes", "1", "--image-size", "16",
             "--workers", "1"]
    for data, words in ((tmp_path / "missing", ["--text-data", "does not exist"]),
                        (tmp_path / "empty", ["--text-data", "no episode files"])):
        start = time.perf_counter()
        one_line_error(run(*probe, "--text-data", data, "--out", tmp_path / "p"), *words)
        assert not (tmp_path / "p").exists() and time.perf_counter() - start < 10


def test_secret_policy_args_never_reach_results(tmp_path):
    out = tmp_path / "out"
    secrets = ["--policy-arg", "token=s3cr3t-TOKEN", "--policy-arg", "api_key=s3cr3t-KEY"]
    cmd = ["eval", "--policy", "hostile:with_secret", *secrets, *QUICK, "--out", out]
    assert run(*cmd).exit_code == 0
    config = json.loads((out / "results.json").read_text())["config"]
    assert config["policy_args"] == ["token=<redacted>", "api_key=<redacted>"]
    for path in out.rglob("*"):
        assert b"s3cr3t" not in path.read_bytes(), path
    again = run(*cmd)  # redacted on both sides: the same evaluation still resumes (nothing runs again)
    assert again.exit_code == 0 and json.loads((out / "results.json").read_text())["throughput"]["episodes"] == 0
    assert "s3cr3t" not in run(*cmd, "--print-config").output
