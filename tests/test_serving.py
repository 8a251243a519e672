"""The policy server and `--policy ws://HOST:PORT`: openpi wire compatibility, robustness, auth, and eval through
the server giving the same episodes as in-process eval. Everything runs on 127.0.0.1 on a free port."""

from __future__ import annotations

import json
import socket
import threading
import time

import numpy as np
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from mobile_vla_sim.errors import ConfigError, PolicyLoadError
from mobile_vla_sim.envs.config import EnvConfig
from mobile_vla_sim.envs.engine import PoolConfig
from mobile_vla_sim.eval.run import EvalConfig, evaluate
from mobile_vla_sim.policies.baselines import RandomPolicy
from mobile_vla_sim.policies.registry import load_policy
from mobile_vla_sim.policies.remote.wire import TOKEN_ENV, packb, unpackb
from mobile_vla_sim.serving.server import ServeConfig, ServerThread

ENV = EnvConfig(image_size=48)
#: openpi-client's own code connects without a context manager, which websockets >= 17.1 warns about
pytestmark = pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager:DeprecationWarning")
PROMPT = "Navigate around obstacles and reach the front of the beverage bottle on the left"


@pytest.fixture(autouse=True)
def _no_token_env(monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)


def _image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (48, 48, 3), dtype=np.uint8)


def _env_state() -> np.ndarray:
    import gymnasium as gym

    env = gym.make("MobileVLA/Nav-v0", task="left", difficulty="easy", image_size=48)
    obs, _ = env.reset(seed=0)
    env.close()
    return obs["state"]


def _request(step: int, episode: str = "e1", seed: int = 0, **extra) -> dict:
    return {"image": _image(seed), "prompt": PROMPT, "episode_id": episode, "step": step, **extra}


def test_openpi_client_works_unchanged():
    client_mod = pytest.importorskip("openpi_client.websocket_client_policy")
    local = RandomPolicy(seed=0)
    local.reset(PROMPT, 0)
    with ServerThread(ServeConfig(policy="random", port=0)) as srv:
        client = client_mod.WebsocketClientPolicy(host="127.0.0.1", port=srv.port)
        meta = client.get_server_metadata()
        assert meta["drive"] == "diff" and meta["action_names"] == ["linear_x", "angular_z"]
        assert meta["chunk_size"] == 1 and meta["color_order"] == "RGB" and meta["protocol"] == "mvla-sim/1"
        for step in range(3):
            reply = client.infer(_request(step, seed=step))
            assert reply["actions"].dtype == np.float32 and reply["actions"].shape == (1, 2)
            expected = local.act_batch({"image": _image(step)[None]}, [0])
            np.testing.assert_array_equal(reply["actions"], expected)
            assert reply["server_timing"]["batch_size"] == 1 and reply["server_timing"]["infer_ms"] >= 0


def test_malformed_requests_get_error_replies_and_the_server_keeps_serving():
    bad = [
        b"\xc1 not msgpack",
        "a text frame",
        packb([1, 2, 3]),
        packb({"prompt": PROMPT, "episode_id": "e", "step": 0}),
        packb(_request(0, image=np.zeros((48, 48, 3), np.float32))),
        packb(_request(-1)),
        packb({**_request(0), "prompt": None}),
        packb(_request(4, episode="never-started")),
        packb({**_request(0), "image": {b"__ndarray__": True, b"data": b"\0" * 8, b"dtype": "|O", b"shape": [1]}}),
        packb({**_request(0), "image": {b"__ndarray__": True, b"data": b"\0" * 5, b"dtype": "|u1", b"shape": [9]}}),
    ]
    with ServerThread(ServeConfig(policy="expert", port=0)) as srv:
        with connect(srv.url, proxy=None) as ws:
            unpackb(ws.recv())
            for msg in bad:
                ws.send(msg)
                reply = ws.recv(timeout=5)
                assert isinstance(reply, str) and reply.startswith("error: ") and "\n" not in reply, reply
            ws.send(packb(_request(0)))  # the expert needs the privileged state: refused before the policy runs
            assert "lacks 'state'" in ws.recv(timeout=5)
            state = _env_state()
            ws.send(packb(_request(0, state=state)))
            assert not isinstance(ws.recv(timeout=5), str)
            ws.send(packb(_request(0, state=state)))  # step 0 again restarts the episode
            ws.send(packb(_request(0, state=state)))  # not increasing
            ws.recv(timeout=5)
            ws.send(packb(_request(1, state=state)))
            assert not isinstance(ws.recv(timeout=5), str)
        policy = load_policy(srv.url)  # a fresh connection is served as usual
        policy.close()


