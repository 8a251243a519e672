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

import functools
import operator
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from mobile_vla_sim.version import __version__
from mobile_vla_sim.config import check_knobs, knob, to_dict
from mobile_vla_sim.datasets.hdf5_format import (CAPTURE, Episode, episode_file_name, frame_convention,
                                                 parse_episode_name, read_episode, write_episode)
from mobile_vla_sim.datasets.manifest import (action_moments, assign_split, load_manifest, merge_action_stats,
                                              write_manifest)
from mobile_vla_sim.envs.actions import to_action3
from mobile_vla_sim.envs.config import EnvConfig
from mobile_vla_sim.envs.difficulty import DIFFICULTIES
from mobile_vla_sim.envs.engine import EpisodeSpec, PoolConfig, run_episodes
from mobile_vla_sim.envs.expert import EXPERT_ACTIONS, ExpertPolicy
from mobile_vla_sim.envs.sim import BRAKE_TIME, CONTROL_PERIOD
from mobile_vla_sim.errors import ConfigMismatchError, CorruptEpisodeError, DatasetError
from mobile_vla_sim.paths import check_output_dir

#: v2: the real collector's frame convention (`hdf5_format`, "capture"); v1 folders held "after_move" files.
FORMAT = "mobile-vla-sim/hdf5-episodes/v2"
#: `mix`: difficulty of scene pair k is MIX_CYCLE[k % 7], the real project's planned 2:3:2 easy:medium:hard.
MIX_CYCLE = ("easy", "easy", "medium", "medium", "medium", "hard", "hard")
#: Synthetic "collection" clock: a day derived from the seed within the real data's period (October to December
#: 2025, so the real training configs' file pattern `episode_20251*.h5` finds the files), then one episode every 30 s
#: from 09:00.
_EPOCH, _DAYS, _EPISODE_SPACING_S = datetime(2025, 10, 1, 9, 0, 0), 92, 30
#: The real December 2025 collector grabbed its frame after dropping 3 buffered frames of a 30 fps camera once the
#: move was published: 3 / 30 s = 0.1 s into the 0.4 s move (more with transfer latency; 0.1-0.15 s).
REAL_CAPTURE_DELAY = 0.1
#: Named sets of knob values (`--profile`): a profile fills the knobs left unset; any knob given wins. `real` is the
#: real robot's interface, the data the real project's loaders train on: holonomic base driven by key directions,
#: the keys expert (so `actions[:, :2]` carries the steering), the real wide-angle 16:9 camera (at 640 x 360: their
#: loaders squash frames to 224 anyway, and full 1280 x 720 renders 15x slower; `--image-width 1280` for it), BGR
#: frames as the real collector stored them, the real English instructions.
PROFILES: dict[str, dict[str, Any]] = {
    "sim": {},
    "real": {"drive": "omni", "action_mode": "direction", "expert_actions": "keys", "camera": "real",
             "image_width": 640, "color_order": "bgr", "instructions": "bottle"},
}
#: Knobs that do not change the content of episode i (the episode count may grow on resume).
_FREE_KNOBS = ("episodes", "out", "image_size_limit", "task")  # the pool, a nested config, is never content
#: The parent rewrites dataset.json at most this often while workers run (after every episode it grew quadratically
#: and took CPU from the workers); finished files are the ground truth on resume, and the final write is in `finally`.
MANIFEST_EVERY_S = 2.0


