"""Time `mvla-sim calibrate` on stand-in "real" data, and check what it recovers.

Stand-in data: `generate` episodes (easy and medium scenes, the real 16:9 camera at 1280 x 720 by default, like the
real robot's frames) rendered in a hidden look: camera pitch, height and field of view, floor, wall and box colours,
the light's ambient share and the floor and wall textures all changed from the defaults. Then a calibration with the
default options times the target case (20 episodes, 2 cores: <= 10 min) and prints the recovered-vs-hidden table.

    python -m benchmarks.bench_calibrate [--episodes 20] [--image-width 1280] [--data DIR] [--out DIR]

The data is kept in --data (made once, reused). The wall time depends on what else runs on the machine: the load
average before and after is printed, and the CPU time of the calibration and its workers, which does not.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

from mobile_vla_sim.calibrate.space import Space
from mobile_vla_sim.config import build
from mobile_vla_sim.envs.config import CAMERAS
from mobile_vla_sim.envs.look import LookConfig

HIDDEN = LookConfig(camera_pitch=-16.0, camera_height=0.42, camera_fov=74.0, floor_rgb=(0.85, 0.9, 1.0),
                    wall_rgb=(0.9, 0.86, 0.78), box_rgb=(0.55, 0.45, 0.35), floor_texture="tile_small",
                    wall_texture="plaster", light_ambient=0.45, light_diffuse=0.55)
TARGET_S = 600


def make_data(out: Path, episodes: int, image_width: int) -> Path:
    """`episodes` stand-in episodes in `HIDDEN` (easy and medium scene pairs alternate)."""
    from mobile_vla_sim.datasets.generate import GenerateConfig, generate_dataset
    from mobile_vla_sim.envs.config import EnvConfig

    if not (out / "dataset.json").is_file():
        generate_dataset(GenerateConfig(episodes=episodes, out=out, difficulty="mix", seed=7,
                                        env=EnvConfig(camera="real", image_width=image_width, look=HIDDEN)))
    return out


def _cpu() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    from mobile_vla_sim.calibrate.run import CalibrateConfig, calibrate

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--image-width", type=int, default=1280)
    ap.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "mvla-bench-calibrate-data")
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "mvla-bench-calibrate")
    a = ap.parse_args()
    data = make_data(a.data, a.episodes, a.image_width)
    log = a.out / "evaluations.jsonl"
    if log.exists():
        log.unlink()  # time a fresh calibration, not a resumed one
    cfg = build(CalibrateConfig, {"real": data, "out": a.out, "episodes": a.episodes, "camera": "real"})
    load, cpu, t0 = os.getloadavg()[0], _cpu(), time.perf_counter()
    result = calibrate(cfg, progress=False)
    seconds, cpu = time.perf_counter() - t0, _cpu() - cpu
    o = result.outcome
    print(f"\n== calibrate, {a.episodes} stand-in episodes at {a.image_width}px wide, {os.cpu_count()} CPUs")
    print(f"  wall {seconds:.0f} s (target <= {TARGET_S} s: {'met' if seconds <= TARGET_S else 'NOT met'}); "
          f"CPU {cpu:.0f} s (parent and workers); load average {load:.1f} before, {os.getloadavg()[0]:.1f} after")
    print(f"  {o.evaluations} evaluations; distance {o.before.distance:.4f} -> {o.after.distance:.4f}")
    truth = Space(tuple(o.fitted), HIDDEN, CAMERAS["real"]).start_values
    print("\n  | knob | hidden | start | fitted |\n  |---|---|---|---|")
    for knob, value in o.fitted.items():
        print(f"  | {knob} | {_fmt(truth[knob])} | {_fmt(o.start[knob])} | {_fmt(value)} |")


def _fmt(value) -> str:
    if isinstance(value, tuple):
        return "(" + ", ".join(f"{v:.3f}" for v in value) + ")"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


if __name__ == "__main__":
    main()
