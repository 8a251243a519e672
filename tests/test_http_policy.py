"""`--policy http://HOST:PORT`: the real project's inference API, here served by a small stdlib server written from
its schema (`/health`, `/reset`, `/predict` with `X-API-Key`, the zero action on the first frame after a reset) over
an in-process policy. Served and in-process runs give the same episodes; every failure is one line, and finished
episodes are kept."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest
from PIL import Image

from mobile_vla_sim.envs.config import EnvConfig
from mobile_vla_sim.envs.engine import PoolConfig
from mobile_vla_sim.errors import EvalError, PolicyLoadError
from mobile_vla_sim.eval.run import EvalConfig, evaluate
from mobile_vla_sim.policy import Policy
from mobile_vla_sim.policies.registry import load_policy

KEY = "test-key"
ENV = EnvConfig(drive="omni", image_size=48, max_steps=25)
LEFT = "Navigate around obstacles and reach the front of the beverage bottle on the left"


class ImageSteered(Policy):
    """Reads only the frame and the instruction, as the real server's model: forward by the frame's brightness,
    sideways by the brightness difference of its halves and the instruction's side; zeros on an episode's first
    frame, as the real server answers the first /predict after /reset."""

    drive, name, inputs = "omni", "image-steered", ("image",)

    def __init__(self):
        self.side: dict[int, float] = {}
        self.steps: dict[int, int] = {}

    def reset(self, instruction: str, slot: int = 0) -> None:
        self.side[slot], self.steps[slot] = (1.0 if "left" in instruction else -1.0), 0

    def act_batch(self, obs, slots):
        out = np.zeros((len(slots), 3), np.float32)
        for i, slot in enumerate(slots):
            image = np.asarray(obs["image"][i], np.float32) / np.float32(255)
            half = image.shape[1] // 2
            if self.steps[slot]:
                out[i, 0] = np.float32(0.2) + image.mean()
                out[i, 1] = np.float32(self.side[slot]) * (image[:, :half].mean() - image[:, half:].mean() + 0.3)
            self.steps[slot] += 1
        return out


def scripted(drive: str = "omni", device: str = "cpu") -> ImageSteered:
    """The in-process twin of the served policy (`--policy test_http_policy:scripted`)."""
    return ImageSteered()


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def _send(self, code: int, payload) -> None:
        body = json.dumps(payload).encode() if not isinstance(payload, bytes) else payload
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        fake = self.server.fake
        time.sleep(fake.delay)
        if self.path != "/health":
            return self._send(404, {"detail": "Not Found"})
        self._send(200, fake.health)

    def do_POST(self) -> None:
        fake = self.server.fake
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if self.headers.get("X-API-Key") != fake.key:
            return self._send(403, {"detail": "Invalid API Key"})
        if self.path == "/reset":
            fake.resets += 1
            fake.pending = True
            return self._send(200, {"status": "success", "message": "History, buffer, and logging session reset"})
        fake.predicts += 1
        if fake.lose_after is not None and fake.predicts > fake.lose_after:
            self.close_connection = True  # the server went away: no answer at all
            return None
        if fake.answer is not None:
            return self._send(200, fake.answer)
        image = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["image"]))).convert("RGB"))
        if fake.pending:  # the first frame of an episode: the instruction arrives with it
            fake.policy.reset(body["instruction"], 0)
            fake.pending = False
        action = fake.policy.act_batch({"image": image[None]}, [0])[0]
        values = [float(v) for v in (action if not action.any() else action[:2])]
        self._send(200, {"action": values, "latency_ms": 12.5, "model_name": "scripted", "strategy": "receding_horizon",
                         "source": "inferred", "buffer_status": {}})


class FakeInferenceServer:
    """The real project's inference API over `ImageSteered`, on 127.0.0.1 (`port` 0: a free one)."""

    def __init__(self, port: int = 0, lose_after: int | None = None, answer=None, delay: float = 0.0,
                 health=None):
        self.policy, self.key, self.pending = ImageSteered(), KEY, True
        self.resets = self.predicts = 0
        self.lose_after, self.answer, self.delay = lose_after, answer, delay
        self.health = health or {"status": "healthy", "model_loaded": True, "model_name": "scripted"}
        self.httpd = HTTPServer(("127.0.0.1", port), _Handler)
        self.httpd.fake = self
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FakeInferenceServer:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _eval(policy: str, out, workers: int = 1, args=(f"api_key={KEY}",)):
    return evaluate(EvalConfig(policy=policy, policy_args=args if policy.startswith("http") else (),
                               difficulty="easy", episodes=1, env=ENV, out=out,
                               pool=PoolConfig(workers=workers, envs_per_worker=4)), progress=False)