@dataclass
class GenerateConfig:
    """What `mvla-sim generate` makes. Everything but `out`, the pool and `episodes` fixes a dataset's content."""

    episodes: int = knob(500, "episodes, balanced left/right (episodes 2k and 2k+1 share a scene)", min=1)
    out: Path = knob(Path("data/sim"), "output folder; re-running the same command resumes it")
    difficulty: str = knob("mix", "easy, medium, hard, or mix (easy:medium:hard 2:3:2 per scene pair)",
                           choices=(*DIFFICULTIES, "mix"))
    seed: int = knob(0, "base seed: the same seed and options give the same files", min=0)
    noise_std: float = knob(0.0, "noise on the executed expert action (fraction of each action limit); the clean "
                            "label is stored as `action_labels`", min=0.0)
    expert_actions: str | None = knob(None, "continuous expert velocities, or keys: the expert presses the real "
                                      "robot's teleop keys (w, q, e, a, d, ...) and records their real labels "
                                      "(components 0 or +-1.15); needs --drive omni --action-mode direction "
                                      "[default: the profile's, else continuous]", choices=EXPERT_ACTIONS)
    capture_delay: float = knob(REAL_CAPTURE_DELAY, "seconds into each move at which the frame stored with it is "
                                "taken, as the real collector's camera (0.1: its December 2025 version; 0: the frame "
                                "just before the move)", min=0.0, max=0.4)
    profile: str = knob("sim", "values for the knobs left unset: " + "; ".join(
        f"{name}: " + (", ".join(f"{k}={v}" for k, v in values.items()) or "the defaults")
        for name, values in PROFILES.items()), choices=tuple(PROFILES))
    env: EnvConfig = field(default_factory=EnvConfig)
    pool: PoolConfig = field(default_factory=PoolConfig)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        check_knobs(self, DatasetError)
        profile = PROFILES[self.profile]
        self.expert_actions = self.expert_actions or profile.get("expert_actions", "continuous")
        self.env = self.env.resolved(profile)  # no policy to take unset knobs from: the profile's, else the defaults
        if self.expert_actions == "keys" and (self.env.drive, self.env.action_mode) != ("omni", "direction"):
            raise DatasetError("--expert-actions keys needs the real robot's interface: add --drive omni "
                               "--action-mode direction (a key sets a direction, not a speed)")

    def content(self) -> dict[str, Any]:
        """The knobs that define episode content, flat, as recorded in and compared against `dataset.json`."""
        flat = {k: v for k, v in to_dict(self).items() if not isinstance(v, dict)}
        flat.update(to_dict(self.env))
        return {k: v for k, v in flat.items() if k not in _FREE_KNOBS}

    def content_defaults(self) -> dict[str, Any]:
        """What an older `dataset.json` that lacks a later knob had: its default."""
        return GenerateConfig(out=self.out).content()

    @property
    def warnings(self) -> list[str]:
        """What a user should know about this data before training on it."""
        if self.env.drive == "diff":
            return ["diff-drive data steers with angular_z, which loaders reading actions[:, :2] (the real project's) "
                    "cannot see; --profile real writes data they train on"]
        return []


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
    """The plan: episode i's scene seed, noise seed, task and difficulty, a pure function of (cfg, i)."""
    specs = []
    for i in range(cfg.episodes):
        pair = i // 2
        difficulty = MIX_CYCLE[pair % len(MIX_CYCLE)] if cfg.difficulty == "mix" else cfg.difficulty
        specs.append(EpisodeSpec(index=i, seed=_derived_seed(cfg.seed, pair), noise_seed=_derived_seed(cfg.seed, i, 1),
                                 task=("left", "right")[i % 2], difficulty=difficulty))
    return specs


def _tag(index: int) -> str:
    """The `<index>` token closing a file name; how resume finds an episode's file."""
    return f"{index:06d}"


def _collection_time(cfg: GenerateConfig, index: int) -> datetime:
    day = _derived_seed(cfg.seed, 2**31) % _DAYS
    return _EPOCH + timedelta(days=day, seconds=index * _EPISODE_SPACING_S)


def _time_period(moment: datetime) -> str:
    return "morning" if moment.hour < 12 else "afternoon" if moment.hour < 17 else "evening" if moment.hour < 21 \
        else "night"


