"""LeRobot export: episodes/s and peak memory of `mvla-sim export --format lerobot`, at two dataset sizes.

The export streams (one episode in memory at a time), so peak memory should not grow with the number of episodes:
the same command runs on the first quarter of the episodes and on all of them, each in a fresh process whose
tree (the Python process and its ffmpeg encoder) is sampled for resident memory every 50 ms.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import report
from benchmarks.memory import tree_rss_mib
from mobile_vla_sim.config import build
from mobile_vla_sim.datasets.generate import GenerateConfig, generate_dataset


def _export(data: Path, out: Path) -> tuple[float, float]:
    """(episodes/s as the export reports it, peak RSS MiB of its process tree) of one CLI export in a fresh
    process; the rate leaves out the interpreter's start."""
    cmd = [sys.executable, "-m", "mobile_vla_sim.cli", "export", str(data), "--format", "lerobot", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, tree_rss_mib(proc.pid))
        time.sleep(0.05)
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"export failed: {stderr.strip() or stdout.strip()}")
    print(f"  {stdout.strip()}")
    return float(stdout.rsplit(", ", 1)[1].split()[0]), peak


def run(episodes: int = 500, image_size: int = 224, data: Path | None = None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = data or root / "data"
        generate_dataset(build(GenerateConfig, dict(episodes=episodes, out=data, image_size=image_size, seed=0)),
                         progress=False)
        files = sorted(data.glob("*.h5"))[:episodes]
        quarter = root / "quarter"
        quarter.mkdir()
        for f in files[: max(1, episodes // 4)]:
            os.symlink(f.resolve(), quarter / f.name)
        small_rate, small_peak = _export(quarter, root / "lr-quarter")
        full_rate, full_peak = _export(data, root / "lr-full")
        size_mb = sum(p.stat().st_size for p in (root / "lr-full").rglob("*") if p.is_file()) / 2**20
    n_small = max(1, episodes // 4)
    return report(f"LeRobot export ({episodes} episodes, {image_size}px, {os.cpu_count()} cores)",
                  [(f"{n_small} episodes: episodes/s, peak RSS MiB", f"{small_rate:.1f}, {small_peak:.0f}"),
                   (f"{episodes} episodes: episodes/s, peak RSS MiB", f"{full_rate:.1f}, {full_peak:.0f}"),
                   ("output size MiB (all episodes)", f"{size_mb:.1f}")],
                  ("peak RSS, all / quarter (flat: ~1)", full_peak / small_peak, None))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--episodes", type=int, default=500)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--data", type=Path, default=None,
                    help="reuse (or make) the generated dataset here instead of a temporary folder")
    a = ap.parse_args()
    run(a.episodes, a.image_size, a.data)
