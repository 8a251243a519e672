"""The episode engine: parallel closed-loop episodes with batched policy inference, used by `generate` and `eval`.

Worker processes (spawn context: PyBullet/OpenGL state must never be forked) each own a few envs ("slots"). The
parent holds the policy: every round it stacks the observations of all running episodes, calls `policy.act_batch`
once, and sends each worker its actions through a pipe. Along with each action the parent hands the slot a spare
episode spec, so a slot whose episode ends starts the next one in the same round trip. What happens to an episode's
steps is the job's business: a picklable `handler_factory` builds one `EpisodeHandler` per slot in the worker (eval
keeps a result record and a video, generate writes an HDF5 file), and only the handler's small result travels back.

Why not `gymnasium.vector.AsyncVectorEnv`: it runs one env per process with one task and difficulty for all of
them, and it resets an env whose episode ended on its own. Here a process steps several envs (inference is batched
across all of them while the workers step in parallel, measured 1.4x over one env per process on 2 cores), every
slot runs its own (seed, task, difficulty), and a slot only starts the next spec the parent hands it, so every
episode's result depends on its spec alone, never on which slot, worker or round ran it.
"""

from __future__ import annotations

import multiprocessing as mp
import operator
import os
import signal
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from mobile_vla_sim.config import check_knobs, knob
from mobile_vla_sim.envs.actions import LAYOUT_DIMS, action_limits, noisy_action
from mobile_vla_sim.envs.config import EnvConfig, make_env
from mobile_vla_sim.envs.tasks import get_family
from mobile_vla_sim.errors import EvalError, MvlaError
from mobile_vla_sim.policy import Policy, next_actions
from mobile_vla_sim.progress import bar as progress_bar
from mobile_vla_sim.moved import moved_name


@dataclass(frozen=True)
class EpisodeSpec:
    """One episode: the env is reset with `seed` and options {task, difficulty}; `noise_seed` seeds the executed-action
    noise of demonstrations (None: no noise)."""

    index: int
    seed: int
    difficulty: str
    task: str
    noise_seed: int | None = None

    @property
    def key(self) -> str:
        """Identifier shared by every policy's result for this episode."""
        return f"{self.difficulty}/{self.task}/{self.index:04d}"


@dataclass(frozen=True)
class PoolConfig:
    """How episodes are spread over processes; results never depend on it."""

    workers: int = knob(0, "env worker processes (0: one per CPU)", min=0)
    envs_per_worker: int = knob(4, "concurrent episodes per worker; inference is batched across all of them", min=1)

    def __post_init__(self) -> None:
        check_knobs(self)


class EpisodeHandler(Protocol):
    """Worker-side bookkeeping of one slot's current episode."""

    def start(self, spec: EpisodeSpec, obs: dict, info: dict) -> None: ...

    def step(self, action: np.ndarray, executed: np.ndarray, obs: dict, info: dict, done: bool) -> None:
        """`action` is what the policy asked for, `executed` what was sent to the env (differs with action noise)."""

    def finish(self, info: dict, truncated: bool) -> Any:
        """The episode's result (small and picklable: it travels to the parent)."""

    def abort(self) -> None: ...


class WorkerError(MvlaError, RuntimeError):
    """A rollout worker failed or died."""


class _Slot:
    def __init__(self, env_cfg: EnvConfig, handler: EpisodeHandler, action_noise: float):
        self.env = make_env(env_cfg)
        self.handler, self.action_noise = handler, action_noise
        self.limits = action_limits(env_cfg.drive, env_cfg.action_mode)
        self.rng: np.random.Generator | None = None
        #: With stop_at_goal a stop is executed as is: noise on it would keep the demonstration from ever ending.
        self.keep_stops = env_cfg.stop_at_goal or get_family(env_cfg.task_family).requires_stop

    def reset(self, spec: EpisodeSpec) -> tuple[dict, str]:
        obs, info = self.env.reset(seed=spec.seed, options={"task": spec.task, "difficulty": spec.difficulty})
        noisy = self.action_noise > 0 and spec.noise_seed is not None
        self.rng = np.random.default_rng(spec.noise_seed) if noisy else None
        self.handler.start(spec, obs, info)
        return obs, info["instruction"]

    def step(self, action: np.ndarray) -> tuple[dict, Any]:
        clean = self.rng is None or (self.keep_stops and not action.any())
        executed = action if clean else noisy_action(action, self.rng, self.action_noise, self.limits)
        obs, _, terminated, truncated, info = self.env.step(executed)
        done = bool(terminated or truncated)
        self.handler.step(action, executed, obs, info, done)
        return obs, (self.handler.finish(info, bool(truncated)) if done else None)

    def close(self) -> None:
        self.handler.abort()
        self.env.close()