def test_token_is_required_when_set():
    with ServerThread(ServeConfig(policy="random", port=0, token="s3cret")) as srv:
        with pytest.raises(InvalidStatus) as err, connect(srv.url, proxy=None):
            pass
        assert err.value.response.status_code == 401
        with pytest.raises(PolicyLoadError, match="HTTP 401.*--policy-arg token="):
            load_policy(srv.url)
        with pytest.raises(PolicyLoadError, match="HTTP 401"):
            load_policy(srv.url, policy_args={"token": "wrong"})
        policy = load_policy(srv.url, policy_args={"token": "s3cret"})
        policy.reset(PROMPT, 0)
        assert policy.act_batch({"image": _image(0)[None]}, [0]).shape == (1, 2)
        policy.close()
        pytest.importorskip("openpi_client")
        from openpi_client.websocket_client_policy import WebsocketClientPolicy

        assert WebsocketClientPolicy(host="127.0.0.1", port=srv.port, api_key="s3cret").infer(
            _request(0))["actions"].shape == (1, 2)


def test_connection_refused_is_a_fast_one_line_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.perf_counter()
    with pytest.raises(PolicyLoadError, match=f"cannot reach a policy server at 127.0.0.1:{port}") as err:
        load_policy(f"ws://127.0.0.1:{port}")
    assert time.perf_counter() - start < 3.0
    assert "\n" not in str(err.value)


def test_serve_config_checks():
    with pytest.raises(ConfigError, match="--port must be in 0..65535"):
        ServeConfig(policy="expert", port=70000)
    with pytest.raises(ConfigError, match="--max-batch"):
        ServeConfig(policy="expert", max_batch=0)
    with ServerThread(ServeConfig(policy="random", port=0)) as srv:
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{srv.port}"):
            ServerThread(ServeConfig(policy="random", port=srv.port))
    with pytest.raises(PolicyLoadError, match="pass --drive omni"):
        with ServerThread(ServeConfig(policy="random", port=0, drive="omni")) as srv:
            load_policy(srv.url, drive="diff")


