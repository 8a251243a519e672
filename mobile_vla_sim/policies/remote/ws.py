"""`RemotePolicy`: a policy served over WebSocket (`--policy ws://HOST:PORT`) behind the `Policy` interface."""

from __future__ import annotations

import os
import time
from typing import Sequence
from urllib.parse import urlsplit

import numpy as np

from mobile_vla_sim.envs.actions import LAYOUT_DIMS
from mobile_vla_sim.errors import EvalError, PolicyLoadError, ProtocolError
from mobile_vla_sim.policy import Policy
from mobile_vla_sim.policies.remote.wire import AUTH_HEADER, AUTH_SCHEME, MAX_MESSAGE_BYTES, TOKEN_ENV, packb, unpackb


class RemotePolicy(Policy):
    """One connection to a policy server. `act_batch` sends one request per slot back to back, then reads the
    replies, so the server batches them into one inference; each request's round-trip time is kept for results.

    Slot `s` is the server's episode `str(s)`; `reset` makes its next request step 0, which resets it there.
    """

    def __init__(self, url: str, drive: str = "diff", token: str | None = None, timeout: float = 5.0):
        from websockets.exceptions import InvalidStatus, WebSocketException
        from websockets.sync.client import connect

        self.url = url
        parts = urlsplit(url)
        where = f"{parts.hostname}:{parts.port}"
        token = token or os.environ.get(TOKEN_ENV)
        headers = {AUTH_HEADER: f"{AUTH_SCHEME} {token}"} if token else None
        try:
            # entered by hand: the connection lives as long as the policy (until `close`)
            self._ws = connect(url, open_timeout=timeout, additional_headers=headers, compression=None,
                               max_size=MAX_MESSAGE_BYTES, proxy=None).__enter__()
        except InvalidStatus as err:
            code = err.response.status_code
            fix = (f"pass its token with --policy-arg token=... or ${TOKEN_ENV}" if code == 401
                   else "check that it is a policy server")
            raise PolicyLoadError(f"policy server at {where} refused the connection (HTTP {code}); {fix}") from None
        except (OSError, TimeoutError, WebSocketException) as err:  # refused, unreachable, bad URI or handshake
            raise PolicyLoadError(f"cannot reach a policy server at {where} ({type(err).__name__}: {err}); start "
                                  f"one with `mvla-sim serve --port {parts.port}` or fix --policy") from None
        try:
            self.server_info = unpackb(self._ws.recv(timeout=timeout))
        except (ProtocolError, TimeoutError) as err:
            self._ws.close()
            raise PolicyLoadError(f"{where} sent no policy-server metadata ({err}); is it a policy server?") from None
        if not isinstance(self.server_info, dict):
            self.server_info = {}
        self.drive = self.server_info.get("drive", drive)
        if self.drive not in LAYOUT_DIMS:
            self._ws.close()
            raise PolicyLoadError(f"{where} serves actions of layout {self.drive!r}; expected one of "
                                  f"{', '.join(LAYOUT_DIMS)}")
        self.name = f"remote:{self.server_info.get('policy', where)}"
        self.image_size = self.server_info.get("image_size")
        self.chunk_size = int(self.server_info.get("chunk_size", 1))
        trained = self.server_info.get("trained_env")
        self.trained_env = trained if isinstance(trained, dict) else {}
        self._prompts: dict[int, str] = {}
        self._steps: dict[int, int] = {}
        self._latency_ms: list[float] = []
        self._server_ms: list[float] = []
        self._server_batch: list[int] = []

    def reset(self, instruction: str, slot: int = 0) -> None:
        self._prompts[slot] = instruction
        self._steps[slot] = 0

    def act_batch(self, obs: dict[str, np.ndarray], slots: Sequence[int]) -> np.ndarray:
        """(B, dims), or (B, K, dims) when the server replies with action chunks of K > 1."""
        from websockets.exceptions import ConnectionClosed

        sent: dict[str, float] = {}
        replies: dict[str, np.ndarray] = {}
        try:
            for i, slot in enumerate(slots):
                msg = {k: np.asarray(v[i]) for k, v in obs.items()}
                msg.update(prompt=self._prompts[slot], episode_id=str(slot), step=self._steps[slot])
                sent[str(slot)] = time.perf_counter()
                self._ws.send(packb(msg))
            for _ in slots:
                reply = self._ws.recv()
                now = time.perf_counter()
                if isinstance(reply, str):
                    raise EvalError(f"policy server at {self.url} replied {reply!r}")
                reply = unpackb(reply)
                episode = str(reply.get("episode_id"))
                self._latency_ms.append(1000.0 * (now - sent[episode]))
                timing = reply.get("server_timing", {})
                self._server_ms.append(float(timing.get("infer_ms", np.nan)))
                self._server_batch.append(int(timing.get("batch_size", 0)))
                replies[episode] = np.asarray(reply["actions"], dtype=np.float32)
        except ConnectionClosed as err:
            raise EvalError(f"policy server at {self.url} closed the connection ({err}); restart it and re-run") \
                from None
        except (KeyError, AttributeError, ProtocolError) as err:
            raise EvalError(f"policy server at {self.url} sent a malformed reply ({err})") from None
        for slot in slots:
            self._steps[slot] += 1
        actions = np.stack([replies[str(s)] for s in slots])
        return actions[:, 0] if actions.shape[1] == 1 else actions

    def stats(self) -> dict:
        """Per-request round-trip latency (client side) and the server's batch inference time and size."""
        lat = np.asarray(self._latency_ms)
        return {"remote": {
            "url": self.url, "requests": int(lat.size),
            "latency_ms_mean": float(lat.mean()) if lat.size else None,
            "latency_ms_p95": float(np.percentile(lat, 95)) if lat.size else None,
            "server_infer_ms_mean": float(np.nanmean(self._server_ms)) if lat.size else None,
            "server_batch_size_mean": float(np.mean(self._server_batch)) if lat.size else None,
            "server": self.server_info}}

    def close(self) -> None:
        self._ws.close()
