"""`evaluate(EvalConfig)`: the whole `mvla-sim eval` job as a library call; `eval_policy` is its inner loop."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from mobile_vla_sim.backends import BackendConfig
from mobile_vla_sim.config import check_knobs, knob, to_dict
from mobile_vla_sim.envs.config import ENV_DEFAULTS, EnvConfig
from mobile_vla_sim.envs.engine import EpisodeSpec, PoolConfig, RolloutResult
from mobile_vla_sim.envs.tasks import get_family
from mobile_vla_sim.errors import ConfigError, EvalError, MvlaError, OutputError
from mobile_vla_sim.eval.episodes import episode_set, interleaved
from mobile_vla_sim.eval.metrics import aggregate
from mobile_vla_sim.eval.records import EpisodeRecord
from mobile_vla_sim.eval.recording import RecordPlan, label_recordings
from mobile_vla_sim.eval.report import EpisodeJournal, read_journal, read_results, write_results
from mobile_vla_sim.eval.rollout import eval_policy
from mobile_vla_sim.paths import check_output_dir
from mobile_vla_sim.policies.config import DTYPES
from mobile_vla_sim.policies.deploy import DeployConfig
from mobile_vla_sim.policy import Policy
from mobile_vla_sim.moved import moved_name

#: Knobs that change no episode's outcome: results of a run that differs only in these are resumed, not redone.
_RESUMABLE = ("workers", "envs_per_worker", "out", "video_dir", "video_all", "videos_per_group", "offline_data",
              "ray_shard", "backend", "ray_address", "record")


@dataclass
class EvalConfig:
    """What to evaluate and how; `episodes` is per (difficulty, task).

    The deployment stack (`deploy`) is one value, given as a YAML file on the command line: it describes a robot's
    software between camera, policy and motors, is shared between runs and versioned next to the robot code, and
    its stage names (colour order, scale, window) would clash with the env's own knobs of different meaning.
    Env knobs left unset (None) are taken from what the policy was trained with (`Policy.trained_env`), so a
    checkpoint trained at 112 px is evaluated at 112 px unless asked otherwise, from Python as from the CLI.
    """

    policy: str = knob(help="a .ckpt from `mvla-sim train` (or a PyTorch Lightning one of the real project), "
                       "expert, random, constant, always-left, always-right, sb3:PATH.zip, ws://HOST:PORT or "
                       "http://HOST:PORT (the real project's inference server)")
    policy_args: tuple[str, ...] = knob((), "KEY=VALUE for a plugin factory, a ws:// policy (token=...) or an "
                                        "http:// one (api_key=...); repeat it; secret values (token, api_key, "
                                        "password) are never written into results", flag="--policy-arg",
                                        multiple=True, secrets=True)
    difficulty: str = knob("all", "easy, medium, hard, all, or a comma list")
    task: str = knob("both", "left, right or both")
    episodes: int = knob(10, "episodes per (difficulty, task); left and right with one index share a scene", min=1)
    seed: int = knob(0, "base seed of the fixed episode set", min=0)
    out: Path | None = knob(Path("runs/eval"), "folder for results.json, episodes.csv, summary.md, trajectories.png; "
                            "re-running the same command resumes an interrupted run")
    video_dir: Path | None = knob(None, "write mp4 rollout videos here")
    video_all: bool = knob(False, "a video for every episode (default: the first --videos-per-group per group)")
    videos_per_group: int = knob(2, "videos per (difficulty, task) when --video-dir is given", min=0)
    record: Path | None = knob(None, "save every episode here in the real HDF5 layout: the frames the policy saw, the "
                               "actions it sent, success and failure label as attributes (failures become data)")
    offline_data: Path | None = knob(None, "dataset folder for offline metrics on its validation episodes")
    device: str = knob("cpu", "torch device for the policy: cpu, cuda or cuda:N")
    dtype: str | None = knob(None, "backbone dtype of a .ckpt policy [default: the dtype it was trained in]",
                             choices=DTYPES)
    deploy: DeployConfig = knob(help="YAML file of deployment stages between env and policy (colour order, resize, "
                                "normalisation, window, chunk execution, action post-processing, instruction; "
                                "DeployConfig in mobile_vla_sim/policies/deploy.py; examples/deploy_jan2026.yaml)",
                                file=True, default_factory=DeployConfig)
    target_halfwidth: float | None = knob(None, "stop once the anytime-valid 95% interval of the success rate is at "
                                          "most +-W; --episodes is then the budget per (difficulty, task), run "
                                          "index by index, and only the finished prefix of that order up to the "
                                          "stop is counted, so results do not depend on --workers",
                                          min=0.005, max=0.5)
    ray_shard: int = knob(20, "with --backend ray: episodes per Ray task (each task loads the policy once and runs "
                          "its episodes in one process)", min=1)
    env: EnvConfig = field(default_factory=EnvConfig)
    pool: PoolConfig = field(default_factory=PoolConfig)
    #: local: episodes in this process and its env workers; ray: shards of episodes as Ray tasks, same results.
    cluster: BackendConfig = field(default_factory=BackendConfig)

    def __post_init__(self) -> None:
        check_knobs(self)
        self.out = None if self.out is None else Path(self.out)
        if not isinstance(self.deploy, DeployConfig):
            raise ConfigError(f"deploy must be a DeployConfig, got {self.deploy!r}; load a YAML file with "
                              "DeployConfig.from_yaml(path)")
        if self.env.task_family is not None:  # else checked once the family is resolved (the policy's, or detour)
            episode_set(self.seed, self.difficulty, self.task, self.episodes, self.env.task_family)


def eval_knob(name: str, **changes: Any) -> Any:
    """EvalConfig's declaration of knob `name` (its help, bounds and default, `changes` applied): jobs that run
    evaluations (the probe, `mvla-sim ab`) share the evaluation's knobs without restating them."""
    f = EvalConfig.__dataclass_fields__[name]
    meta = {**f.metadata, **{k: v for k, v in changes.items() if k != "default"}}
    return dataclasses.field(default=changes.get("default", f.default), default_factory=f.default_factory,
                             metadata=meta)


