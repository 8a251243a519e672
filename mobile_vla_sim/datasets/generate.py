"""`generate_dataset`: scripted-expert demonstrations written as real-layout HDF5 episodes, in parallel, resumably.

Choices, so that datasets are reproducible and safe to interrupt:
* Episode i is fully determined by (config, i): scene seed from (seed, i // 2) so episodes 2k (left) and 2k+1
  (right) share a scene (the image alone cannot tell the side: good for instruction grounding); `mix` assigns
  difficulties per scene pair in a fixed 2:3:2 easy:medium:hard cycle. The file's date is derived, not wall-clock.
* Every expert episode is kept, failed ones too, with `success` recorded; `EpisodeDataset(only_success=True)`
  filters. Dropping failures silently would bias the data and hide expert regressions.
* Workers (spawn context: PyBullet/EGL must not be forked) write files atomically and ignore SIGINT; the parent
  owns Ctrl-C, terminates them and keeps `dataset.json` valid after every finished episode. Re-running skips
  finished files and removes stale temporaries; a folder made with another config is refused.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Iterator

import gymnasium
import numpy as np
from tqdm.auto import tqdm

from mobile_vla_sim import __version__
from mobile_vla_sim.errors import ConfigMismatchError, CorruptEpisodeError, DatasetError
from mobile_vla_sim.datasets.hdf5_format import (Episode, episode_file_name, parse_episode_name, read_episode,
                                                 write_episode)
from mobile_vla_sim.datasets.manifest import (action_moments, assign_split, load_manifest, merge_action_stats,
                                              write_manifest)
from mobile_vla_sim.envs import ENV_ID
from mobile_vla_sim.envs.actions import check_drive, to_action3
from mobile_vla_sim.envs.difficulty import DIFFICULTIES
from mobile_vla_sim.envs.nav_env import CONTROLS
from mobile_vla_sim.envs.sim import BRAKE_TIME, CONTROL_PERIOD, RENDERERS

FORMAT = "mobile-vla-sim/hdf5-episodes/v1"
#: `mix`: difficulty of scene pair k is MIX_CYCLE[k % 7], the real project's planned 2:3:2 easy:medium:hard.
MIX_CYCLE = ("easy", "easy", "medium", "medium", "medium", "hard", "hard")
#: Synthetic "collection" clock: a day derived from the seed, then one episode every 30 s from 09:00.
_EPOCH, _EPISODE_SPACING_S = datetime(2025, 1, 1, 9, 0, 0), 30
#: Config fields that do not change the content of episode i (the episode count may grow on resume).
_FREE_FIELDS = ("episodes", "out", "workers")
#: The parent rewrites dataset.json at most this often while workers run (after every episode it grew quadratically
#: and took CPU from the workers); finished files are the ground truth on resume, and the final write is in `finally`.
MANIFEST_EVERY_S = 2.0


@dataclass
class GenerateConfig:
    """What `mvla-sim generate` makes. Everything but `out`, `workers` and `episodes` fixes a dataset's content."""

    episodes: int = 500
    out: Path = Path("data/sim")
    difficulty: str = "mix"  # easy | medium | hard | mix
    workers: int = 0  # 0 = one per CPU
    seed: int = 0
    image_size: int = 224
    drive: str = "diff"  # diff | omni
    noise_std: float = 0.0  # executed-action noise (action units); the clean expert label is stored too
    control: str = "continuous"  # the env's (and eval's) default; "pulse" is the real robot's stop-and-go
    renderer: str = "tiny"  # "egl": PyBullet's OpenGL plugin (fast on a GPU; its images differ from TinyRenderer's)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        check = [
            (self.episodes >= 1, f"--episodes must be >= 1, got {self.episodes}"),
            (self.difficulty in (*DIFFICULTIES, "mix"), f"unknown difficulty {self.difficulty!r}; use one of "
                                                        f"{', '.join((*DIFFICULTIES, 'mix'))}"),
            (self.workers >= 0, f"--workers must be >= 0 (0 = one per CPU), got {self.workers}"),
            (16 <= self.image_size <= 1024, f"--image-size must be in 16..1024, got {self.image_size}"),
            (np.isfinite(self.noise_std) and self.noise_std >= 0, f"--noise-std must be >= 0, got {self.noise_std}"),
            (self.control in CONTROLS, f"unknown control {self.control!r}; use one of {', '.join(CONTROLS)}"),
            (self.renderer in RENDERERS, f"unknown renderer {self.renderer!r}; use one of {', '.join(RENDERERS)}"),
        ]
        for ok, message in check:
            if not ok:
                raise DatasetError(message)
        try:
            check_drive(self.drive)
        except ValueError as err:
            raise DatasetError(str(err)) from err

    def content(self) -> dict[str, Any]:
        """The fields that define episode content, as recorded in and compared against `dataset.json`."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _FREE_FIELDS}


@dataclass(frozen=True)
class EpisodeSpec:
    """Everything a worker needs to make episode `index`, derived from the config alone."""

    index: int
    scene_seed: int
    expert_seed: int
    task: str
    difficulty: str

    @property
    def tag(self) -> str:
        """The `<index>` token closing the file name; how resume finds an episode's file."""
        return f"{self.index:06d}"


