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


def _number(value: object) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool)


def _count(value: object, allow_none: bool = False, allow_zero: bool = False) -> bool:
    """A whole number >= 1 (>= 0 with `allow_zero`), or None with `allow_none`: metadata a client may trust."""
    if value is None:
        return allow_none
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= (0 if allow_zero else 1)


class RemotePolicy(Policy):
    """One connection to a policy server. `act_batch` sends one request per slot back to back, then reads the
    replies, so the server batches them into one inference; each request's round-trip time is kept for results.

    Slot `s` is the server's episode `str(s)`; `reset` makes its next request step 0, which resets it there.
    """

    def __init__(self, url: str, drive: str = "diff", token: str | None = None, timeout: float = 5.0,
                 reply_timeout: float = 120.0):
        from websockets.exceptions import InvalidStatus, WebSocketException
        from websockets.sync.client import connect

        self.url = url
        for name, value in (("timeout", timeout), ("reply_timeout", reply_timeout)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 86400:
                raise PolicyLoadError(f"--policy-arg {name}={value!r}: give seconds, a number in (0, 86400)")
        #: Longest wait for a reply: a stalled server is reported instead of hanging the evaluation.
        self.reply_timeout = float(reply_timeout)
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:  # not a number, or out of 0..65535
            port = -1
        if not parts.hostname or port is None or not 0 < port < 65536:
            raise PolicyLoadError(f"--policy {url} is not ws://HOST:PORT with a port in 1..65535; e.g. "
                                  "ws://127.0.0.1:8000")
        where = f"{parts.hostname}:{port}"
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
        if not isinstance(self.drive, str) or self.drive not in LAYOUT_DIMS:
            self._ws.close()
            raise PolicyLoadError(f"{where} serves actions of layout {self.drive!r}; expected one of "
                                  f"{', '.join(LAYOUT_DIMS)}")
        self.name = f"remote:{self.server_info.get('policy', where)}"
        self.image_size = self.server_info.get("image_size")
        self.chunk_size = self.server_info.get("chunk_size", 1)
        if not _count(self.image_size, allow_none=True) or not _count(self.chunk_size):
            self._ws.close()
            raise PolicyLoadError(f"{where} sent malformed metadata (image_size {self.image_size!r}, chunk_size "
                                  f"{self.chunk_size!r}); is it a mobile-vla-sim policy server?")
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
        dims = len(LAYOUT_DIMS[self.drive])
        try:
            for i, slot in enumerate(slots):
                msg = {k: np.asarray(v[i]) for k, v in obs.items()}
                msg.update(prompt=self._prompts[slot], episode_id=str(slot), step=self._steps[slot])
                sent[str(slot)] = time.perf_counter()
                self._ws.send(packb(msg))
            for _ in slots:
                reply = self._ws.recv(timeout=self.reply_timeout)
                now = time.perf_counter()
                if isinstance(reply, str):
                    raise EvalError(f"policy server at {self.url} replied {reply[:300]!r}")
                reply = unpackb(reply)
                episode = str(reply.get("episode_id"))
                self._latency_ms.append(1000.0 * (now - sent[episode]))
                timing = reply.get("server_timing", {})
                infer_ms, batch = timing.get("infer_ms", np.nan), timing.get("batch_size", 0)
                action = np.asarray(reply["actions"], dtype=np.float32)
                if action.ndim == 1:
                    action = action[None]
                if action.ndim != 2 or action.shape[0] < 1 or action.shape[1] != dims or \
                        not _number(infer_ms) or not _count(batch, allow_zero=True):
                    raise ValueError(f"actions {action.shape} for a {self.drive} policy of {dims} values, timing "
                                     f"{timing!r}")
                self._server_ms.append(float(infer_ms))
                self._server_batch.append(int(batch))
                replies[episode] = action
        except ConnectionClosed as err:
            raise EvalError(f"policy server at {self.url} closed the connection ({err}); restart it and re-run") \
                from None
        except TimeoutError:
            self._ws.close()  # late replies would answer the next requests
            raise EvalError(f"policy server at {self.url} sent no reply within {self.reply_timeout:g} s (stalled or "
                            "overloaded); check it, or allow longer with --policy-arg reply_timeout=SECONDS") from None
        except (KeyError, AttributeError, TypeError, ValueError, ProtocolError) as err:
            raise EvalError(f"policy server at {self.url} sent a malformed reply ({str(err)[:200]}); is it a "
                            "mobile-vla-sim policy server of this version?") from None
        for slot in slots:
            self._steps[slot] += 1
        if len({a.shape for a in replies.values()}) > 1:
            raise EvalError(f"policy server at {self.url} replied action chunks of different lengths in one batch")
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
