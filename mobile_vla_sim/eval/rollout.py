"""Closed-loop evaluation episodes on the episode engine (`mobile_vla_sim.envs.engine`): `eval_policy`.

`EvalRecorder` is the engine's worker-side handler for eval: it turns one episode's steps into an `EpisodeRecord`
(and an optional mp4 and HDF5 recording), reading the scene geometry and the sides passed from the env's `info`.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from mobile_vla_sim.envs.config import EnvConfig
from mobile_vla_sim.envs import engine
from mobile_vla_sim.envs.engine import EpisodeSpec, PoolConfig, RolloutResult
from mobile_vla_sim.envs.tasks import get_family
from mobile_vla_sim.eval.metrics import spl
from mobile_vla_sim.eval.recording import RecordPlan, RolloutWriter
from mobile_vla_sim.eval.records import EpisodeRecord
from mobile_vla_sim.policies.deploy import DeployConfig, deploy_policy
from mobile_vla_sim.policy import Policy
from mobile_vla_sim.moved import moved_name


class EvalRecorder:
    """Worker-side: the record (and video) of the episode a slot is running."""

    def __init__(self, video_paths: dict[str, str], env: EnvConfig, record: RecordPlan | None = None):
        self.video_paths = video_paths
        self._rgb = (lambda image: image[..., ::-1]) if env.color_order == "bgr" else (lambda image: image)  # videos
        self.record: EpisodeRecord | None = None
        self.video = None
        self.writer = RolloutWriter(record, env) if record is not None else None

    def start(self, spec: EpisodeSpec, obs: dict, info: dict) -> None:
        self.record = EpisodeRecord(
            index=spec.index, seed=spec.seed, difficulty=spec.difficulty, task=spec.task,
            instruction=info["instruction"], scenario=info["scenario"],
            final_distance=float(info["distance_to_goal"]),
            shortest_path_length=float(info["shortest_path_length"]),
            trajectory=[[float(v) for v in info["robot_pose"]]],
            obstacles=np.asarray(info["boxes"], dtype=float).tolist(), goal=[float(v) for v in info["goal"]])
        video_path = self.video_paths.get(spec.key)
        if video_path:
            from mobile_vla_sim.eval.video import EpisodeVideo

            self.video = EpisodeVideo(video_path, self.record.instruction, self.record.obstacles, self.record.goal,
                                      self.record.trajectory[0])
            self.video.add(self._rgb(obs["image"]), self.record.trajectory, 0, None)
            self.record.video = str(video_path)
        if self.writer is not None:
            self.writer.start(spec, obs, info)

    def step(self, action: np.ndarray, executed: np.ndarray, obs: dict, info: dict, done: bool) -> None:
        rec = self.record
        rec.steps += 1
        rec.nan_actions += int(bool(info["action_nan"]))
        rec.clipped_actions += int(bool(info["action_clipped"]))
        rec.trajectory.append([float(v) for v in info["robot_pose"]])
        rec.actions.append([float(v) for v in action])
        if self.writer is not None:
            self.writer.step(action, executed, obs, info, done)
        if self.video is not None:
            self._last_frame = (self._rgb(obs["image"]), action)
            if not done:  # the last frame waits for `finish`, which knows the outcome to print on it
                self.video.add(self._last_frame[0], rec.trajectory, rec.steps, action)

    def finish(self, info: dict, truncated: bool) -> EpisodeRecord:
        rec, self.record = self.record, None
        rec.success = bool(info["success"])
        rec.collision = bool(info["collision"])
        rec.wrong_side = bool(info["wrong_side"])
        rec.out_of_bounds = bool(info["out_of_bounds"])
        rec.timeout = bool(truncated and not rec.success)
        rec.final_distance = float(info["distance_to_goal"])
        rec.path_length = float(info["path_length"])
        rec.shortest_path_length = float(info["shortest_path_length"])
        rec.spl = spl(rec.success, rec.shortest_path_length, rec.path_length)
        rec.side_taken = (info["sides_passed"] or [None])[0] or "none"
        if self.video is not None:
            image, action = self._last_frame
            self.video.add(image, rec.trajectory, rec.steps, action, rec.outcome.replace("_", " ").upper())
            self.video.close()
            self.video = None
        if self.writer is not None:
            self.writer.finish(info, truncated)
        return rec

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()
        if self.video is not None:
            self.video.abort()
            self.video = None


def eval_policy(policy: Policy, specs: Sequence[EpisodeSpec], env: EnvConfig, *, deploy: DeployConfig = DeployConfig(),
                pool: PoolConfig = PoolConfig(), videos: dict[str, str] | None = None, record: RecordPlan | None = None,
                progress: bool = True, on_record: Callable[[EpisodeRecord], None] | None = None) -> RolloutResult:
    """Roll every spec out closed-loop with a loaded `policy` behind the deployment stack `deploy`; `videos`: spec
    key -> mp4 path; `record`: save every episode as HDF5 data (`mobile_vla_sim.eval.recording`).

    The inner evaluation over objects (`evaluate` builds them from a config): a caller that evaluates one policy
    under many conditions (the probe, a study cell) loads it once. `.results` are `EpisodeRecord`s in spec order;
    Ctrl-C and expected errors (`.error`) keep the finished ones. The policy stays open: its owner closes it.
    """
    env = env.resolved()
    deployed = deploy_policy(policy, deploy, env.color_order, env.instructions, get_family(env.task_family))
    try:
        with _inference_threads(pool.workers):
            return engine.run_episodes(deployed, specs, env, RecorderFactory(videos or {}, env, record), pool,
                                       progress=progress, on_result=on_record, desc=f"eval {policy.name}")
    finally:
        if deployed is not policy:
            deployed.close()


@contextlib.contextmanager
def _inference_threads(workers: int):
    """CPU inference in this process gets the cores the env workers leave free: with torch's default of one thread
    per core, inference and 2 env workers on 2 cores ran eval ~5x slower (measured, benchmarks/README.md)."""
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    cores = os.cpu_count() or 1
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, cores - min(workers or cores, cores)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class RecorderFactory:
    """Picklable factory: each worker slot builds its own recorder."""

    video_paths: dict[str, str]
    env: EnvConfig
    record: RecordPlan | None = None

    def __call__(self) -> EvalRecorder:
        return EvalRecorder(self.video_paths, self.env, self.record)


def __getattr__(name: str):
    """Names that moved or are gone since the reorganisation (`mobile_vla_sim.moved`)."""
    return moved_name(__name__, name)