def test_requests_from_two_connections_share_a_batch_and_slots_are_freed():
    with ServerThread(ServeConfig(policy="random", port=0, max_wait_ms=300, max_batch=4)) as srv:
        policies = [load_policy(srv.url) for _ in range(2)]
        for p in policies:
            p.reset(PROMPT, 0)
        out = {}

        def act(i):
            out[i] = policies[i].act_batch({"image": _image(i)[None]}, [0])

        threads = [threading.Thread(target=act, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert srv.server.batch_sizes == {2: 1}
        for i, p in enumerate(policies):  # same actions as unbatched, local
            local = RandomPolicy(seed=0)
            local.reset(PROMPT, 0)
            np.testing.assert_array_equal(out[i], local.act_batch({"image": _image(i)[None]}, [0]))
            assert p.stats()["remote"]["server_batch_size_mean"] == 2.0
            p.close()
        deadline = time.time() + 5
        while srv.server._episodes and time.time() < deadline:  # closing is asynchronous on the server side
            time.sleep(0.01)
        assert not srv.server._episodes and sorted(srv.server._free) == [0, 1]


def _outcomes(records):
    return [(r.key, r.success, r.collision, r.wrong_side, r.steps, r.side_taken, r.trajectory) for r in records]


@pytest.mark.parametrize("spec", ["expert", pytest.param("random", marks=pytest.mark.slow)])
def test_eval_through_the_server_matches_in_process(spec, tmp_path):
    local = evaluate(EvalConfig(policy=spec, difficulty="easy", episodes=2, pool=PoolConfig(workers=1), out=None,
                                env=ENV), progress=False)
    with ServerThread(ServeConfig(policy=spec, port=0)) as srv:
        for workers in (1, 2):
            out = tmp_path / f"w{workers}"
            remote = evaluate(EvalConfig(policy=srv.url, difficulty="easy", episodes=2,
                                         pool=PoolConfig(workers=workers), env=ENV, out=out), progress=False)
            assert _outcomes(remote.records) == _outcomes(local.records)
            stats = json.loads((out / "results.json").read_text())["throughput"]["policy"]["remote"]
            assert stats["requests"] == sum(r.steps for r in remote.records)
            assert 0 < stats["latency_ms_mean"] <= stats["latency_ms_p95"]
            assert stats["server"]["policy"] == spec


def test_served_checkpoint_gives_the_same_actions_for_the_same_batches(tiny_checkpoints):
    """The transport is lossless: with the server's batches equal to the caller's, actions are bit-identical."""
    spec, slots = str(tiny_checkpoints["frozen"]), [0, 1, 2]
    local = load_policy(spec)
    with ServerThread(ServeConfig(policy=spec, port=0, max_batch=len(slots), max_wait_ms=10_000)) as srv:
        remote = load_policy(srv.url)
        for policy in (local, remote):
            for s in slots:
                policy.reset(PROMPT if s % 2 else PROMPT.replace("left", "right"), s)
        for step in range(3):
            obs = {"image": np.stack([_image(10 * step + s) for s in slots])}
            np.testing.assert_array_equal(remote.act_batch(obs, slots), local.act_batch(obs, slots))
        assert srv.server.batch_sizes == {len(slots): 3}
        remote.close()


def test_served_checkpoint_matches_in_process(tiny_checkpoints):
    """Bit-identical episodes although the server batches requests differently: inference is batch-invariant."""
    spec = str(tiny_checkpoints["frozen"])
    local = evaluate(EvalConfig(policy=spec, difficulty="easy", episodes=1, pool=PoolConfig(workers=2), out=None,
                                env=ENV), progress=False)
    with ServerThread(ServeConfig(policy=spec, port=0, max_wait_ms=0)) as srv:
        remote = evaluate(EvalConfig(policy=srv.url, difficulty="easy", episodes=1, pool=PoolConfig(workers=2),
                                     out=None, env=ENV),
                          progress=False)
    assert _outcomes(remote.records) == _outcomes(local.records)


FLAKY = '''
from mobile_vla_sim.envs.expert import ExpertPolicy


class Flaky(ExpertPolicy):
    """The expert, until its `limit`-th call breaks (a server whose model fell over)."""

    def __init__(self, limit, **kw):
        super().__init__(**kw)
        self.calls, self.limit = 0, limit

    def act_batch(self, obs, slots):
        self.calls += 1
        if self.calls > self.limit:
            raise RuntimeError("the model fell over")
        return super().act_batch(obs, slots)


def make(drive="diff", device="cpu", limit=10**9):
    return Flaky(limit, drive=drive)
'''


def test_a_policy_lost_mid_run_keeps_finished_episodes_and_the_run_resumes(tmp_path, monkeypatch):
    (tmp_path / "flaky_policy.py").write_text(FLAKY)
    monkeypatch.syspath_prepend(str(tmp_path))
    with socket.socket() as s:  # one port for both servers: the policy URL is part of the eval config
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = EvalConfig(policy=f"ws://127.0.0.1:{port}", difficulty="easy", episodes=3, pool=PoolConfig(workers=1,
                     envs_per_worker=1), env=ENV, out=tmp_path / "out")
    with ServerThread(ServeConfig(policy="flaky_policy:make", policy_args=("limit=25",), port=port)):
        with pytest.raises(Exception, match="finished episodes are saved.*run the same command again") as err:
            evaluate(cfg, progress=False)
    assert "\n" not in str(err.value)
    partial = json.loads((tmp_path / "out" / "results.json").read_text())
    assert partial["interrupted"] and 0 < len(partial["episodes"]) < 6
    with ServerThread(ServeConfig(policy="flaky_policy:make", port=port)):
        done = evaluate(cfg, progress=False)
    assert not done.interrupted and len(done.records) == 6 and all(r.success for r in done.records)