class DemoRecorder:
    """Worker-side handler of the episode engine: collects one expert episode and writes it as an HDF5 file."""

    def __init__(self, cfg: GenerateConfig):
        self.cfg = cfg
        self._zero = np.zeros(3, np.float32)
        self.abort()

    def start(self, spec: EpisodeSpec, obs: dict, info: dict) -> None:
        self.spec = spec
        # Frame 0: episode_start, the start view with a zero action. The state a move is chosen from is the one
        # before it (the expert acts on it), so `states` hold that state, next to the frame taken as the move began.
        self.steps = [(obs["image"], info["robot_pose"], obs["state"], self._zero, self._zero)]
        self._state = obs["state"]

    def step(self, action: np.ndarray, executed: np.ndarray, obs: dict, info: dict, done: bool) -> None:
        drive, capture = self.cfg.env.drive, info["capture"]
        self.steps.append((capture["image"], capture["pose"], self._state, to_action3(executed, drive),
                           to_action3(action, drive)))
        self._state = obs["state"]  # the view after the last move is never stored, as on the real robot

    def finish(self, info: dict, truncated: bool) -> dict[str, Any]:
        """Name and atomically write the episode; return its manifest entry."""
        spec, cfg = self.spec, self.cfg
        images, poses, states, actions, labels = zip(*self.steps)
        self.abort()
        moment = _collection_time(cfg, spec.index)
        num_boxes = int(info["scenario"].split("box_")[0])
        name = episode_file_name(date=moment.strftime("%Y%m%d"), time=moment.strftime("%H%M%S"),
                                 num_boxes=num_boxes, side=spec.task, variant=info["variant"],
                                 distance=info["obstacle_distance"], difficulty=spec.difficulty, tag=_tag(spec.index))
        step_s = CONTROL_PERIOD + (BRAKE_TIME if cfg.env.brakes else 0.0)
        record = Episode(
            images=np.stack(images), actions=np.stack(actions),
            instruction=info["instruction"], name=Path(name).stem, task=spec.task, difficulty=spec.difficulty,
            seed=spec.seed, scenario=info["scenario"], success=bool(info["success"]),
            robot_poses=np.asarray(poses, np.float32), states=np.stack(states),
            action_labels=np.stack(labels) if cfg.noise_std > 0 else None)
        record.attrs = {
            "total_duration": step_s * (record.num_frames - 1),
            "time_period": _time_period(moment),
            "collection_datetime": moment.isoformat(),
            "variant": info["variant"], "distance": info["obstacle_distance"], "num_boxes": num_boxes,
            "episode_index": spec.index, "expert_seed": spec.noise_seed, "generation_seed": cfg.seed,
            "drive": cfg.env.drive, "control": cfg.env.control, "action_mode": cfg.env.action_mode,
            "expert_actions": cfg.expert_actions, "camera": cfg.env.camera, "image_size": cfg.env.image_size,
            "color_order": cfg.env.color_order.upper(),
            "noise_std": cfg.noise_std, "generator": f"mobile-vla-sim {__version__}",
            "frame_convention": CAPTURE, "capture_delay": cfg.capture_delay,
            **{key: bool(info[key]) for key in ("collision", "wrong_side", "out_of_bounds")},
            **{key: float(info[key]) for key in ("distance_to_goal", "path_length", "shortest_path_length")},
        }
        path = write_episode(cfg.out / name, record)
        return episode_entry(path, record)

    def abort(self) -> None:
        self.steps: list = []


def episode_entry(path: Path, record: Episode) -> dict[str, Any]:
    """Manifest entry of a written episode; `_moments` (action statistics input) is stripped before saving."""
    return {"index": int(record.attrs["episode_index"]), "file": path.name, "seed": record.seed,
            "expert_seed": record.attrs.get("expert_seed"), "task": record.task, "difficulty": record.difficulty,
            "scenario": record.scenario, "instruction": record.instruction, "split": assign_split(record.seed),
            "success": record.success, "collision": record.attrs.get("collision"), "num_frames": record.num_frames,
            "frame_convention": frame_convention(record.attrs),
            "_moments": action_moments(record.targets[1:])}


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
    defaults = cfg.content_defaults()  # a knob added later: old folders had its default
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
    """Make (or finish) the dataset described by `cfg` in `cfg.out`; see the module docstring for the guarantees.

    Ctrl-C keeps every finished episode (listed in `dataset.json`) and re-raises KeyboardInterrupt.
    """
    check_output_dir(cfg.out, "--out")
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
    start, frames, saved_at = time.perf_counter(), 0, time.perf_counter()

    def keep(entry: dict[str, Any]) -> None:
        nonlocal frames, saved_at
        entries[entry["index"]] = entry
        frames += entry["num_frames"]
        if time.perf_counter() - saved_at > MANIFEST_EVERY_S:
            write_manifest(cfg.out, _manifest(cfg, entries, complete=False))
            saved_at = time.perf_counter()

    result = None
    try:
        if todo:
            env = replace(cfg.env, capture_delay=cfg.capture_delay)  # the frame stored with each move
            result = run_episodes(ExpertPolicy.for_env(cfg.env, cfg.expert_actions), todo, env,
                                  functools.partial(DemoRecorder, cfg), cfg.pool, action_noise=cfg.noise_std,
                                  progress=progress, on_result=keep, desc="generate",
                                  succeeded=operator.itemgetter("success"))
    finally:  # also on a worker error: the manifest lists every finished file
        write_manifest(cfg.out, _manifest(cfg, entries, complete=len(entries) == len(specs)))
    if result is not None and result.error is not None:
        raise result.error  # a worker failed (not Ctrl-C): its one-line message says what to do
    if result is not None and result.interrupted:
        raise KeyboardInterrupt
    return GenerateSummary(out=cfg.out, episodes=len(entries), generated=len(todo), skipped=len(specs) - len(todo),
                           successes=sum(bool(e["success"]) for e in entries.values()), frames=frames,
                           seconds=time.perf_counter() - start)