def test_served_policy_gives_the_same_episodes_as_in_process(tmp_path):
    local = _eval("test_http_policy:scripted", tmp_path / "local")
    with FakeInferenceServer() as server:
        served = _eval(server.url, tmp_path / "served", workers=2)  # the engine runs one episode at a time anyway
    assert (tmp_path / "served" / "episodes.csv").read_bytes() == (tmp_path / "local" / "episodes.csv").read_bytes()
    assert [r.steps for r in served.records] == [r.steps for r in local.records] and local.records[0].steps > 5
    assert server.resets == len(served.records) + 1  # one per episode, and one at connection to check the key
    stats = json.loads((tmp_path / "served" / "results.json").read_text())["throughput"]["policy"]["remote"]
    assert stats["requests"] == server.predicts == sum(r.steps for r in served.records)
    assert 0 < stats["latency_ms_mean"] <= stats["latency_ms_p95"] and stats["server_latency_ms_mean"] == 12.5
    assert stats["server"]["model_name"] == "scripted"


def test_failures_at_connection_are_fast_one_line_errors(tmp_path):
    with FakeInferenceServer() as server:
        url = server.url
        for args, message in (({"api_key": "wrong"}, r"refused the API key \(HTTP 403 on /reset: Invalid API Key\)"),
                              ({}, "refused the API key.*--policy-arg api_key="),
                              ({"api_key": KEY, "token": "x"}, "takes --policy-arg api_key=.*not token"),
                              ({"api_key": KEY, "image_format": "gif"}, "image_format=gif must be one of png, jpeg")):
            with pytest.raises(PolicyLoadError, match=message) as err:
                load_policy(url, drive="omni", policy_args=args)
            assert "\n" not in str(err.value)
        with pytest.raises(PolicyLoadError, match="emits 'omni' actions.*--drive omni"):
            load_policy(url, drive="diff", policy_args={"api_key": KEY})
        policy = load_policy(url, drive="omni", policy_args={"api_key": KEY, "image_format": "jpeg"})
        policy.reset(LEFT, slot=0)
        assert policy.act_batch({"image": np.zeros((1, 48, 48, 3), np.uint8)}, [0]).shape == (1, 3)
        with pytest.raises(EvalError, match="one episode at a time.*--workers 1 --envs-per-worker 1"):
            policy.reset(LEFT, slot=1)
    def fails_fast(url: str, message: str, **args) -> None:
        start = time.perf_counter()
        with pytest.raises(PolicyLoadError, match=message):
            load_policy(url, drive="omni", policy_args={"api_key": KEY, **args})
        assert time.perf_counter() - start < 1.5  # no retries

    fails_fast(url, r"failed \(/health failed \(ConnectionRefusedError.*start it")  # the server is gone
    with FakeInferenceServer(delay=1.0) as slow:
        fails_fast(slow.url, "no answer to /health within 0.2 s", timeout=0.2)
    with FakeInferenceServer(health={"detail": "Not Found"}) as other:
        fails_fast(other.url, "malformed answer.*not status healthy")


def test_a_lost_server_or_a_malformed_answer_keeps_finished_episodes(tmp_path):
    out = tmp_path / "out"
    full = _eval("test_http_policy:scripted", tmp_path / "local")
    with FakeInferenceServer(lose_after=full.records[0].steps + 2) as lost:  # dies during the second episode
        with pytest.raises(EvalError, match=r"failed \(/predict failed.*finished episodes are saved") as err:
            _eval(lost.url, out)
    assert "\n" not in str(err.value)
    partial = json.loads((out / "results.json").read_text())
    assert partial["interrupted"] and len(partial["episodes"]) == 1
    with FakeInferenceServer(port=lost.port) as back:  # the same URL: the run resumes
        done = _eval(back.url, out)
    assert not done.interrupted and len(done.records) == 2 and back.resets == 2
    assert (out / "episodes.csv").read_bytes() == (tmp_path / "local" / "episodes.csv").read_bytes()
    for answer, message in (({"action": ["x", 1]}, "malformed /predict answer"), ({"latency_ms": 3}, "malformed"),
                            ({"action": [1.0, float("nan")]}, "malformed")):
        with FakeInferenceServer(answer=answer) as bad:
            with pytest.raises(EvalError, match=message) as err:
                _eval(bad.url, tmp_path / f"bad{bad.port}")
        assert "\n" not in str(err.value)
