"""The cells of a study: nested data subsets, cell keys, and running one cell (train, then evaluate) as an artifact.

* **Data** is generated once (`prepare_data`), then each size gets a folder of links to the generated episode files
  plus a `dataset.json` listing its episodes (`write_subset`): the same validation episodes for every size and the
  first `size` training episodes of one fixed order (`balanced_pairs`). Episodes come in left/right pairs sharing a
  scene (`mvla-sim generate` makes episodes 2k and 2k+1 so), and the order takes whole pairs from per-difficulty
  queues in the generator's 2:3:2 cycle, so every prefix is exactly side-balanced and as close to the difficulty mix
  as a prefix can be; a size effect is never confounded with other episodes. A pair is drawn for validation when
  its scene's hash falls below `val_fraction` (as the generator's own split), so growing the data (a larger size)
  never moves a pair between train and val, and the subset's `dataset.json` records that split, which every reader
  (`datasets.splits`) then uses: training's val loss, offline RMSE and `compare` all see the same val episodes.
* **A cell** (mode × size × seed) is the folder `cells/<key>/`: `policy.ckpt`, `eval/` and, written atomically
  last, `cell.json`, whose presence alone marks the cell finished. The key hashes everything that can change the
  cell's numbers (`cell_identity`); an interrupted cell resumes where it stopped (training from
  `policy.ckpt.resume.pt`, evaluation from its finished episodes). The noise floor evaluates one cell per mode again
  on a second, disjoint episode set, into `cells/<key>/eval-seed<S>/` (`noise_tasks`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mobile_vla_sim.version import __version__
from mobile_vla_sim.config import build
from mobile_vla_sim.datasets.generate import MIX_CYCLE, generate_dataset
from mobile_vla_sim.datasets.manifest import MANIFEST_NAME, load_manifest, split_digest, write_manifest
from mobile_vla_sim.errors import ConfigError
from mobile_vla_sim.io import atomic_write
from mobile_vla_sim.study.spec import StudySpec

CELL_FILE = "cell.json"
KEY_CHARS = 16


def digest(value: Any) -> str:
    """A short, stable hash of a JSON-able value (key order does not count)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:KEY_CHARS]


# --- data: generated once, nested subsets ---------------------------------------------------------------------
@dataclass(frozen=True)
class Pair:
    """A left/right pair of episodes of one scene (manifest entries of the generated dataset)."""

    left: dict
    right: dict

    @property
    def difficulty(self) -> str:
        return self.left["difficulty"]

    @property
    def entries(self) -> tuple[dict, dict]:
        return self.left, self.right


def scene_pairs(entries: list[dict]) -> list[Pair]:
    """Complete pairs (episode 2k left, 2k+1 right) whose two expert demonstrations both succeeded, in index order."""
    by_index = {e["index"]: e for e in entries}
    pairs = []
    for k in range(0, max(by_index, default=-1) + 1, 2):
        left, right = by_index.get(k), by_index.get(k + 1)
        if left and right and left["success"] and right["success"]:
            pairs.append(Pair(left, right))
    return pairs


def balanced_pairs(pairs: list[Pair]) -> list[Pair]:
    """`pairs` reordered so every prefix follows the 2:3:2 difficulty cycle (over the difficulties present); stops
    when a difficulty runs out, so no prefix is unbalanced. Each difficulty's pairs keep their index order, so the
    order of the first pairs never changes when more data is generated."""
    queues: dict[str, list[Pair]] = {}
    for pair in pairs:
        queues.setdefault(pair.difficulty, []).append(pair)
    cycle = [d for d in MIX_CYCLE if d in queues] or list(queues)
    taken = {d: 0 for d in queues}
    out: list[Pair] = []
    while cycle:
        for d in cycle:
            if taken[d] == len(queues[d]):
                return out
            out.append(queues[d][taken[d]])
            taken[d] += 1
    return out


@dataclass(frozen=True)
class DataPlan:
    """The study's data: the generated folder, and the val and train pair orders drawn from it."""

    root: Path
    val: tuple[Pair, ...]
    train: tuple[Pair, ...]