class SlotGroup:
    """The slots of one worker. A message maps local slot -> (action | None, spare spec | None); the reply maps it
    -> (obs | None, instruction | None, finished result | None, spare spec used)."""

    def __init__(self, env_cfg: EnvConfig, n: int, handler_factory: Callable[[], EpisodeHandler], action_noise: float,
                 inputs: tuple[str, ...] | None):
        self.slots = [_Slot(env_cfg, handler_factory(), action_noise) for _ in range(n)]
        self.running = [False] * n
        self.inputs = inputs

    def _sent(self, obs: dict) -> dict:
        """Only the observation keys the policy reads travel to the parent (the expert needs no image)."""
        return obs if self.inputs is None else {k: obs[k] for k in self.inputs}

    def handle(self, msg: dict) -> dict:
        reply = {}
        for i, (action, spec) in msg.items():
            obs, result, instruction, used = None, None, None, False
            if action is not None:
                obs, result = self.slots[i].step(np.asarray(action, dtype=np.float32))
                self.running[i] = result is None
            if not self.running[i]:
                obs = None
                if spec is not None:
                    obs, instruction = self.slots[i].reset(spec)
                    self.running[i], used = True, True
            reply[i] = (None if obs is None else self._sent(obs), instruction, result, used)
        return reply

    def close(self) -> None:
        for s in self.slots:
            s.close()


