"""Memory stays flat over long runs: a long eval and a long generate, RSS of the whole process tree sampled each second.

Flat means the median RSS over the last quarter of the run is within a few percent of the median over the
first quarter (after warm-up): no leaked physics clients, frames or file handles.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from benchmarks.common import report
from benchmarks.memory import RssSampler
from mobile_vla_sim.config import build
from mobile_vla_sim.datasets.generate import GenerateConfig, generate_dataset
from mobile_vla_sim.eval.run import EvalConfig, evaluate
from mobile_vla_sim.envs.config import EnvConfig
from mobile_vla_sim.envs.engine import PoolConfig


def run(eval_episodes: int = 1000, generate_episodes: int = 2000, image_size: int = 96) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        with RssSampler() as ev:
            evaluate(EvalConfig(policy="expert", difficulty="all", task="both", episodes=eval_episodes // 6,
                                pool=PoolConfig(workers=2), out=Path(tmp) / "eval",
                                env=EnvConfig(image_size=image_size)),
                     progress=False)
        with RssSampler() as gen:
            generate_dataset(build(GenerateConfig, dict(episodes=generate_episodes, out=Path(tmp) / "gen", workers=2,
                                            image_size=image_size)), progress=False)
    (e0, e1, ep), (g0, g1, gp) = ev.growth(), gen.growth()
    growth = max(e1 / e0, g1 / g0)
    return report(f"memory over long runs ({image_size}px; process tree RSS)",
                  [(f"eval {eval_episodes // 6 * 6} episodes: first/last quarter, peak MiB", f"{e0:.0f} / {e1:.0f}, {ep:.0f}"),
                   (f"generate {generate_episodes} episodes: first/last quarter, peak MiB", f"{g0:.0f} / {g1:.0f}, {gp:.0f}")],
                  ("worst last/first-quarter RSS (1.00 = flat)", growth, None))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--eval-episodes", type=int, default=1000)
    ap.add_argument("--generate-episodes", type=int, default=2000)
    ap.add_argument("--image-size", type=int, default=96)
    a = ap.parse_args()
    run(a.eval_episodes, a.generate_episodes, a.image_size)