@dataclass
class GenerateSummary:
    """Outcome of one `generate_dataset` call; throughput counts only the episodes made in this call."""

    out: Path
    episodes: int
    generated: int
    skipped: int
    successes: int
    frames: int
    seconds: float

    @property
    def success_rate(self) -> float:
        return self.successes / self.episodes if self.episodes else 0.0

    @property
    def episodes_per_s(self) -> float:
        return self.generated / self.seconds if self.seconds > 0 else 0.0

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        return (f"{self.episodes} episodes in {self.out} ({self.generated} new, {self.skipped} already there), "
                f"expert success {self.success_rate:.1%}; {self.episodes_per_s:.2f} episodes/s, "
                f"{self.frames_per_s:.1f} frames/s")


def _derived_seed(*words: int) -> int:
    return int(np.random.SeedSequence(list(words)).generate_state(1)[0])


def episode_specs(cfg: GenerateConfig) -> list[EpisodeSpec]:
    """The plan: episode i's scene seed, expert seed, task and difficulty, a pure function of (cfg, i)."""
    specs = []
    for i in range(cfg.episodes):
        pair = i // 2
        difficulty = MIX_CYCLE[pair % len(MIX_CYCLE)] if cfg.difficulty == "mix" else cfg.difficulty
        specs.append(EpisodeSpec(index=i, scene_seed=_derived_seed(cfg.seed, pair), expert_seed=_derived_seed(
            cfg.seed, i, 1), task=("left", "right")[i % 2], difficulty=difficulty))
    return specs


def _collection_time(cfg: GenerateConfig, index: int) -> datetime:
    day = _derived_seed(cfg.seed, 2**31) % 365
    return _EPOCH + timedelta(days=day, seconds=index * _EPISODE_SPACING_S)


def _time_period(moment: datetime) -> str:
    return "morning" if moment.hour < 12 else "afternoon" if moment.hour < 17 else "evening" if moment.hour < 21 \
        else "night"


