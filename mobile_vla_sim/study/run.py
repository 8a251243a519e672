"""`run_study`: the whole frozen-vs-LoRA × size × seed study as one resumable call (`mvla-sim study`).

Order: generate the data once (driver) → the cells not finished yet, through a backend (`mobile_vla_sim.backends`:
in this process, or as Ray tasks) → one `compare` per size and seed, and the noise-floor evaluations (same backend)
→ the report (driver).
Every step is an artifact under `out` keyed by a hash of what it depends on, so a re-run does only what is missing
or what a changed spec changes. With Ray on a cluster, `out` must be a shared file system mounted at the same path
on every node: cells read their data and write their artifacts there, and the driver reads them back.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from mobile_vla_sim.backends import BackendConfig, Outcome, Resources, check_backend, run_tasks, session
from mobile_vla_sim.config import check_knobs, knob, to_yaml
from mobile_vla_sim.errors import Interrupted, MvlaError
from mobile_vla_sim.io import atomic_write
from mobile_vla_sim.paths import check_output_dir
from mobile_vla_sim.study.cells import (cell_tasks, compare_tasks, digest, finished_cell, finished_noise,
                                        finished_probe, noise_tasks, prepare_data, probe_tasks, run_cell, run_compare,
                                        run_noise, run_probe, write_subset)
from mobile_vla_sim.study.spec import StudySpec, load_spec


class StudyError(MvlaError, RuntimeError):
    """Some cells of a study failed; the finished ones are kept."""


@dataclass
class StudyConfig:
    """Where and how a study runs; what it computes is the spec file's business."""

    spec: Path = knob(help="study spec YAML (examples/studies/laptop.yaml, paper.yaml)", argument=True)
    out: Path = knob(Path("runs/study"), "study folder: data, one folder per cell, the report; re-running resumes "
                     "(finished cells are skipped)")
    #: local: cells one after another, each using every core; ray: cells as Ray tasks.
    cluster: BackendConfig = field(default_factory=BackendConfig)

    def __post_init__(self) -> None:
        self.spec, self.out = Path(self.spec), Path(self.out)
        check_knobs(self)


def _threads(spec: StudySpec, backend: str) -> int:
    return spec.cpus_per_cell or (os.cpu_count() or 1 if backend == "local" else 1)


def _run_grid(fn, tasks, cfg: StudyConfig, resources: Resources, what: str, echo, describe) -> list[dict]:
    """Run `tasks` through the backend, echoing each as it finishes; every failure is listed, then raised."""
    failures: list[str] = []

    def report(outcome: Outcome) -> None:
        task = tasks[outcome.index]
        if outcome.error is None:
            echo(f"  {what} {describe(task)} done in {outcome.seconds:.0f} s{_summary(outcome.result)}")
        else:
            failures.append(f"{describe(task)}: {type(outcome.error).__name__}: {outcome.error}")
            echo(f"  {what} {describe(task)} FAILED: {failures[-1]}")

    try:
        outcomes = run_tasks(fn, tasks, backend=cfg.cluster.backend, resources=resources, on_result=report,
                             ray_address=cfg.cluster.ray_address)
    except KeyboardInterrupt:
        raise Interrupted(f"finished {what}s are kept under {cfg.out}; run the same command again to resume") \
            from None
    if failures:
        raise StudyError(f"{len(failures)} of {len(tasks)} {what}s failed (first: {failures[0]}); finished ones are "
                         f"kept under {cfg.out}: fix the cause and run the same command again")
    return [o.result for o in outcomes]


def _summary(result: dict) -> str:
    if "success" not in result:
        return ""
    s = result["success"]["all"]
    rmse = result["rmse"]
    return (f": success {s['k']}/{s['n']}, val loss {result['val_loss']:.4f}"
            + (f", RMSE {rmse:.3f}" if rmse is not None else ""))


def run_study(cfg: StudyConfig, progress: bool = True, echo: Callable[[str], None] = print) -> dict[str, Path]:
    """Run (or finish) the study; returns the paths of its report files."""
    from mobile_vla_sim.study.report import write_report

    spec = load_spec(cfg.spec)
    check_backend(cfg.cluster.backend)
    out = check_output_dir(cfg.out, "--out").resolve()
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "spec.yaml", to_yaml(spec))
    threads = _threads(spec, cfg.cluster.backend)

    data = out / "data" / f"gen-{digest(spec.generate_config(Path('data')).content())}"
    plan = prepare_data(spec, data / "episodes", workers=0, progress=progress, echo=echo)  # the driver's cores
    split = digest({"val_fraction": spec.val_fraction, "val_episodes": spec.val_episodes})
    subsets = {size: write_subset(plan, size, data / f"split-{split}" / f"n{size}") for size in spec.sizes}

    cells = cell_tasks(spec, out, subsets, threads, progress=progress and cfg.cluster.backend == "local")
    todo = [c for c in cells if finished_cell(c.dir, c.key) is None]
    echo(f"{len(cells)} cells ({len(spec.modes)} modes × {len(spec.sizes)} sizes × {len(spec.seeds)} seeds): "
         f"{len(cells) - len(todo)} finished, {len(todo)} to run on the {cfg.cluster.backend} backend"
         + (f" ({', '.join(c.name for c in todo)})" if todo else ""))
    compares = compare_tasks(spec, out, cells)
    todo_compare = [t for t in compares if not (t.dir / "compare.json").is_file()]
    noise = noise_tasks(spec, cells)
    todo_noise = [t for t in noise if finished_noise(t.dir) is None]
    probes = probe_tasks(spec, out, cells)
    todo_probe = [t for t in probes if finished_probe(t.dir) is None]
    resources = Resources(num_cpus=threads, num_gpus=1.0 if spec.device.startswith("cuda") else 0.0)
    busy = todo or todo_compare or todo_noise or todo_probe
    with session(cfg.cluster.backend, cfg.cluster.ray_address) if busy else contextlib.nullcontext():
        if todo:
            _run_grid(run_cell, todo, cfg, resources, "cell", echo, lambda c: c.name)
        if todo_compare:
            echo(f"{len(todo_compare)} frozen-vs-LoRA comparisons to run")
            _run_grid(run_compare, todo_compare, cfg, resources, "comparison", echo,
                      lambda t: f"n{t.size}-s{t.seed}")
        if todo_noise:
            echo(f"{len(todo_noise)} noise-floor evaluations to run (a second, disjoint episode set)")
            _run_grid(run_noise, todo_noise, cfg, resources, "noise-floor evaluation", echo, lambda t: t.name)
        if todo_probe:
            echo(f"{len(todo_probe)} robustness probes to run (suite {spec.probe.get('suite', 'default')})")
            _run_grid(run_probe, todo_probe, cfg, resources, "probe", echo, lambda t: t.name)
    results = {c.key: finished_cell(c.dir, c.key) for c in cells}
    probed = {t.name: finished_probe(t.dir) for t in probes}
    floors = {t.name: (t.eval["seed"], finished_noise(t.dir)) for t in noise}
    return write_report(spec, cells, results, compares, plan, out, probed, floors)
