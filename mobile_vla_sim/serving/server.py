"""`serve(ServeConfig)`: any `Policy` behind a WebSocket, batching concurrent requests from every connection.

One asyncio loop reads all connections; requests go to one queue, and a batcher takes up to `max_batch` of them
(waiting at most `max_wait_ms` after the first) into a single `act_batch` call, run in a worker thread so the
loop keeps reading meanwhile. Each (connection, episode_id) owns a policy slot, freed when its connection
closes (or, past `max_episodes_per_connection`, when it is the connection's least recently used episode).
Replies go back in request order on each connection.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import os
import threading
import time
from collections import Counter, OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http import HTTPStatus
from typing import Callable

import numpy as np

from mobile_vla_sim.config import check_knobs, knob
from mobile_vla_sim.envs.actions import LAYOUT_DIMS
from mobile_vla_sim.envs.tasks import DEFAULT_FAMILY
from mobile_vla_sim.errors import ConfigError, ProtocolError
from mobile_vla_sim.policy import Policy
from mobile_vla_sim.policies.remote.wire import (AUTH_HEADER, AUTH_SCHEME, MAX_MESSAGE_BYTES, TOKEN_ENV, Request,
                                             packb, parse_request, server_metadata, unpackb)

#: Requests of one connection held at once (read, not yet answered); past it the server reads no more from that
#: connection until it has answered, so a client that only sends cannot grow the server's memory.
MAX_PENDING_PER_CONNECTION = 64


@dataclass
class ServeConfig:
    """What to serve and how; the server binds 127.0.0.1 unless told otherwise."""

    policy: str = knob(help="policy to serve: expert, random, ..., PATH.ckpt, package.module:factory")
    policy_args: tuple[str, ...] = knob((), "KEY=VALUE for a plugin factory; repeat it", flag="--policy-arg",
                                        multiple=True, secrets=True)
    host: str = knob("127.0.0.1", "interface to listen on (0.0.0.0: every interface; set a token then)")
    port: int = knob(8000, "TCP port (0: any free port)", min=0, max=65535)
    drive: str = knob("diff", "action layout served", choices=tuple(LAYOUT_DIMS))
    task_family: str = knob(DEFAULT_FAMILY, "task family of the scripted baselines served (expert, always-...)")
    device: str = knob("cpu", "torch device of the policy")
    seed: int = knob(0, "seed of stochastic baselines", min=0)
    max_batch: int = knob(16, "most requests in one act_batch call", min=1)
    max_wait_ms: float = knob(2.0, "longest wait for more requests after the first one of a batch (ms)", min=0.0)
    token: str | None = knob(None, f"clients must send 'Authorization: Api-Key TOKEN' (default: ${TOKEN_ENV}; none: "
                             "no check)")
    max_episodes_per_connection: int = knob(256, "live episodes kept per connection; the least recently used is "
                                            "dropped", min=1)

    def __post_init__(self):
        self.policy_args = tuple(self.policy_args)
        check_knobs(self)


@dataclass
class _Pending:
    """One admitted request waiting for its batch."""

    conn: int
    req: Request
    slot: int
    future: asyncio.Future
    arrived: float


class PolicyServer:
    """The server state: the policy, its slots, the request queue; `run` serves until `stop` is set."""

    def __init__(self, policy: Policy, cfg: ServeConfig):
        self.policy, self.cfg = policy, cfg
        self.token = cfg.token or os.environ.get(TOKEN_ENV) or None
        self.metadata = server_metadata(policy, cfg.max_batch)
        self.batch_sizes: Counter[int] = Counter()  # how many batches of each size ran, for benchmarks
        self._episodes: dict[int, OrderedDict[str, int]] = {}  # connection -> episode_id -> slot (LRU order)
        self._last_step: dict[tuple[int, str], int] = {}
        self._free: list[int] = []
        self._n_slots = 0
        self._conn_ids = itertools.count()
        self._carry: list[_Pending] = []
        self._queue: asyncio.Queue[_Pending] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="policy")

    async def run(self, started: Callable[[int], None] | None = None, stop: asyncio.Event | None = None) -> None:
        """Serve until `stop` is set (or forever); `started(port)` is called once the socket listens."""
        from websockets.asyncio.server import serve

        self._queue = asyncio.Queue()
        batcher = asyncio.create_task(self._batch_loop())
        try:
            try:
                server = await serve(self._handle, self.cfg.host, self.cfg.port, compression=None,
                                     max_size=MAX_MESSAGE_BYTES, process_request=self._check_request)
            except OSError as err:
                raise ConfigError(f"cannot listen on {self.cfg.host}:{self.cfg.port} ({err.strerror or err}); "
                                  "pick another --port or --host") from None
            try:
                if started is not None:
                    started(server.sockets[0].getsockname()[1])
                await (stop.wait() if stop is not None else asyncio.get_running_loop().create_future())
            finally:
                server.close()
                await server.wait_closed()
        finally:
            batcher.cancel()
            self._executor.shutdown(wait=True)

    def _check_request(self, connection, request):
        """Health check on /healthz; the token, when set, before the WebSocket handshake."""
        if request.path == "/healthz":
            return connection.respond(HTTPStatus.OK, "OK\n")
        if self.token is not None:
            got = request.headers.get(AUTH_HEADER, "")
            if not hmac.compare_digest(got.encode(), f"{AUTH_SCHEME} {self.token}".encode()):
                return connection.respond(HTTPStatus.UNAUTHORIZED,
                                          f"missing or wrong token: send '{AUTH_HEADER}: {AUTH_SCHEME} TOKEN'\n")
        return None

    async def _handle(self, ws) -> None:
        from websockets.exceptions import ConnectionClosed

        conn = next(self._conn_ids)
        self._episodes[conn] = OrderedDict()
        replies: asyncio.Queue[asyncio.Future | None] = asyncio.Queue()
        writer = asyncio.create_task(self._write(ws, replies))
        loop = asyncio.get_running_loop()
        pending = asyncio.Semaphore(MAX_PENDING_PER_CONNECTION)
        try:
            await ws.send(packb(self.metadata))
            async for message in ws:
                await pending.acquire()  # a client that sends without reading replies waits here, bounded
                future = loop.create_future()
                future.add_done_callback(lambda _: pending.release())
                replies.put_nowait(future)
                try:
                    req = parse_request(unpackb(message), self.policy.image_size, self.policy.inputs)
                    self._queue.put_nowait(_Pending(conn, req, self._admit(conn, req), future, time.perf_counter()))
                except ProtocolError as err:
                    future.set_result(f"error: {err}")
        except ConnectionClosed:
            pass
        finally:
            writer.cancel()
            for episode_id in list(self._episodes[conn]):
                self._forget(conn, episode_id)
            del self._episodes[conn]

    @staticmethod
    async def _write(ws, replies: asyncio.Queue) -> None:
        """Send each connection's replies in request order."""
        from websockets.exceptions import ConnectionClosed

        try:
            while (future := await replies.get()) is not None:
                await ws.send(await future)
        except ConnectionClosed:
            pass

    def _admit(self, conn: int, req: Request) -> int:
        """The slot of the request's episode: a fresh one at step 0, else the episode's, with increasing steps."""
        episodes, key = self._episodes[conn], (conn, req.episode_id)
        if req.step == 0:
            if req.episode_id not in episodes:
                if len(episodes) >= self.cfg.max_episodes_per_connection:
                    self._forget(conn, next(iter(episodes)))
                episodes[req.episode_id] = self._free.pop() if self._free else self._new_slot()
        elif req.episode_id not in episodes:
            raise ProtocolError(f"episode {req.episode_id!r} was not started on this connection; send step 0 "
                                "with its prompt first")
        elif req.step <= self._last_step[key]:
            raise ProtocolError(f"episode {req.episode_id!r}: step {req.step} after step {self._last_step[key]}; "
                                "steps must increase (step 0 restarts the episode)")
        episodes.move_to_end(req.episode_id)
        self._last_step[key] = req.step
        return episodes[req.episode_id]

    def _new_slot(self) -> int:
        self._n_slots += 1
        return self._n_slots - 1

    def _forget(self, conn: int, episode_id: str) -> None:
        slot = self._episodes.get(conn, {}).pop(episode_id, None)
        self._last_step.pop((conn, episode_id), None)
        if slot is not None:
            self._free.append(slot)

    def _owns(self, item: _Pending) -> bool:
        """False once the episode was dropped (connection closed, evicted): its slot may belong to another."""
        return self._episodes.get(item.conn, {}).get(item.req.episode_id) == item.slot

    async def _batch_loop(self) -> None:
        while True:
            batch = await self._collect()
            if batch:
                await self._run(batch)

    async def _collect(self) -> list[_Pending]:
        """Up to max_batch requests, at most one per slot (a later step of an episode waits for the next batch)."""
        loop = asyncio.get_running_loop()
        items, self._carry = self._carry, []
        if not items:
            items.append(await self._queue.get())
        deadline = loop.time() + self.cfg.max_wait_ms / 1000.0
        while len(items) < self.cfg.max_batch:
            if self._queue.empty():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    items.append(await asyncio.wait_for(self._queue.get(), remaining))
                except asyncio.TimeoutError:
                    break
            else:
                items.append(self._queue.get_nowait())
        batch, slots = [], set()
        for item in items:
            if not self._owns(item):
                _resolve(item.future, f"error: episode {item.req.episode_id!r} was dropped; start it again at step 0")
            elif item.slot in slots:
                self._carry.append(item)
            else:
                slots.add(item.slot)
                batch.append(item)
        return batch

    async def _run(self, batch: list[_Pending]) -> None:
        start = time.perf_counter()
        try:
            actions = await asyncio.get_running_loop().run_in_executor(self._executor, self._infer, batch)
        except Exception as err:  # a failure outside any request's own call: the batch hears it, the server lives
            for item in batch:
                _resolve(item.future, f"error: the policy failed on this batch ({type(err).__name__}: {err})")
            return
        infer_ms = 1000.0 * (time.perf_counter() - start)
        self.batch_sizes[len(batch)] += 1
        for item, act in zip(batch, actions):
            if isinstance(act, str):
                if item.req.step == 0 and self._owns(item):
                    self._forget(item.conn, item.req.episode_id)  # its reset failed: it must start again
                _resolve(item.future, act)
                continue
            _resolve(item.future, packb({
                "actions": act, "episode_id": item.req.episode_id, "step": item.req.step,
                "server_timing": {"infer_ms": infer_ms, "queue_ms": 1000.0 * (start - item.arrived),
                                  "batch_size": len(batch)}}))

    def _infer(self, batch: list[_Pending]) -> list[np.ndarray | str]:
        """Policy thread: reset the episodes at step 0, then one act_batch per observation layout. Each request
        gets its actions or the one-line error of its own reset or its own layout's call: a request that makes the
        policy fail never fails another client's request of another layout (requests of one layout are
        indistinguishable to the server, having passed `parse_request`'s checks)."""
        out: list[np.ndarray | str] = [""] * len(batch)
        groups: dict[tuple, list[int]] = {}
        for i, item in enumerate(batch):
            if item.req.step == 0:
                try:
                    self.policy.reset(item.req.prompt, slot=item.slot)
                except Exception as err:
                    out[i] = f"error: the policy could not start episode {item.req.episode_id!r} ({_brief(err)})"
                    continue
            layout = tuple(sorted((k, v.shape, v.dtype.str) for k, v in item.req.obs.items()))
            groups.setdefault(layout, []).append(i)
        for idx in groups.values():
            try:
                obs = {k: np.stack([batch[i].req.obs[k] for i in idx]) for k in batch[idx[0]].req.obs}
                acts = np.asarray(self.policy.act_batch(obs, [batch[i].slot for i in idx]), dtype=np.float32)
                if acts.ndim == 2:
                    acts = acts[:, None]
                if acts.ndim != 3 or acts.shape[0] != len(idx):
                    raise ValueError(f"act_batch returned shape {acts.shape} for {len(idx)} requests")
            except Exception as err:
                for i in idx:
                    out[i] = f"error: the policy failed on this request ({_brief(err)})"
                continue
            for j, i in enumerate(idx):
                out[i] = acts[j]
        return out