class EpisodeMaker:
    """Runs the scripted expert in one env (kept across episodes) and writes each episode to `out`."""

    def __init__(self, cfg: GenerateConfig):
        from mobile_vla_sim.envs.expert import ScriptedExpert  # the env package registers MobileVLA/Nav-v0

        self.cfg, self._expert_cls = cfg, ScriptedExpert
        self.env = gymnasium.make(ENV_ID, drive=cfg.drive, control=cfg.control, image_size=cfg.image_size,
                                  renderer=cfg.renderer,
                                  difficulty="easy" if cfg.difficulty == "mix" else cfg.difficulty)

    def close(self) -> None:
        self.env.close()

    def rollout(self, spec: EpisodeSpec) -> tuple[Episode, dict[str, Any]]:
        """One expert episode as a record (file name not yet set) plus the final `info`."""
        obs, info = self.env.reset(seed=spec.scene_seed, options={"task": spec.task, "difficulty": spec.difficulty})
        expert = self._expert_cls(drive=self.cfg.drive, noise_std=self.cfg.noise_std, seed=spec.expert_seed)
        expert.reset(spec.task)
        zero = np.zeros(3, np.float32)
        steps = [(obs, info["robot_pose"], zero, zero)]  # frame 0: episode_start, zero action
        done = False
        while not done:
            executed, label = expert.act_with_label(obs)
            obs, _, terminated, truncated, info = self.env.step(executed)
            done = terminated or truncated
            steps.append((obs, info["robot_pose"], to_action3(executed, self.cfg.drive),
                          to_action3(label, self.cfg.drive)))
        observations, poses, actions, labels = zip(*steps)
        record = Episode(
            images=np.stack([o["image"] for o in observations]), actions=np.stack(actions),
            instruction=info["instruction"], name="", task=spec.task, difficulty=spec.difficulty,
            seed=spec.scene_seed, scenario=info["scenario"], success=bool(info["success"]),
            robot_poses=np.asarray(poses, np.float32), states=np.stack([o["state"] for o in observations]),
            action_labels=np.stack(labels) if self.cfg.noise_std > 0 else None)
        return record, info

    def make(self, spec: EpisodeSpec) -> dict[str, Any]:
        """Roll out, name and atomically write episode `spec`; return its manifest entry."""
        record, info = self.rollout(spec)
        moment = _collection_time(self.cfg, spec.index)
        num_boxes = int(info["scenario"].split("box_")[0])
        name = episode_file_name(date=moment.strftime("%Y%m%d"), time=moment.strftime("%H%M%S"),
                                 num_boxes=num_boxes, side=spec.task, variant=info["variant"],
                                 distance=info["obstacle_distance"], difficulty=spec.difficulty, tag=spec.tag)
        record.name = Path(name).stem
        step_s = CONTROL_PERIOD + (BRAKE_TIME if self.cfg.control == "pulse" else 0.0)
        record.attrs = {
            "total_duration": step_s * (record.num_frames - 1),
            "time_period": _time_period(moment),
            "collection_datetime": moment.isoformat(),
            "variant": info["variant"], "distance": info["obstacle_distance"], "num_boxes": num_boxes,
            "episode_index": spec.index, "expert_seed": spec.expert_seed, "generation_seed": self.cfg.seed,
            "drive": self.cfg.drive, "control": self.cfg.control, "image_size": self.cfg.image_size,
            "noise_std": self.cfg.noise_std, "generator": f"mobile-vla-sim {__version__}",
            **{key: bool(info[key]) for key in ("collision", "wrong_side", "out_of_bounds")},
            **{key: float(info[key]) for key in ("distance_to_goal", "path_length", "shortest_path_length")},
        }
        path = write_episode(self.cfg.out / name, record)
        return episode_entry(path, record)


def episode_entry(path: Path, record: Episode) -> dict[str, Any]:
    """Manifest entry of a written episode; `_moments` (action statistics input) is stripped before saving."""
    return {"index": int(record.attrs["episode_index"]), "file": path.name, "seed": record.seed,
            "expert_seed": record.attrs.get("expert_seed"), "task": record.task, "difficulty": record.difficulty,
            "scenario": record.scenario, "instruction": record.instruction, "split": assign_split(record.seed),
            "success": record.success, "collision": record.attrs.get("collision"), "num_frames": record.num_frames,
            "_moments": action_moments(record.targets[1:])}


# --- worker processes --------------------------------------------------------------------------------------------
_MAKER: EpisodeMaker | None = None


def _init_worker(cfg: GenerateConfig) -> None:
    global _MAKER
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and terminates the pool
    _MAKER = EpisodeMaker(cfg)


def _work(spec: EpisodeSpec) -> dict[str, Any]:
    assert _MAKER is not None, "worker used before _init_worker"
    return _MAKER.make(spec)


def _run(cfg: GenerateConfig, todo: list[EpisodeSpec], workers: int) -> Iterator[dict[str, Any]]:
    """Entries of `todo` as they finish: in-process for one worker, else a spawn pool (terminated on exit)."""
    if workers == 1:
        maker = EpisodeMaker(cfg)
        try:
            yield from map(maker.make, todo)
        finally:
            maker.close()
        return
    pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(cfg,))
    try:
        yield from pool.imap_unordered(_work, todo)
        pool.close()
    finally:
        pool.terminate()
        pool.join()