def _worker(conn, args: tuple) -> None:
    """Worker process loop; SIGINT is left to the parent, which decides what is kept."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    group = None
    try:
        group = SlotGroup(*args)
        conn.send(("ready", None))
        while (msg := conn.recv()) is not None:
            conn.send(("ok", group.handle(msg)))
    except EOFError:
        pass
    except Exception as err:  # surface the worker's error in the parent instead of hanging it
        conn.send(("error", str(err) if isinstance(err, MvlaError) else f"{type(err).__name__}: {err}"))
    finally:
        if group is not None:
            group.close()


class _InProcess:
    """One worker: the same SlotGroup, called directly (no pickling, no process)."""

    def __init__(self, args: tuple):
        self.group = SlotGroup(*args)
        self._reply: dict = {}

    def send(self, msg: dict) -> None:
        self._reply = self.group.handle(msg)

    def recv(self) -> dict:
        return self._reply

    def close(self) -> None:
        self.group.close()


class _Subprocess:
    def __init__(self, args: tuple, ctx):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child, args), daemon=True)
        self.proc.start()
        child.close()

    def send(self, msg: dict) -> None:
        self.conn.send(msg)

    def recv(self) -> Any:
        try:
            kind, payload = self.conn.recv()
        except EOFError:
            self.proc.join(timeout=5)
            raise WorkerError(f"a rollout worker exited unexpectedly (exit code {self.proc.exitcode}); finished "
                              "episodes are kept; re-run with --workers 1 to see the error in this process") from None
        if kind == "error":
            raise WorkerError(f"a rollout worker failed: {payload}")
        return payload

    def close(self) -> None:
        try:
            self.conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        self.proc.join(timeout=5)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join()


@dataclass
class RolloutResult:
    """Finished results in spec order, whether Ctrl-C cut the run short, and its wall time."""

    results: list[Any]
    interrupted: bool = False
    seconds: float = 0.0
    #: An expected failure that stopped the run early (e.g. a policy server that went away); finished results kept.
    error: MvlaError | None = None


def run_episodes(policy: Policy, specs: Sequence[EpisodeSpec], env_cfg: EnvConfig,
                 handler_factory: Callable[[], EpisodeHandler], pool: PoolConfig = PoolConfig(),
                 action_noise: float = 0.0, progress: bool = True, on_result: Callable[[Any], None] | None = None,
                 desc: str | None = None,
                 succeeded: Callable[[Any], bool] = operator.attrgetter("success")) -> RolloutResult:
    """Run every spec once with `policy`; results come back in spec order. Ctrl-C keeps finished episodes.
    `succeeded` reads a handler's result for the progress bar's success rate.

    `action_noise` (fraction of each action limit, seeded per episode by `spec.noise_seed`) perturbs the executed
    action while handlers still see the policy's action: demonstrations that show recoveries with clean labels.
    """
    env_cfg = env_cfg.resolved()
    workers = pool.workers or os.cpu_count() or 1
    per = 1 if env_cfg.renderer == "egl" else pool.envs_per_worker  # pybullet allows one EGL client per process
    # A policy that holds only `max_slots` episodes at once (an inference server keeping one history) gets no more.
    if policy.max_slots:
        per = min(per, policy.max_slots)
        workers = min(workers, max(1, policy.max_slots // per))
    per = max(1, min(per, -(-len(specs) // workers)))
    workers = max(1, min(workers, -(-len(specs) // per)))
    args = (env_cfg, per, handler_factory, float(action_noise), policy.inputs)
    dims = len(LAYOUT_DIMS[env_cfg.drive])
    queue = list(specs)
    keys = {id(s): n for n, s in enumerate(specs)}
    done: dict[int, Any] = {}
    running: dict[int, dict] = {}  # slot -> latest obs
    bar = progress_bar(total=len(specs), desc=desc or policy.name, unit="ep", enabled=progress)
    start, interrupted, error, conns = time.perf_counter(), False, None, []
    successes = 0
    try:
        if workers == 1:
            conns = [_InProcess(args)]
        else:
            ctx = mp.get_context("spawn")
            conns = [_Subprocess(args, ctx) for _ in range(workers)]
            for c in conns:
                c.recv()  # ready
        slots = [w * per + i for w in range(workers) for i in range(per)]
        actions: dict[int, np.ndarray] = {}
        owner: dict[int, EpisodeSpec] = {}
        while queue or running:
            if running:
                ids = sorted(running)
                batch = {k: np.stack([running[s][k] for s in ids]) for k in running[ids[0]]}
                acts = next_actions(policy, batch, ids)
                if acts.shape[1] != dims:
                    raise EvalError(f"policy {policy.name!r} returned {acts.shape[1]} values per action but the "
                                    f"env's {env_cfg.drive!r} drive takes {dims}; return (B, {dims}) actions")
                actions = dict(zip(ids, acts))
            spare = iter(queue)  # idle slots get the next specs; running slots a spare one, used if their episode ends
            msgs: list[dict] = [{} for _ in conns]
            for s in sorted(slots, key=lambda s: s in running):
                act = actions.get(s) if s in running else None
                spec = next(spare, None)
                if act is None and spec is None:
                    continue
                msgs[s // per][s % per] = (act, spec)
            for c, m in zip(conns, msgs):
                if m:
                    c.send(m)
            for w, (c, m) in enumerate(zip(conns, msgs)):
                if not m:
                    continue
                for i, (obs, instruction, result, used) in c.recv().items():
                    s = w * per + i
                    if result is not None:
                        done[keys[id(owner.pop(s))]] = result
                        successes += bool(succeeded(result))
                        bar.set_postfix(success=f"{successes / len(done):.0%}", refresh=False)
                        bar.update(1)
                        if on_result:
                            on_result(result)
                    running.pop(s, None)
                    if used:
                        owner[s] = m[i][1]
                        queue.remove(owner[s])
                        policy.reset(instruction, slot=s)
                    if obs is not None:
                        running[s] = obs
    except KeyboardInterrupt:
        interrupted = True
    except MvlaError as err:  # e.g. the policy server went away: keep what finished, let the caller report it
        interrupted, error = True, err
    finally:
        bar.close()
        for c in conns:
            c.close()
    return RolloutResult([done[n] for n in sorted(done)], interrupted, time.perf_counter() - start, error)


def __getattr__(name: str):
    """Names that moved or are gone since the reorganisation (`mobile_vla_sim.moved`)."""
    return moved_name(__name__, name)
