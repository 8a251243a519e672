"""Generation scaling: episodes/s with 2 worker processes against 1, same episodes, same machine, one run."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from benchmarks.common import report
from mobile_vla_sim.datasets.generate import GenerateConfig, generate_dataset


def _throughput(episodes: int, workers: int, image_size: int, root: Path) -> tuple[float, float]:
    s = generate_dataset(GenerateConfig(episodes=episodes, out=root / f"w{workers}", workers=workers,
                                        image_size=image_size, seed=0), progress=False)
    return s.generated / s.seconds, s.frames / s.seconds


def run(episodes: int = 60, image_size: int = 224) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        eps1, fps1 = _throughput(episodes, 1, image_size, Path(tmp))
        eps2, fps2 = _throughput(episodes, 2, image_size, Path(tmp))
    return report(f"generation scaling ({episodes} episodes, mix, {image_size}px)",
                  [("1 worker: episodes/s, frames/s", f"{eps1:.2f}, {fps1:.1f}"),
                   ("2 workers: episodes/s, frames/s", f"{eps2:.2f}, {fps2:.1f}")],
                  ("2 workers / 1 worker", eps2 / eps1, 1.7))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--episodes", type=int, default=60)
    ap.add_argument("--image-size", type=int, default=224)
    a = ap.parse_args()
    run(a.episodes, a.image_size)