# --- the driver --------------------------------------------------------------------------------------------------
def _existing_files(cfg: GenerateConfig) -> dict[int, Path]:
    """Finished episodes by index; removes temporaries left by an interrupted run."""
    for stale in cfg.out.glob(".*.tmp"):
        stale.unlink(missing_ok=True)
    found = {}
    for path in cfg.out.glob("episode_*.h5"):
        tag = parse_episode_name(path.name)["tag"]
        if tag and tag.isdigit():
            found[int(tag)] = path
    return found


def _check_folder(cfg: GenerateConfig) -> None:
    manifest = load_manifest(cfg.out)
    if manifest is None:
        if any(cfg.out.glob("*.h5")):
            raise ConfigMismatchError(f"{cfg.out} holds episode files but no dataset.json, so their config is "
                                      "unknown; generate into an empty or new --out folder")
        return
    old, new = manifest.get("config", {}), cfg.content()
    defaults = {f.name: f.default for f in fields(GenerateConfig)}  # a field added later: old folders had its default
    diff = {k: (old.get(k, defaults[k]), v) for k, v in new.items() if old.get(k, defaults[k]) != v}
    if diff or manifest.get("format") != FORMAT:
        what = ", ".join(f"{k}={a!r} (now {b!r})" for k, (a, b) in diff.items()) or f"format {manifest.get('format')}"
        raise ConfigMismatchError(f"{cfg.out} was generated with {what}; re-run with the same options to resume, "
                                  "or choose a new --out folder")


def _manifest(cfg: GenerateConfig, entries: dict[int, dict[str, Any]], complete: bool) -> dict[str, Any]:
    ordered = [entries[i] for i in sorted(entries)]
    return {
        "format": FORMAT, "package_version": __version__, "config": cfg.content(), "episodes_planned": cfg.episodes,
        "complete": complete, "split_rule": "val when sha256(scene seed) falls in the lowest 10%",
        "success_rate": float(np.mean([e["success"] for e in ordered])) if ordered else None,
        "action_stats": merge_action_stats(e["_moments"] for e in ordered),
        "episodes": [{k: v for k, v in e.items() if not k.startswith("_")} for e in ordered],
    }


def generate_dataset(cfg: GenerateConfig, progress: bool = True) -> GenerateSummary:
    """Make (or finish) the dataset described by `cfg` in `cfg.out`; see the module docstring for the guarantees."""
    cfg.out.mkdir(parents=True, exist_ok=True)
    _check_folder(cfg)
    specs = episode_specs(cfg)
    found = _existing_files(cfg)
    entries: dict[int, dict[str, Any]] = {}
    for spec in specs:
        if spec.index in found:
            try:
                entries[spec.index] = episode_entry(found[spec.index], read_episode(found[spec.index],
                                                                                    load_images=False))
            except CorruptEpisodeError:
                found.pop(spec.index).unlink()  # unreadable (e.g. copied partially): make it again
    todo = [s for s in specs if s.index not in entries]
    write_manifest(cfg.out, _manifest(cfg, entries, complete=not todo))
    workers = min(cfg.workers or os.cpu_count() or 1, max(len(todo), 1))
    start, frames, saved_at = time.perf_counter(), 0, time.perf_counter()
    successes = sum(bool(e["success"]) for e in entries.values())
    with tqdm(total=len(specs), initial=len(entries), unit="ep", desc="generate", disable=not progress,
              dynamic_ncols=True) as bar:
        try:
            for entry in _run(cfg, todo, workers) if todo else ():
                entries[entry["index"]] = entry
                frames += entry["num_frames"]
                successes += bool(entry["success"])
                if time.perf_counter() - saved_at > MANIFEST_EVERY_S:
                    write_manifest(cfg.out, _manifest(cfg, entries, complete=False))
                    saved_at = time.perf_counter()
                bar.set_postfix(success=f"{successes / len(entries):.0%}", refresh=False)
                bar.update()
        finally:  # also on Ctrl-C or a worker error: the manifest lists every finished file
            write_manifest(cfg.out, _manifest(cfg, entries, complete=len(entries) == len(specs)))
    return GenerateSummary(out=cfg.out, episodes=len(entries), generated=len(todo), skipped=len(specs) - len(todo),
                           successes=successes, frames=frames, seconds=time.perf_counter() - start)