def _brief(err: BaseException) -> str:
    """`Type: first line of the message`, short enough for a one-line error frame."""
    message = str(err).splitlines()[0][:200] if str(err) else ""
    return f"{type(err).__name__}: {message}"


def _resolve(future: asyncio.Future, reply: bytes | str) -> None:
    if not future.done():
        future.set_result(reply)


def load_served_policy(cfg: ServeConfig) -> Policy:
    from mobile_vla_sim.policies.registry import load_policy, parse_policy_args

    return load_policy(cfg.policy, drive=cfg.drive, device=cfg.device, seed=cfg.seed,
                       policy_args=parse_policy_args(cfg.policy_args), task_family=cfg.task_family)


def serve(cfg: ServeConfig, log: Callable[[str], None] = print) -> None:
    """Load `cfg.policy` and serve it until Ctrl-C."""
    policy = load_served_policy(cfg)
    server = PolicyServer(policy, cfg)
    if server.token is None and cfg.host not in ("127.0.0.1", "localhost", "::1"):
        log(f"warning: serving on {cfg.host} without a token: anyone who reaches this port can use the policy")

    def started(port: int) -> None:
        log(f"serving {policy.name} ({policy.drive}) on ws://{cfg.host}:{port} (max batch {cfg.max_batch}); "
            "Ctrl-C stops")

    try:
        asyncio.run(server.run(started))
    except KeyboardInterrupt:
        log("stopped")
        raise  # the command exits 130 (143 on SIGTERM): the server did not end on its own
    finally:
        policy.close()


