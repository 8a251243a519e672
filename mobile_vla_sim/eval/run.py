"""`evaluate(EvalConfig)`: the whole `mvla-sim eval` job as a library call."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mobile_vla_sim.eval.episodes import EpisodeSpec, episode_set
from mobile_vla_sim.errors import EvalError
from mobile_vla_sim.eval.metrics import aggregate
from mobile_vla_sim.eval.records import EpisodeRecord
from mobile_vla_sim.eval.report import write_results
from mobile_vla_sim.eval.rollout import EnvConfig, run_episodes


@dataclass
class EvalConfig:
    """What to evaluate and how; `episodes` is per (difficulty, task)."""

    policy: str
    difficulty: str = "all"
    task: str = "both"
    episodes: int = 10
    seed: int = 0
    workers: int = 0  # 0 = one per CPU: env stepping then runs in parallel while inference stays batched
    envs_per_worker: int = 4
    out: Path | None = None
    video_dir: Path | None = None
    video_all: bool = False
    videos_per_group: int = 2
    offline_data: Path | None = None
    device: str = "cpu"
    env: EnvConfig = field(default_factory=EnvConfig)


@dataclass
class EvalResult:
    records: list[EpisodeRecord]
    aggregates: dict
    offline: dict | None
    interrupted: bool
    episodes_per_min: float
    paths: dict[str, Path] = field(default_factory=dict)


def video_paths(specs: list[EpisodeSpec], video_dir: Path, per_group: int, all_: bool) -> dict[str, str]:
    """Videos for the first `per_group` episodes of each (difficulty, task), or for all of them."""
    return {s.key: str(Path(video_dir) / f"{s.difficulty}_{s.task}_{s.index:04d}.mp4")
            for s in specs if all_ or s.index < per_group}


def policy_label(spec: str, policy) -> str:
    """Short name for tables: the checkpoint's file name, else the policy's own name (expert, sb3:ppo.zip...)."""
    return Path(spec).name if spec.endswith(".ckpt") else policy.name


def evaluate(cfg: EvalConfig, progress: bool = True) -> EvalResult:
    """Score `cfg.policy` closed-loop on the fixed episode set (and offline when `offline_data` is given)."""
    from mobile_vla_sim.policies.registry import load_policy

    if cfg.workers < 0:
        raise EvalError(f"--workers must be >= 0 (0 = one per CPU), got {cfg.workers}")
    specs = episode_set(cfg.seed, cfg.difficulty, cfg.task, cfg.episodes)
    policy = load_policy(cfg.policy, drive=cfg.env.drive, device=cfg.device, offline_data=cfg.offline_data,
                         seed=cfg.seed)
    try:
        offline = None
        if cfg.offline_data is not None:
            from mobile_vla_sim.eval.offline import offline_metrics

            offline = offline_metrics(policy, cfg.offline_data).to_dict()
        videos = video_paths(specs, cfg.video_dir, cfg.videos_per_group, cfg.video_all) if cfg.video_dir else {}
        result = run_episodes(policy, specs, cfg.env, workers=cfg.workers or os.cpu_count() or 1,
                              envs_per_worker=cfg.envs_per_worker, video_paths=videos, progress=progress)
    finally:
        policy.close()
    aggregates = aggregate(result.records)
    rate = 60.0 * len(result.records) / max(result.seconds, 1e-9)
    paths = {}
    if cfg.out is not None:
        config = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}
        paths = write_results(cfg.out, policy=policy_label(cfg.policy, policy), config=config, records=result.records,
                              aggregates=aggregates, offline=offline, interrupted=result.interrupted,
                              throughput={"episodes": len(result.records), "seconds": result.seconds,
                                          "episodes_per_min": rate, "policy": policy.stats()})
    return EvalResult(records=result.records, aggregates=aggregates, offline=offline,
                      interrupted=result.interrupted, episodes_per_min=rate, paths=paths)
