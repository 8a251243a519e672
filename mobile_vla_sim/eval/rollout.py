"""Parallel closed-loop rollouts with batched policy inference.

Worker processes (spawn context: PyBullet/OpenGL state must never be forked) each own a few envs. The parent
holds the policy: every round it stacks the observations of all running episodes, calls `policy.act_batch`
once, and sends each worker its actions through a pipe. Along with each action the parent hands the slot a
spare episode spec, so a slot whose episode ends starts the next one in the same round trip. Each episode's
result depends only on its spec and the policy, never on which slot or worker ran it.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from mobile_vla_sim.envs.state import decode_state
from mobile_vla_sim.eval.episodes import EpisodeSpec
from mobile_vla_sim.eval.metrics import spl
from mobile_vla_sim.eval.records import EpisodeRecord
from mobile_vla_sim.policies.base import Policy

ENV_ID = "MobileVLA/Nav-v0"


@dataclass
class EnvConfig:
    """Env knobs shared by every episode; the train/deploy-mismatch probes live here."""

    drive: str = "diff"
    control: str = "continuous"
    image_size: int = 224
    renderer: str = "tiny"  # "egl": PyBullet's OpenGL plugin; one EGL env per process, so one env per worker
    action_latency: int = 0
    action_scale: float = 1.0
    camera_noise: float = 0.0
    max_steps: int | None = None


def side_passed(trajectory: Sequence[Sequence[float]], box_xy: Sequence[float]) -> str:
    """Side on which the path first crosses the box's centre line (x = box x): 'left' (+y), 'right' or 'none'."""
    bx, by = box_xy[0], box_xy[1]
    for (x0, y0, *_), (x1, y1, *_) in zip(trajectory[:-1], trajectory[1:]):
        if x0 < bx <= x1:
            y = y0 + (bx - x0) / (x1 - x0) * (y1 - y0)
            return "left" if y > by else "right"
    return "none"


class EpisodeRunner:
    """One env plus the bookkeeping of the episode it runs (counts, trajectory, optional video)."""

    def __init__(self, env_cfg: EnvConfig):
        import gymnasium as gym

        import mobile_vla_sim  # noqa: F401  (registers the env in a fresh spawned process)

        self.env = gym.make(ENV_ID, drive=env_cfg.drive, control=env_cfg.control, image_size=env_cfg.image_size,
                            renderer=env_cfg.renderer, action_latency=env_cfg.action_latency,
                            action_scale=env_cfg.action_scale, camera_noise=env_cfg.camera_noise,
                            max_steps=env_cfg.max_steps)
        self.record: EpisodeRecord | None = None
        self.video = None

    def reset(self, spec: EpisodeSpec, video_path: str | None) -> tuple[dict, str]:
        obs, info = self.env.reset(seed=spec.seed, options={"task": spec.task, "difficulty": spec.difficulty})
        scene = decode_state(obs["state"])
        self.record = EpisodeRecord(
            index=spec.index, seed=spec.seed, difficulty=spec.difficulty, task=spec.task,
            instruction=info["instruction"], scenario=info["scenario"],
            final_distance=float(info["distance_to_goal"]),
            shortest_path_length=float(info["shortest_path_length"]),
            trajectory=[[float(v) for v in info["robot_pose"]]],
            obstacles=[[float(v) for v in b] for b in scene["boxes"]], goal=[float(v) for v in scene["goal"]])
        if video_path:
            from mobile_vla_sim.eval.video import EpisodeVideo

            self.video = EpisodeVideo(video_path, self.record.instruction, self.record.obstacles, self.record.goal,
                                      self.record.trajectory[0])
            self.video.add(obs["image"], self.record.trajectory, 0, None)
            self.record.video = str(video_path)
        return obs, info["instruction"]

    def step(self, action: np.ndarray) -> tuple[dict, EpisodeRecord | None]:
        """Step the env; returns the observation and, when the episode ended, its finished record."""
        obs, _, terminated, truncated, info = self.env.step(action)
        rec = self.record
        rec.steps += 1
        rec.nan_actions += int(bool(info["action_nan"]))
        rec.clipped_actions += int(bool(info["action_clipped"]))
        rec.trajectory.append([float(v) for v in info["robot_pose"]])
        rec.actions.append([float(v) for v in action])
        done = bool(terminated or truncated)
        if done:
            self._finish(info, truncated)
        if self.video is not None:
            status = rec.outcome.replace("_", " ").upper() if done else ""
            self.video.add(obs["image"], rec.trajectory, rec.steps, action, status)
            if done:
                self.video.close()
                self.video = None
        return obs, (rec if done else None)

    def _finish(self, info: dict, truncated: bool) -> None:
        rec = self.record
        rec.success = bool(info["success"])
        rec.collision = bool(info["collision"])
        rec.wrong_side = bool(info["wrong_side"])
        rec.out_of_bounds = bool(info["out_of_bounds"])
        rec.timeout = bool(truncated and not rec.success)
        rec.final_distance = float(info["distance_to_goal"])
        rec.path_length = float(info["path_length"])
        rec.shortest_path_length = float(info["shortest_path_length"])
        rec.spl = spl(rec.success, rec.shortest_path_length, rec.path_length)
        rec.side_taken = side_passed(rec.trajectory, rec.obstacles[0]) if rec.obstacles else "none"

    def abort(self) -> None:
        if self.video is not None:
            self.video.abort()
            self.video = None

    def close(self) -> None:
        self.abort()
        self.env.close()