class ServerThread:
    """A server on a daemon thread, for tests, benchmarks and notebooks: `with ServerThread(cfg) as s: s.url`.

    It serves `policy` when given (the caller keeps ownership), else loads and later closes `cfg.policy`.
    """

    def __init__(self, cfg: ServeConfig, policy: Policy | None = None, start_timeout: float = 30.0):
        self.cfg = cfg
        self._owned = policy is None
        self.server = PolicyServer(policy if policy is not None else load_served_policy(cfg), cfg)
        self.port = 0
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="policy-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(start_timeout):
            raise RuntimeError(f"policy server did not start within {start_timeout:.0f} s")
        if self._error is not None:
            self.close()
            raise self._error

    @property
    def url(self) -> str:
        return f"ws://{self.cfg.host}:{self.port}"

    def _main(self) -> None:
        async def main():
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            await self.server.run(self._started, self._stop)

        try:
            asyncio.run(main())
        except BaseException as err:  # reported to the starting thread
            self._error = err
        finally:
            self._ready.set()

    def _started(self, port: int) -> None:
        self.port = port
        self._ready.set()

    def close(self) -> None:
        """Stop serving and wait for the thread (in-flight batches finish first)."""
        if self._loop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)
        if self._owned:
            self.server.policy.close()

    def __enter__(self) -> "ServerThread":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
