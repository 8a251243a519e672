"""`VlaEvalPolicy`: a model server of allenai's vla-eval (0.8) driving this package's env behind the `Policy` interface.

Use it as a plugin policy: `mvla-sim eval --policy mobile_vla_sim.policies.remote.vlaeval:client --policy-arg
url=ws://127.0.0.1:8000`. Every concurrent episode (slot) gets its own vla-eval session (one WebSocket connection,
as vla-eval's own runner opens one per episode stream); `act_batch` sends the slots' observations at once so a
batching server (`max_batch_size > 1`) infers them together. The connection code is vla-eval's own `Connection`
(HELLO, EPISODE_START/END, OBSERVATION -> ACTION in msgpack), so the wire format is the package's, not a copy.

Observations follow vla-eval's convention: `{"images": {camera: HxWx3 uint8 RGB}, "task_description": instruction}`;
the server must answer `{"actions": ...}` in the env's layout (diff: linear_x, angular_z; omni: linear_x, linear_y,
angular_z), one action or a chunk (K, dims).
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

from mobile_vla_sim.envs.actions import LAYOUT_DIMS
from mobile_vla_sim.errors import EvalError, PolicyLoadError
from mobile_vla_sim.policy import Policy

#: The camera name observations carry (vla-eval benchmarks name theirs; a server looks images up by it).
CAMERA = "front"


class VlaEvalPolicy(Policy):
    """One vla-eval session per slot against the model server at `url`; round-trip latencies kept for results."""

    def __init__(self, url: str, drive: str = "diff", camera: str = CAMERA, timeout: float = 30.0):
        try:
            from anyio.from_thread import start_blocking_portal
            from vla_eval.connection import Connection
        except ImportError:
            raise PolicyLoadError("the vla-eval client needs the vla-eval package: pip install "
                                  "'mobile-vla-sim[vlaeval]'") from None
        if drive not in LAYOUT_DIMS:
            raise PolicyLoadError(f"unknown drive {drive!r}: use one of {', '.join(LAYOUT_DIMS)}")
        self.url, self.drive, self.camera, self.timeout = url, drive, camera, timeout
        self.name = f"vla-eval:{url}"
        self._connection_cls = Connection
        self._portal_cm = start_blocking_portal()  # vla-eval's client is async: it runs on this portal's loop
        self._portal = self._portal_cm.__enter__()
        self._sessions: dict[int, Any] = {}
        self._instructions: dict[int, str] = {}
        self._latency_ms: list[float] = []
        self.server_info = self._session(0).server_info  # connect now: a wrong URL fails at load, not mid-eval

    def _session(self, slot: int) -> Any:
        if slot not in self._sessions:
            conn = self._connection_cls(self.url, timeout=self.timeout, max_retries=1)
            try:
                self._portal.call(conn.connect)
            except (ConnectionError, OSError, TimeoutError, RuntimeError) as err:
                self.close()
                raise PolicyLoadError(f"cannot reach a vla-eval model server at {self.url} ({err}); start one "
                                      "(e.g. `vla-eval serve ...`) or fix --policy-arg url=...") from None
            self._sessions[slot] = conn
        return self._sessions[slot]

    def reset(self, instruction: str, slot: int = 0) -> None:
        conn = self._session(slot)
        if slot in self._instructions:
            self._portal.call(conn.end_episode, {})
        self._instructions[slot] = instruction
        self._portal.call(conn.start_episode, {"task": {"name": instruction, "task_description": instruction}})

    def act_batch(self, obs: dict[str, np.ndarray], slots: Sequence[int]) -> np.ndarray:
        """(B, dims), or (B, K, dims) when the server answers with action chunks."""
        requests = [(self._sessions[s], {"images": {self.camera: np.ascontiguousarray(obs["image"][i])},
                                         "task_description": self._instructions[s]}) for i, s in enumerate(slots)]
        try:
            replies = self._portal.call(self._act_all, requests)
        except (RuntimeError, TimeoutError, ConnectionError) as err:
            raise EvalError(f"vla-eval model server at {self.url} failed: {str(err).splitlines()[0]}") from None
        actions = []
        for reply in replies:
            if not isinstance(reply, dict) or "actions" not in reply:
                raise EvalError(f"vla-eval model server at {self.url} answered without 'actions' "
                                f"({type(reply).__name__}); it must return {{'actions': array}}")
            actions.append(np.asarray(reply["actions"], dtype=np.float32))
        dims = len(LAYOUT_DIMS[self.drive])
        if any(a.shape[-1] != dims or a.ndim not in (1, 2) for a in actions):
            raise EvalError(f"vla-eval model server at {self.url} sent actions of shape {actions[0].shape}; the env "
                            f"(drive {self.drive}) needs {dims} entries per action (or a chunk (K, {dims}))")
        return np.stack(actions)

    async def _act_all(self, requests: list[tuple[Any, dict]]) -> list[Any]:
        import anyio

        replies: list[Any] = [None] * len(requests)

        async def one(i: int, conn: Any, payload: dict) -> None:
            start = time.perf_counter()
            replies[i] = await conn.act(payload)
            self._latency_ms.append(1000.0 * (time.perf_counter() - start))

        async with anyio.create_task_group() as tg:
            for i, (conn, payload) in enumerate(requests):
                tg.start_soon(one, i, conn, payload)
        return replies

    def stats(self) -> dict:
        lat = np.asarray(self._latency_ms)
        return {"remote": {"url": self.url, "protocol": "vla-eval", "requests": int(lat.size),
                           "latency_ms_mean": float(lat.mean()) if lat.size else None,
                           "latency_ms_p95": float(np.percentile(lat, 95)) if lat.size else None,
                           "server": {k: v for k, v in self.server_info.items() if isinstance(v, (str, int, float))}}}

    def close(self) -> None:
        if self._portal_cm is None:
            return
        for slot, conn in self._sessions.items():
            try:
                if slot in self._instructions:
                    self._portal.call(conn.end_episode, {})
                self._portal.call(conn.close)
            except Exception:  # closing a dead connection: nothing left to release
                pass
        self._sessions.clear()
        self._portal_cm.__exit__(None, None, None)
        self._portal_cm = None


def client(drive: str = "diff", device: str = "cpu", url: str = "ws://127.0.0.1:8000", camera: str = CAMERA,
           timeout: float = 30.0) -> VlaEvalPolicy:
    """Plugin factory for `--policy mobile_vla_sim.policies.remote.vlaeval:client --policy-arg url=ws://HOST:PORT`
    (`device` is the server's business)."""
    return VlaEvalPolicy(url, drive=drive, camera=camera, timeout=timeout)
