"""Small helpers shared by the benchmarks: timing, peak memory, and a uniform printout."""

from __future__ import annotations

import resource
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def timer() -> Iterator[list[float]]:
    """`with timer() as t: ...` then `t[0]` holds the elapsed seconds."""
    out = [0.0]
    start = time.perf_counter()
    try:
        yield out
    finally:
        out[0] = time.perf_counter() - start


def peak_rss_mib(children: bool = False) -> float:
    """Peak resident set size of this process (or of its finished children), MiB."""
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return resource.getrusage(who).ru_maxrss / 1024.0


def report(title: str, rows: list[tuple[str, str]], ratio: tuple[str, float, float | None]) -> dict:
    """Print the absolute figures then the ratio against its target; return them for run_all's summary."""
    print(f"\n== {title}")
    for name, value in rows:
        print(f"  {name:<48} {value}")
    label, value, target = ratio
    verdict = "" if target is None else ("  (target >= %.2f: %s)" % (target, "met" if value >= target else "NOT met"))
    print(f"  {label:<48} {value:.2f}{verdict}")
    return {"title": title, "rows": dict(rows), "ratio": {label: value}, "target": target}


def tiny_checkpoint(folder: Path, image_size: int) -> Path:
    """A tiny frozen checkpoint trained one epoch on 12 easy demos at `image_size`: a real policy to time."""
    from mobile_vla_sim.config import build
    from mobile_vla_sim.datasets.generate import GenerateConfig, generate_dataset
    from mobile_vla_sim.policies.train import TrainConfig, train

    data, ckpt = Path(folder) / "data", Path(folder) / "tiny.ckpt"
    generate_dataset(build(GenerateConfig, dict(episodes=12, out=data, difficulty="easy", image_size=image_size,
                                                workers=2)), progress=False)
    train(TrainConfig(data=data, mode="frozen", backbone="tiny", epochs=1, out=ckpt, seed=0), progress=False)
    return ckpt
