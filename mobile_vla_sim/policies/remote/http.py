"""`HTTPPolicy`: the real project's FastAPI inference server (`--policy http://HOST:PORT`) as a `Policy`.

Their API (port 8000 by default): `GET /health` (no key) answers `{"status": "healthy", "model_loaded", "model_name",
...}`; `POST /reset` starts an episode (the server keeps one episode's frame history and LSTM state); `POST /predict`
takes `{"image": base64 PNG or JPEG of the RGB frame, "instruction": text}` and answers `{"action": [linear_x,
linear_y], "latency_ms", "model_name", "strategy", "source", "buffer_status"}` (three numbers for the zero action the
first frame after a reset gets). Both POSTs need the header `X-API-Key` (a wrong key: HTTP 403). The server does its
own preprocessing (resize to 224, its prompt template, smoothing, clipping), so frames go as the camera gives them.

Because the server holds one episode's history, a server runs one episode at a time: `max_slots = 1`, which the
episode engine honours. Only the standard library talks HTTP (a fresh connection per request, no proxies, no
retries: a request that timed out may have reached the server, and a resent frame would enter its history twice).
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import socket
import time
import urllib.error
import urllib.request
from typing import Any, Sequence
from urllib.parse import urlsplit

import numpy as np

from mobile_vla_sim.envs.actions import from_action3
from mobile_vla_sim.errors import EvalError, PolicyLoadError
from mobile_vla_sim.policy import Policy

#: The header their server reads the key from, and the variable their server reads its own key from.
KEY_HEADER, KEY_ENV = "X-API-Key", "VLA_API_KEY"
IMAGE_FORMATS = ("png", "jpeg")
#: What `--policy-arg` may set for an http:// policy.
ARGS = ("api_key", "timeout", "image_format")


class ServerError(Exception):
    """One failed exchange with the server: `status` is the HTTP status (None: no answer), `text` a one-line reason."""

    def __init__(self, status: int | None, text: str):
        super().__init__(text)
        self.status, self.text = status, text


class HTTPPolicy(Policy):
    """One inference server; episodes run one at a time (`max_slots`), each started by `POST /reset`.

    Every `/predict` round trip is timed for `stats()` (client side), next to the server's own `latency_ms`.
    """

    drive = "omni"  # the real base is holonomic: (linear_x, linear_y)
    max_slots = 1

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 10.0, image_format: str = "png"):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise PolicyLoadError(f"--policy {url}: not an http://HOST:PORT URL")
        if image_format not in IMAGE_FORMATS:
            raise PolicyLoadError(f"--policy-arg image_format={image_format} must be one of {', '.join(IMAGE_FORMATS)}")
        if not (isinstance(timeout, (int, float)) and 0 < timeout <= 600):
            raise PolicyLoadError(f"--policy-arg timeout={timeout} must be seconds in (0, 600]")
        self.url, self.where = url.rstrip("/"), parts.netloc
        self.api_key = api_key or os.environ.get(KEY_ENV)
        self.timeout, self.image_format = float(timeout), image_format
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxy for a robot's LAN
        try:
            health = self._call("GET", "/health")
            if not isinstance(health, dict) or health.get("status") != "healthy":
                raise ServerError(200, f"/health answered {str(health)[:80]!r}, not status healthy")
            self._call("POST", "/reset")  # checks the key before any episode runs
        except ServerError as err:
            raise PolicyLoadError(self._explain(err, "start it or fix --policy") + "; nothing was evaluated") from None
        self.server_info = health  # the /health answer, recorded in results.json
        self.name = f"http:{health.get('model_name') or self.where}"
        self._slot: int | None = None
        self._instruction = ""
        self._latency_ms: list[float] = []
        self._server_ms: list[float] = []

    @classmethod
    def from_args(cls, url: str, args: dict[str, Any]) -> HTTPPolicy:
        """The policy for `url` from `--policy-arg` values; other keys are a typo worth reporting."""
        unknown = sorted(set(args) - set(ARGS))
        if unknown:
            raise PolicyLoadError(f"{url} takes --policy-arg {', '.join(a + '=...' for a in ARGS)} only, not "
                                  f"{', '.join(unknown)}")
        return cls(url, **args)

    # --- the Policy interface ----------------------------------------------------------------------------------
    def reset(self, instruction: str, slot: int = 0) -> None:
        if self._slot is not None and slot != self._slot:
            raise EvalError(f"the inference server at {self.where} holds one episode at a time, but episodes were "
                            f"started in slots {self._slot} and {slot}; run it with --workers 1 --envs-per-worker 1")
        self._slot, self._instruction = slot, instruction
        self._exchange("POST", "/reset")

    def act_batch(self, obs: dict[str, np.ndarray], slots: Sequence[int]) -> np.ndarray:
        if list(slots) != [self._slot]:
            raise EvalError(f"the inference server at {self.where} holds one episode at a time (slot {self._slot}); "
                            f"asked for slots {list(slots)}: run it with --workers 1 --envs-per-worker 1")
        image = np.asarray(obs["image"])[0]
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
            raise EvalError(f"the inference server takes uint8 RGB frames, got {image.dtype} {image.shape}; leave the "
                            "deployment's normalize at policy")
        body = {"image": self._encode(image), "instruction": self._instruction}
        start = time.perf_counter()
        reply = self._exchange("POST", "/predict", body)
        self._latency_ms.append(1000.0 * (time.perf_counter() - start))
        action = reply.get("action") if isinstance(reply, dict) else None
        if not (isinstance(action, list) and len(action) in (2, 3)
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in action)):
            raise EvalError(f"the inference server at {self.where} sent a malformed /predict answer (action "
                            f"{str(action)[:60]!r}; expected 2 or 3 finite numbers)")
        server_ms = reply.get("latency_ms")
        self._server_ms.append(float(server_ms) if isinstance(server_ms, (int, float)) else math.nan)
        a3 = np.zeros((1, 3), np.float32)
        a3[0, :len(action)] = action
        return from_action3(a3, self.drive)

    def stats(self) -> dict:
        """Round-trip latency of every /predict (client side) and the server's own inference latency."""
        lat, server = np.asarray(self._latency_ms), np.asarray(self._server_ms)
        known = server[np.isfinite(server)]
        return {"remote": {
            "url": self.url, "requests": int(lat.size),
            "latency_ms_mean": float(lat.mean()) if lat.size else None,
            "latency_ms_p95": float(np.percentile(lat, 95)) if lat.size else None,
            "server_latency_ms_mean": float(known.mean()) if known.size else None,
            "server": self.server_info}}

    # --- HTTP ----------------------------------------------------------------------------------------------------
    def _encode(self, image: np.ndarray) -> str:
        from PIL import Image

        buffer = io.BytesIO()
        if self.image_format == "png":
            Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
        else:
            Image.fromarray(image).save(buffer, format="JPEG", quality=95)
        return base64.b64encode(buffer.getvalue()).decode("ascii")

    def _exchange(self, method: str, path: str, body: dict | None = None) -> Any:
        """`_call` during a run: a failure becomes a one-line `EvalError` (the engine keeps finished episodes)."""
        try:
            return self._call(method, path, body)
        except ServerError as err:
            raise EvalError(self._explain(err, "restart it and run the same command again")) from None

    def _call(self, method: str, path: str, body: dict | None = None) -> Any:
        """One request, JSON in and out; `ServerError` for anything but a 2xx JSON answer in time."""
        data = None if method == "GET" else json.dumps(body or {}).encode()
        headers = {"Content-Type": "application/json", **({KEY_HEADER: self.api_key} if self.api_key else {})}
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as err:
            raise ServerError(err.code, f"HTTP {err.code} on {path}: {_detail(err)}") from None
        except (TimeoutError, socket.timeout):
            raise ServerError(None, f"no answer to {path} within {self.timeout:g} s") from None
        except urllib.error.URLError as err:
            reason = err.reason
            if isinstance(reason, (TimeoutError, socket.timeout)):
                raise ServerError(None, f"no answer to {path} within {self.timeout:g} s") from None
            raise ServerError(None, f"{path} failed ({type(reason).__name__}: {reason})") from None
        except (OSError, ValueError) as err:  # the connection dropped mid-answer (RemoteDisconnected, reset...)
            raise ServerError(None, f"{path} failed ({type(err).__name__}: {err})") from None
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ServerError(200, f"{path} answered {raw[:60]!r}, not JSON") from None

    def _explain(self, err: ServerError, otherwise: str) -> str:
        """One line: what went wrong with the server and how to fix it."""
        if err.status in (401, 403):
            return (f"the inference server at {self.where} refused the API key ({err.text}); pass its key with "
                    f"--policy-arg api_key=... or ${KEY_ENV}")
        if err.status is not None and err.status < 300:
            return f"the inference server at {self.where} sent a malformed answer ({err.text}); is it their server?"
        return f"the inference server at {self.where} failed ({err.text}); {otherwise}"


def _detail(err: urllib.error.HTTPError) -> str:
    """FastAPI's `{"detail": ...}` of an error answer, else the start of its body."""
    try:
        body = err.read()
        detail = json.loads(body).get("detail", body)
    except (OSError, ValueError, AttributeError):
        detail = err.reason
    return " ".join(str(detail).split())[:120]