class EnvGroup:
    """The envs of one worker. A message maps local env index -> (action | None, spare spec | None, video path);
    the reply maps it -> (obs | None, instruction | None, finished record | None, spare spec used)."""

    def __init__(self, env_cfg: EnvConfig, n_envs: int):
        self.runners = [EpisodeRunner(env_cfg) for _ in range(n_envs)]
        self.running = [False] * n_envs

    def handle(self, msg: dict) -> dict:
        reply = {}
        for i, (action, spec, video_path) in msg.items():
            obs, record, instruction, used = None, None, None, False
            if action is not None:
                obs, record = self.runners[i].step(np.asarray(action, dtype=np.float32))
                self.running[i] = record is None
            if not self.running[i]:
                obs = None
                if spec is not None:
                    obs, instruction = self.runners[i].reset(spec, video_path)
                    self.running[i], used = True, True
            reply[i] = (obs, instruction, record, used)
        return reply

    def close(self) -> None:
        for r in self.runners:
            r.close()


def _worker(conn, env_cfg: EnvConfig, n_envs: int) -> None:
    """Worker process loop; SIGINT is left to the parent, which decides what is kept."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    group = None
    try:
        group = EnvGroup(env_cfg, n_envs)
        conn.send(("ready", None))
        while (msg := conn.recv()) is not None:
            conn.send(("ok", group.handle(msg)))
    except EOFError:
        pass
    except Exception as err:  # surface the worker's error in the parent instead of hanging it
        conn.send(("error", f"{type(err).__name__}: {err}"))
    finally:
        if group is not None:
            group.close()


class _InProcess:
    """`--workers 1`: the same EnvGroup, called directly (no pickling, no process)."""

    def __init__(self, env_cfg: EnvConfig, n_envs: int):
        self.group = EnvGroup(env_cfg, n_envs)
        self._reply = None

    def send(self, msg: dict) -> None:
        self._reply = self.group.handle(msg)

    def recv(self) -> dict:
        return self._reply

    def close(self) -> None:
        self.group.close()


class _Subprocess:
    def __init__(self, env_cfg: EnvConfig, n_envs: int, ctx):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child, env_cfg, n_envs), daemon=True)
        self.proc.start()
        child.close()

    def wait_ready(self) -> None:
        self.recv()

    def send(self, msg: dict) -> None:
        self.conn.send(msg)

    def recv(self) -> dict:
        try:
            kind, payload = self.conn.recv()
        except EOFError:
            self.proc.join(timeout=5)
            raise RuntimeError(f"rollout worker exited unexpectedly (exit code {self.proc.exitcode}); "
                               "re-run with --workers 1 to see the error in this process") from None
        if kind == "error":
            raise RuntimeError(f"rollout worker failed: {payload}")
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
    records: list[EpisodeRecord]
    interrupted: bool = False
    seconds: float = 0.0


def run_episodes(policy: Policy, specs: Sequence[EpisodeSpec], env_cfg: EnvConfig, workers: int = 1,
                 envs_per_worker: int = 4, video_paths: dict[str, str] | None = None, progress: bool = True,
                 on_record: Callable[[EpisodeRecord], None] | None = None) -> RolloutResult:
    """Run every spec once with `policy`; records come back in spec order. Ctrl-C keeps finished episodes."""
    if workers < 1 or envs_per_worker < 1:
        raise ValueError(f"workers and envs_per_worker must be >= 1 (got {workers}, {envs_per_worker})")
    video_paths = video_paths or {}
    if env_cfg.renderer == "egl":  # pybullet allows one EGL client per process
        envs_per_worker = 1
    n_slots_per = max(1, min(envs_per_worker, -(-len(specs) // workers)))
    workers = max(1, min(workers, -(-len(specs) // n_slots_per)))
    queue = list(specs)
    done: dict[str, EpisodeRecord] = {}
    successes = 0
    running: dict[int, dict] = {}  # slot -> latest obs
    bar = tqdm(total=len(specs), desc=f"eval {policy.name}", unit="ep", disable=not progress)
    start = time.perf_counter()
    interrupted = False
    ctx = mp.get_context("spawn")
    conns = []
    try:
        if workers == 1:
            conns = [_InProcess(env_cfg, n_slots_per)]
        else:
            conns = [_Subprocess(env_cfg, n_slots_per, ctx) for _ in range(workers)]
            for c in conns:
                c.wait_ready()
        slots = [w * n_slots_per + i for w in range(workers) for i in range(n_slots_per)]
        actions: dict[int, np.ndarray] = {}
        while queue or running:
            if running:
                ids = sorted(running)
                batch = {k: np.stack([running[s][k] for s in ids]) for k in running[ids[0]]}
                actions = dict(zip(ids, policy.act_batch(batch, ids)))
            # idle slots get the next specs; running slots a spare one, used if their episode ends this round
            spare = iter(queue)
            msgs: list[dict] = [{} for _ in conns]
            for s in sorted(slots, key=lambda s: s in running):
                act = actions.get(s) if s in running else None
                spec = next(spare, None)
                if act is None and spec is None:
                    continue
                msgs[s // n_slots_per][s % n_slots_per] = (act, spec, video_paths.get(spec.key) if spec else None)
            for c, m in zip(conns, msgs):
                if m:
                    c.send(m)
            for w, (c, m) in enumerate(zip(conns, msgs)):
                if not m:
                    continue
                for i, (obs, instruction, record, used) in c.recv().items():
                    s = w * n_slots_per + i
                    if record is not None:
                        done[record.key] = record
                        successes += record.success
                        bar.set_postfix(success=f"{successes / len(done):.0%}", refresh=False)
                        bar.update(1)
                        if on_record:
                            on_record(record)
                    running.pop(s, None)
                    if used:
                        queue.remove(m[i][1])
                        policy.reset(instruction, slot=s)
                    if obs is not None:
                        running[s] = obs
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
        for c in conns:
            c.close()
    order = {s.key: n for n, s in enumerate(specs)}
    records = sorted(done.values(), key=lambda r: order[r.key])
    return RolloutResult(records=records, interrupted=interrupted, seconds=time.perf_counter() - start)