@dataclass
class EvalResult:
    policy: str  # the label tables use (`policy_label`)
    records: list[EpisodeRecord]
    aggregates: dict
    offline: dict | None
    interrupted: bool
    episodes_per_min: float
    paths: dict[str, Path] = field(default_factory=dict)
    #: Conditions that make the numbers hard to interpret (e.g. an image size the policy was not trained on).
    warnings: list[str] = field(default_factory=list)
    #: The config as run: every env knob resolved.
    config: EvalConfig | None = None


def video_paths(specs: list[EpisodeSpec], video_dir: Path, per_group: int, all_: bool) -> dict[str, str]:
    """Videos for the first `per_group` episodes of each (difficulty, task), or for all of them."""
    return {s.key: str(Path(video_dir) / f"{s.difficulty}_{s.task}_{s.index:04d}.mp4")
            for s in specs if all_ or s.index < per_group}


def policy_label(spec: str, policy: Policy) -> str:
    """Short name for tables: the checkpoint's file name, else the policy's own name (expert, sb3:ppo.zip...)."""
    return Path(spec).name if spec.endswith(".ckpt") else policy.name


def _outcome_knobs(config: dict) -> dict:
    """The knobs of a results file's (or journal's) config that decide its episodes' outcomes."""
    config = dict(config)
    if "deployment" in config:  # results written before the stack was a config field: its path, then content
        config["deploy"] = config.pop("deployment")
    flat = {"deploy": to_dict(DeployConfig()), "target_halfwidth": None, **config, **config.get("env", {})}
    return {k: v for k, v in flat.items() if k not in (*_RESUMABLE, "env", "pool", "cluster")}