def plan_data(root: Path, spec: StudySpec) -> DataPlan:
    """Val pairs (the first `val_episodes / 2` of the hash-drawn ones) and the train order, from `root`'s manifest."""
    pairs = scene_pairs((load_manifest(root) or {"episodes": []})["episodes"])
    is_val = [split_digest(p.left["seed"]) < spec.val_fraction for p in pairs]
    val = balanced_pairs([p for p, v in zip(pairs, is_val) if v])[:spec.val_episodes // 2]
    train = balanced_pairs([p for p, v in zip(pairs, is_val) if not v])
    return DataPlan(root, tuple(val), tuple(train))


def _enough(plan: DataPlan, spec: StudySpec) -> bool:
    return 2 * len(plan.val) >= spec.val_episodes and 2 * len(plan.train) >= max(spec.sizes)


def prepare_data(spec: StudySpec, data_dir: Path, workers: int = 0, progress: bool = True, echo=print) -> DataPlan:
    """Generate (or resume, or grow) the study's dataset until it holds `val_episodes` and the largest size.

    Without `generate.episodes` in the spec the episode count is estimated from the val fraction and grown (by
    resuming generation: episode i depends only on i) until enough successful, balanced pairs exist. With it, that
    many are generated and a shortfall is a one-line error.
    """
    fixed = spec.generate.get("episodes")
    f = spec.val_fraction
    slack = len(MIX_CYCLE) if spec.generate_config(data_dir).difficulty == "mix" else 1  # the cycle's rounding
    pairs = math.ceil(max(max(spec.sizes) / 2 / (1 - f), spec.val_episodes / 2 / f) * 1.1) + slack
    episodes = int(fixed) if fixed is not None else 2 * pairs
    while True:
        summary = generate_dataset(spec.generate_config(data_dir, episodes, workers), progress=progress)
        if summary.generated:
            echo(f"data: {summary}")
        plan = plan_data(data_dir, spec)
        if _enough(plan, spec):
            return plan
        if fixed is not None:
            raise ConfigError(f"generate.episodes {fixed} gives {2 * len(plan.train)} balanced training and "
                              f"{2 * len(plan.val)} validation episodes, fewer than the largest size "
                              f"{max(spec.sizes)} or val_episodes {spec.val_episodes}; raise generate.episodes or "
                              "drop it (the study then generates as many as needed)")
        episodes = 2 * math.ceil(episodes / 2 * 1.25)


def write_subset(plan: DataPlan, size: int, out: Path) -> Path:
    """Folder `out`: links to the val episodes and the first `size` train episodes, and their `dataset.json` (the
    generated one's, with only these episodes and their split fixed), rewritten identically on every run."""
    manifest = load_manifest(plan.root)
    chosen = [(e, "val") for p in plan.val for e in p.entries]
    chosen += [(e, "train") for p in plan.train[:size // 2] for e in p.entries]
    out.mkdir(parents=True, exist_ok=True)
    for entry, _ in chosen:
        link = out / entry["file"]
        if not link.is_symlink():
            link.symlink_to(os.path.relpath(plan.root / entry["file"], out))
    subset = {**manifest, "episodes": [{**e, "split": split} for e, split in chosen],
              "split_rule": "study subset: the study's fixed val episodes and the first training episodes of its "
                            "balanced order", "source": str(plan.root)}
    old = load_manifest(out) if (out / MANIFEST_NAME).is_file() else None
    if old != json.loads(json.dumps(subset)):
        write_manifest(out, subset)
    return out


# --- cells ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CellTask:
    """Everything a worker needs to run one cell (picklable: Ray ships it)."""

    key: str
    name: str
    mode: str
    size: int
    seed: int
    dir: Path
    data: Path
    identity: dict
    train: dict  # flat TrainConfig values
    eval: dict  # flat EvalConfig values, but policy/out/offline data/pool
    threads: int
    val_episodes: int
    progress: bool = False  # progress bars of training and eval (the local backend, on a terminal)


def cell_identity(spec: StudySpec, mode: str, size: int, seed: int) -> dict:
    """What the cell key hashes: everything that can change the cell's numbers. Not the backend, cores, paths or
    report options. The package version is in, so results of another release are never mixed in."""
    gen = spec.generate_config(Path("data"))
    train = spec.train_values(mode, seed, Path("data"), Path("cell.ckpt"))
    for path_knob in ("data", "out", "resume"):
        train.pop(path_knob)
    return {"version": __version__, "data": gen.content(), "val_fraction": spec.val_fraction,
            "val_episodes": spec.val_episodes, "size": size, "train": train, "eval": spec.eval_values()}


def cell_name(mode: str, size: int, seed: int) -> str:
    return f"{mode}-n{size}-s{seed}"


def cell_tasks(spec: StudySpec, out: Path, subsets: dict[int, Path], threads: int, progress: bool = False
               ) -> list[CellTask]:
    tasks = []
    for size in spec.sizes:
        for seed in spec.seeds:
            for mode in spec.modes:
                identity = cell_identity(spec, mode, size, seed)
                key = digest(identity)
                folder = out / "cells" / key
                train = spec.train_values(mode, seed, subsets[size], folder / "policy.ckpt")
                tasks.append(CellTask(key, cell_name(mode, size, seed), mode, size, seed, folder, subsets[size],
                                      identity, train, spec.eval_values(), threads, spec.val_episodes, progress))
    return tasks


def finished_cell(folder: Path, key: str) -> dict | None:
    """The `cell.json` of a finished cell with this key, or None (absent, unreadable or another key)."""
    try:
        cell = json.loads((folder / CELL_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return cell if cell.get("key") == key else None


def _rate(stats: dict) -> dict:
    return {k: stats["success"][k] for k in ("rate", "k", "n", "ci95")}


def run_cell(task: CellTask) -> dict:
    """Train and evaluate one cell (resuming what an interrupted run left), write `cell.json` last; its content."""
    import torch

    from mobile_vla_sim.eval.schema import json_safe
    from mobile_vla_sim.eval.run import EvalConfig, evaluate
    from mobile_vla_sim.policies.checkpoint import read_checkpoint_config
    from mobile_vla_sim.policies.config import TrainConfig
    from mobile_vla_sim.policies.train import train

    done = finished_cell(task.dir, task.key)
    if done is not None:  # e.g. Ray retried a task whose worker died after writing it
        return done
    torch.set_num_threads(task.threads)
    task.dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    train_cfg = build(TrainConfig, task.train)
    train(train_cfg, progress=task.progress)
    trained = time.perf_counter()
    eval_dir = task.dir / "eval"
    result = evaluate(build(EvalConfig, {**task.eval, "policy": str(train_cfg.out), "out": eval_dir,
                                         "offline_data": task.data, "workers": task.threads}), progress=task.progress)
    if result.interrupted:
        raise KeyboardInterrupt  # the finished episodes are saved in eval/; the next run resumes them
    evaluated = time.perf_counter()
    info = read_checkpoint_config(train_cfg.out)
    aggregates = result.aggregates
    cell = {
        "key": task.key, "name": task.name, "mode": task.mode, "size": task.size, "seed": task.seed,
        "train_episodes": task.size, "val_episodes": len(info.get("val_episodes", [])),
        "val_loss": info["val_loss"], "train_loss": info["train_loss"], "best_epoch": info["epoch"],
        "epochs": train_cfg.epochs, "trainable_params": info["trainable_params"],
        "rmse": result.offline["rmse"] if result.offline else None,
        "success": {"all": _rate(aggregates["overall"]),
                    **{d: _rate(s) for d, s in aggregates["by_difficulty"].items()}},
        "wrong_side_rate": aggregates["overall"]["wrong_side_rate"],
        "collision_rate": aggregates["overall"]["collision_rate"],
        "seconds": {"train": trained - start, "eval": evaluated - trained, "total": evaluated - start},
        "threads": task.threads, "host": platform.node(), "checkpoint": "policy.ckpt", "eval_dir": "eval",
        "identity": task.identity,
    }
    atomic_write(task.dir / CELL_FILE, json.dumps(json_safe(cell), indent=1) + "\n")
    return cell


# --- paired comparisons (frozen vs LoRA, one per size and seed) ------------------------------------------------
@dataclass(frozen=True)
class CompareTask:
    key: str
    size: int
    seed: int
    dir: Path
    cells: tuple[Path, Path]  # folders of A (frozen) and B (lora)
    data: Path
    options: dict
    threads: int


def compare_tasks(spec: StudySpec, out: Path, cells: list[CellTask]) -> list[CompareTask]:
    by = {(c.mode, c.size, c.seed): c for c in cells}
    tasks = []
    if set(spec.modes) != {"frozen", "lora"}:
        return tasks
    for size in spec.sizes:
        for seed in spec.seeds:
            a, b = by["frozen", size, seed], by["lora", size, seed]
            key = digest({"a": a.key, "b": b.key, "compare": spec.compare})
            tasks.append(CompareTask(key, size, seed, out / "compare" / key, (a.dir, b.dir), a.data, spec.compare,
                                     a.threads))
    return tasks


def run_compare(task: CompareTask) -> dict:
    """`mvla-sim compare` of the two cells into a temporary folder, renamed into place when complete."""
    import torch

    from mobile_vla_sim.analysis.compare import CompareConfig, compare

    done = task.dir / "compare.json"
    if done.is_file():
        return json.loads(done.read_text())
    torch.set_num_threads(task.threads)
    tmp = task.dir.with_name(f".{task.dir.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    a, b = task.cells
    result = compare(build(CompareConfig, {**task.options, "checkpoint_a": a / "policy.ckpt",
                                           "checkpoint_b": b / "policy.ckpt", "data": task.data,
                                           "eval_dirs": (a / "eval", b / "eval"), "out": tmp}), progress=False)
    shutil.rmtree(task.dir, ignore_errors=True)
    os.replace(tmp, task.dir)
    return result


# --- the harness's noise floor: one checkpoint on two disjoint episode sets -------------------------------------------
@dataclass(frozen=True)
class NoiseTask:
    """A finished cell's policy evaluated on a second episode set that shares no scene with the first."""

    name: str  # the cell's
    dir: Path
    cell: Path
    eval: dict  # flat EvalConfig values but policy/out/pool
    threads: int


def disjoint_seed(eval_values: dict) -> int:
    """The first episode-set seed after the spec's whose scenes share none with the spec's episode set."""
    from mobile_vla_sim.envs.tasks import DEFAULT_FAMILY
    from mobile_vla_sim.eval.episodes import episode_set

    family = eval_values.get("task_family") or DEFAULT_FAMILY

    def scenes(seed: int) -> set[int]:
        return {s.seed for s in episode_set(seed, eval_values["difficulty"], eval_values["task"],
                                            eval_values["episodes"], family)}

    first, seed = scenes(eval_values["seed"]), eval_values["seed"] + 1
    while scenes(seed) & first:
        seed += 1
    return seed


def noise_tasks(spec: StudySpec, cells: list[CellTask]) -> list[NoiseTask]:
    """One per mode: its first seed's cell at the largest size, evaluated again on a disjoint episode set."""
    values = spec.eval_values()
    seed = disjoint_seed(values)
    chosen = [c for c in cells if c.size == max(spec.sizes) and c.seed == spec.seeds[0]]
    return [NoiseTask(c.name, c.dir / f"eval-seed{seed}", c.dir, {**values, "seed": seed}, c.threads) for c in chosen]


def finished_noise(folder: Path) -> list | None:
    """The episode records of a noise-floor evaluation that ran to its end, else None."""
    from mobile_vla_sim.eval.report import read_results

    if not (folder / "results.json").is_file():
        return None
    results = read_results(folder)
    return None if results.interrupted else results.episodes


def run_noise(task: NoiseTask) -> dict:
    """Evaluate the cell's policy on the second episode set (resumes like any evaluation); its overall success."""
    import torch

    from mobile_vla_sim.eval.run import EvalConfig, evaluate

    torch.set_num_threads(task.threads)
    result = evaluate(build(EvalConfig, {**task.eval, "policy": str(task.cell / "policy.ckpt"), "out": task.dir,
                                         "workers": task.threads}), progress=False)
    if result.interrupted:
        raise KeyboardInterrupt  # the finished episodes are kept in task.dir; the next run resumes them
    return {"noise_floor_success": result.aggregates["overall"]["success"]}


# --- robustness probes (optional: the spec's `probe` block, one per cell) ------------------------------------------
@dataclass(frozen=True)
class ProbeTask:
    """`mvla-sim probe` of one finished cell's policy (picklable: Ray ships it)."""

    key: str
    name: str  # the cell's
    dir: Path
    cell: Path
    data: Path
    options: dict  # flat ProbeConfig values but policy/out/text data/pool
    threads: int


def probe_tasks(spec: StudySpec, out: Path, cells: list[CellTask]) -> list[ProbeTask]:
    """One probe per cell, keyed by the cell and the probe options, so a changed probe re-runs no training."""
    options = spec.probe_values()
    if not options:
        return []
    return [ProbeTask(key, c.name, out / "probe" / key, c.dir, c.data, options, c.threads)
            for c in cells for key in [digest({"cell": c.key, "probe": options})]]


def finished_probe(folder: Path) -> dict | None:
    """The probe.json of a probe that ran to its end, else None."""
    path = folder / "probe.json"
    if not path.is_file():
        return None
    result = json.loads(path.read_text())
    return None if result.get("interrupted") else result


def run_probe(task: ProbeTask) -> dict:
    """Probe the cell's policy in place (each condition resumes like an evaluation); probe.json marks it done."""
    import torch

    from mobile_vla_sim.probe import ProbeConfig, probe

    done = finished_probe(task.dir)
    if done is not None:
        return done
    torch.set_num_threads(task.threads)
    result = probe(build(ProbeConfig, {**task.options, "policy": str(task.cell / "policy.ckpt"), "out": task.dir,
                                       "text_data": task.data, "workers": task.threads}),
                   progress=False, echo=lambda line: None)
    if result.interrupted:
        raise KeyboardInterrupt  # finished conditions are kept in task.dir; the next run resumes them
    return result.summary
