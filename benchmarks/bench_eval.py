"""Eval throughput with a tiny VLA policy: inference batched across concurrent episodes vs one episode at a time.

The same fixed episode set is run with (workers, envs per worker) = (1, 1) — one episode at a time, batch 1 —
and with concurrent episodes whose frames go through the backbone in one batch.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from benchmarks.common import report, tiny_checkpoint
from mobile_vla_sim.eval.episodes import episode_set
from mobile_vla_sim.envs.config import EnvConfig
from mobile_vla_sim.envs.engine import PoolConfig
from mobile_vla_sim.eval.rollout import eval_policy

LAYOUTS = ((1, 1), (1, 8), (2, 1), (2, 4))


def run(episodes: int = 8, image_size: int = 224) -> dict:
    # torch is imported here, not at the top: spawned workers re-import the main module, and would pay for it
    from mobile_vla_sim.policies.checkpoint import load_policy_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = tiny_checkpoint(Path(tmp), image_size)
        specs = episode_set(0, "easy", "both", episodes)
        env_cfg = EnvConfig(image_size=image_size)
        rates = {}
        for workers, per in LAYOUTS:
            policy = load_policy_checkpoint(ckpt)
            r = eval_policy(policy, specs, env_cfg, pool=PoolConfig(workers, per), progress=False)
            rates[(workers, per)] = 60.0 * len(r.results) / r.seconds
    rows = [(f"{w} worker(s) x {p} concurrent episodes: episodes/min", f"{rates[(w, p)]:.1f}") for w, p in LAYOUTS]
    rows += [("batching alone: 1x8 / 1x1", f"{rates[(1, 8)] / rates[(1, 1)]:.2f}"),
             ("second worker: 2x4 / 1x8", f"{rates[(2, 4)] / rates[(1, 8)]:.2f}")]
    best = max(rates, key=rates.get)
    return report(f"eval throughput, tiny VLA ({2 * episodes} easy episodes, {image_size}px)", rows,
                  (f"best ({best[0]}x{best[1]}) / one at a time (1x1)", rates[best] / rates[(1, 1)], None))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--episodes", type=int, default=8, help="per task (left and right)")
    ap.add_argument("--image-size", type=int, default=224)
    a = ap.parse_args()
    run(a.episodes, a.image_size)