def evaluation_id(cfg: EvalConfig) -> str:
    """A short hash of what decides the episodes' outcomes: two runs with one id make the same episodes (and
    videos), so one may resume or replace the other's."""
    text = json.dumps(_outcome_knobs(to_dict(cfg)), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _resumed(cfg: EvalConfig) -> tuple[dict[str, EpisodeRecord], list[EpisodeRecord]]:
    """Finished episodes of an earlier run of the same evaluation in `cfg.out` (its results.json and its episode
    journal), and those only the journal holds; refuse to overwrite another evaluation's."""
    if cfg.out is None:
        return {}, []
    found: list[tuple[str, dict, list[EpisodeRecord]]] = []
    if (cfg.out / "results.json").is_file():
        try:
            results = read_results(cfg.out)
        except MvlaError:
            raise OutputError(f"--out {cfg.out} holds an unreadable results.json; delete it or choose another "
                              "--out") from None
        found.append((results.policy, results.config, results.episodes))
    try:
        journal = read_journal(cfg.out)
    except MvlaError as err:
        raise OutputError(str(err)) from None
    if journal is not None:
        found.append((journal[0].get("policy"), journal[0]["config"], journal[1]))
    mine = _outcome_knobs(to_dict(cfg))
    done: dict[str, EpisodeRecord] = {}
    for policy, config, records in found:
        if _outcome_knobs(config) != mine:
            raise OutputError(f"--out {cfg.out} holds results of another evaluation ({policy}); choose "
                              "another --out, or delete that folder to replace them")
        done.update({r.key: r for r in records if r.key not in done})
    journaled = journal[1] if journal is not None else []
    return done, journaled


def as_trained(cfg: EvalConfig, policy: Policy) -> EvalConfig:
    """`cfg` with every unset env knob taken from what `policy` was trained with (else its default), and the action
    layout checked: a policy emitting another layout than the env's would drive it wrongly."""
    from mobile_vla_sim.policies.registry import check_drive

    resolved = replace(cfg, env=cfg.env.resolved({"drive": policy.drive, **policy.trained_env}))
    check_drive(policy, resolved.env.drive, cfg.policy)
    return resolved


def mismatch_warnings(policy: Policy, cfg: EvalConfig) -> list[str]:
    """What differs between the data a policy was trained on (and `--offline-data`) and this evaluation."""
    from mobile_vla_sim.datasets.manifest import load_manifest

    trained, env = policy.trained_env, to_dict(cfg.env)
    out = [f"the policy was trained on {k}={trained[k]!r} but is evaluated with --{k.replace('_', '-')} {env[k]!r}; "
           f"leave --{k.replace('_', '-')} unset to evaluate it as trained" for k in ENV_DEFAULTS
           if k in trained and trained[k] != env[k]]
    if cfg.offline_data is not None:
        data = ((load_manifest(cfg.offline_data) or {}).get("config") or {})
        out += [f"--offline-data {cfg.offline_data} has {k}={data[k]!r}, the policy {trained.get(k, env[k])!r}: "
                "offline metrics compare unlike data" for k in ("image_size", "drive")
                if k in data and data[k] != trained.get(k, env[k])]
    return out


def load_eval_policy(cfg: EvalConfig) -> Policy:
    """The policy `cfg` evaluates, loaded as evaluation loads it."""
    from mobile_vla_sim.policies.registry import load_policy, parse_policy_args

    return load_policy(cfg.policy, drive=cfg.env.drive, device=cfg.device, offline_data=cfg.offline_data,
                       seed=cfg.seed, policy_args=parse_policy_args(cfg.policy_args), dtype=cfg.dtype,
                       task_family=cfg.env.task_family)


def _shard(task: tuple[EvalConfig, list[EpisodeSpec], dict[str, str], RecordPlan | None]) -> list[EpisodeRecord]:
    """One Ray task: load the policy where the task runs and roll out its episodes in this process."""
    cfg, specs, videos, record = task
    policy = load_eval_policy(cfg)
    try:
        result = eval_policy(policy, specs, cfg.env, deploy=cfg.deploy, pool=cfg.pool, videos=videos, record=record,
                             progress=False)
    finally:
        policy.close()
    if result.error is not None:
        raise result.error
    return result.results


def _rollouts_on_ray(cfg: EvalConfig, specs: list[EpisodeSpec], videos: dict[str, str], record: RecordPlan | None,
                     progress: bool, on_record: Callable[[EpisodeRecord], None] | None = None) -> RolloutResult:
    """`specs` in shards of `cfg.ray_shard` episodes as Ray tasks (one CPU, or one GPU with a cuda device, each).

    Episodes are seeded one by one and inference is batch-invariant, so the records equal a local run's whatever
    the sharding. Finished shards are kept when another fails or on Ctrl-C. Paths are made absolute: on a cluster
    the checkpoint and the video and recording folders must be on a file system every node shares.
    """
    from mobile_vla_sim.backends import Resources, run_tasks
    from mobile_vla_sim.progress import bar as progress_bar

    policy = str(Path(cfg.policy).resolve()) if Path(cfg.policy).is_file() else cfg.policy
    shard_cfg = replace(cfg, policy=policy, out=None, video_dir=None, offline_data=None, record=None,
                        pool=replace(cfg.pool, workers=1))
    videos = {k: str(Path(v).resolve()) for k, v in videos.items()}
    record = record.resolved() if record is not None else None
    shards = [specs[i:i + cfg.ray_shard] for i in range(0, len(specs), cfg.ray_shard)]
    tasks = [(shard_cfg, shard, {s.key: videos[s.key] for s in shard if s.key in videos}, record)
             for shard in shards]
    records: list[EpisodeRecord] = []
    errors: list[BaseException] = []
    bar = progress_bar(total=len(specs), desc=f"eval {Path(cfg.policy).name} on ray", unit="ep", enabled=progress)

    def collect(outcome) -> None:
        if outcome.error is not None:
            errors.append(outcome.error)
            return
        records.extend(outcome.result)
        bar.update(len(outcome.result))
        try:
            for record in outcome.result:
                if on_record is not None:
                    on_record(record)
        except MvlaError as err:  # e.g. a full disk under the journal: the records stay in memory
            errors.append(err)

    start, interrupted = time.perf_counter(), False
    gpus = 1.0 if cfg.device.startswith("cuda") else 0.0
    try:
        run_tasks(_shard, tasks, backend="ray", resources=Resources(num_cpus=1, num_gpus=gpus), on_result=collect,
                  ray_address=cfg.cluster.ray_address)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    error = None
    if errors:
        first = errors[0]
        error = first if isinstance(first, MvlaError) else EvalError(
            f"{len(errors)} of {len(tasks)} Ray eval tasks failed ({type(first).__name__}: {first})")
    return RolloutResult(records, interrupted, time.perf_counter() - start, error)


@functools.lru_cache(maxsize=8192)
def _confidence_sequence(successes: int, trials: int) -> tuple[float, float]:
    """`stats.rate_confidence_sequence` at 95%, remembered: a run re-reads its growing prefix after every batch."""
    from mobile_vla_sim.eval.stats import rate_confidence_sequence

    return rate_confidence_sequence(successes, trials)


def stopping_record(order: list[EpisodeSpec], records: dict[str, EpisodeRecord], halfwidth: float) -> dict:
    """Where an evaluation run in `order` stops: the shortest finished prefix whose anytime-valid 95% interval of the
    success rate (`stats.rate_confidence_sequence`) is at most +-`halfwidth`, else the whole finished prefix.
    Only the prefix counts (never an episode that happened to finish early past it), so the stop does not depend
    on how many workers ran the episodes."""
    k = n = 0
    interval = (0.0, 1.0)
    for spec in order:
        if spec.key not in records:
            break
        k, n = k + bool(records[spec.key].success), n + 1
        interval = _confidence_sequence(k, n)
        if (interval[1] - interval[0]) / 2 <= halfwidth:
            break
    reached = n > 0 and (interval[1] - interval[0]) / 2 <= halfwidth
    return {"target_halfwidth": halfwidth, "reached": reached, "episodes": n, "budget": len(order), "successes": k,
            "rate": k / n if n else float("nan"), "confidence_sequence": list(interval), "confidence": 0.95,
            "counted": [s.key for s in order[:n]]}


def _until_narrow(order: list[EpisodeSpec], done: dict[str, EpisodeRecord], halfwidth: float, batch: int,
                  rollout) -> tuple[RolloutResult, dict]:
    """Roll out `order` in batches until `stopping_record` stops (or the budget is spent); episodes finished in an
    earlier run are not run again. Returns every rollout made and the stopping record."""
    records, made, seconds = dict(done), [], 0.0
    for start in range(0, len(order) + 1, batch):
        stop = stopping_record(order, records, halfwidth)
        if stop["reached"] or stop["episodes"] == len(order):
            break
        todo = [s for s in order[start:start + batch] if s.key not in records]
        if not todo:
            continue
        result = rollout(todo)
        made += result.results
        seconds += result.seconds
        records.update({r.key: r for r in result.results})
        if result.interrupted:
            return RolloutResult(made, True, seconds, result.error), stopping_record(order, records, halfwidth)
    return RolloutResult(made, False, seconds), stopping_record(order, records, halfwidth)


def evaluate(cfg: EvalConfig, policy: Policy | None = None, progress: bool = True) -> EvalResult:
    """Score the policy closed-loop on the fixed episode set (and offline when `offline_data` is given).

    `policy`: an already loaded policy (it stays open); by default `cfg.policy` is loaded here and closed after.
    Outputs are checked before any episode runs; finished episodes of an interrupted run in `cfg.out` are kept.
    """
    from mobile_vla_sim.backends import check_backend

    check_backend(cfg.cluster.backend)
    for path, option in ((cfg.out, "--out"), (cfg.video_dir, "--video-dir"), (cfg.record, "--record")):
        if path is not None:
            check_output_dir(path, option)
    owned = policy is None
    policy = load_eval_policy(cfg) if owned else policy
    try:
        if cfg.cluster.backend == "ray" and policy.max_slots:  # each Ray task would open its own client to the one
            raise EvalError(f"{cfg.policy} runs {policy.max_slots} episode(s) at a time; evaluate it with "  # server
                            "--backend local")
        cfg = as_trained(cfg, policy)
        specs = episode_set(cfg.seed, cfg.difficulty, cfg.task, cfg.episodes, cfg.env.task_family)
        done, journaled = _resumed(cfg)
        todo = [s for s in specs if s.key not in done]
        label = policy_label(cfg.policy, policy)
        warnings = mismatch_warnings(policy, cfg)
        offline = None
        if cfg.offline_data is not None:
            from mobile_vla_sim.eval.offline import offline_metrics

            offline = offline_metrics(policy, cfg.offline_data).to_dict()
        videos = video_paths(todo, cfg.video_dir, cfg.videos_per_group, cfg.video_all) if cfg.video_dir else {}
        order = {s.key: n for n, s in enumerate(specs)}
        record = None
        if cfg.record is not None:
            Path(cfg.record).mkdir(parents=True, exist_ok=True)
            record = RecordPlan(str(cfg.record), cfg.seed, label, order)
        if videos:
            from mobile_vla_sim.eval.video import claim_videos

            claim_videos(cfg.video_dir, videos.values(), evaluation_id(cfg))
        journal = None if cfg.out is None else EpisodeJournal(cfg.out, label, to_dict(cfg), journaled)
        on_record = None if journal is None else journal.append

        def rollout(batch: list[EpisodeSpec]) -> RolloutResult:
            shown = {s.key: videos[s.key] for s in batch if s.key in videos}
            if cfg.cluster.backend == "ray":
                return _rollouts_on_ray(cfg, batch, shown, record, progress, on_record)
            return eval_policy(policy, batch, cfg.env, deploy=cfg.deploy, pool=cfg.pool, videos=shown,
                               record=record, progress=progress, on_record=on_record)

        stopping = None
        try:
            if cfg.target_halfwidth is None:
                result = rollout(todo)
            else:  # batches of twice the concurrent episodes: few wasted past the stop, workers kept busy
                slots = (cfg.pool.workers or os.cpu_count() or 1) * cfg.pool.envs_per_worker
                result, stopping = _until_narrow(interleaved(specs), done, cfg.target_halfwidth, max(8, 2 * slots),
                                                 rollout)
        finally:
            if journal is not None:
                journal.close()
        stats = policy.stats()
    finally:
        if owned:
            policy.close()
    records = sorted([*done.values(), *result.results], key=lambda r: order.get(r.key, len(order)))
    if stopping is not None:  # only the prefix up to the stop counts
        counted = set(stopping.pop("counted"))
        records = [r for r in records if r.key in counted]
    family = get_family(cfg.env.task_family)
    aggregates = aggregate(records, family)
    paths: dict[str, Path] = {}
    if cfg.record is not None:
        paths["recordings"] = cfg.record
        label_recordings(cfg.record, records, order)
    rate = 60.0 * len(result.results) / max(result.seconds, 1e-9)
    interrupted = result.interrupted if stopping is not None else len(records) < len(specs)
    if cfg.out is not None:
        try:
            paths |= write_results(cfg.out, policy=label, config=to_dict(cfg), records=records,
                                   aggregates=aggregates, offline=offline, interrupted=interrupted, stopping=stopping,
                                   throughput={"episodes": len(result.results), "seconds": result.seconds,
                                               "episodes_per_min": rate, "policy": stats},
                                   real_trials=family.real_trials)
        except OSError as err:  # a full disk at the very end: the journal already holds the finished episodes
            raise OutputError(f"cannot write the results into {cfg.out} ({err.strerror or err}); the finished "
                              f"episodes are kept in {journal.path}: free space and run the same command again "
                              "to write them") from None
        journal.path.unlink(missing_ok=True)  # results.json now holds every finished episode
    if result.error is not None:
        raise type(result.error)(f"{result.error}; the {len(records)} finished episodes are saved in {cfg.out}: run "
                                 "the same command again to finish the rest") from result.error
    return EvalResult(policy=label, records=records, aggregates=aggregates, offline=offline, interrupted=interrupted,
                      episodes_per_min=rate, paths=paths, warnings=warnings, config=cfg)


def __getattr__(name: str):
    """Names that moved or are gone since the reorganisation (`mobile_vla_sim.moved`)."""
    return moved_name(__name__, name)
