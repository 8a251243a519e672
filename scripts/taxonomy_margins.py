"""How far the scripted expert stays from each failure-taxonomy threshold, and the labels baselines get.

    python scripts/taxonomy_margins.py --episodes 10 --image-size 32

Runs the expert (clean and with demo-style action noise) on N episodes per (difficulty, task) and prints, per noise
level, the labels/flags it got (none expected), its most sign flips of swings >= OSCILLATION_STEER, its smallest
clearance beyond the late-turn collision course at LATE_TURN_M from the first box, and its least motion over the
last FALSE_STOP_STEPS steps; then the primary-label counts of the baselines on the same episodes.
"""

from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import replace

import numpy as np

from mobile_vla_sim.envs.sim import ROBOT_HALF_WIDTH
from mobile_vla_sim.eval.episodes import episode_set
from mobile_vla_sim.envs.config import EnvConfig
from mobile_vla_sim.envs.engine import PoolConfig, run_episodes
from mobile_vla_sim.eval.rollout import RecorderFactory, eval_policy
from mobile_vla_sim.eval.taxonomy import (FALSE_STOP_STEPS, LATE_TURN_M, OSCILLATION_STEER, label_failures,
                                          sign_flips, steer_signal)
from mobile_vla_sim.envs.expert import ExpertPolicy
from mobile_vla_sim.policies.registry import load_policy


def late_turn_clearance(rec) -> float:
    """abs(y - cy) - (hy + ROBOT_HALF_WIDTH) at the first pose within LATE_TURN_M of the first box's near face."""
    cx, cy, hx, hy = rec.obstacles[0][:4]
    pose = next(p for p in rec.trajectory if p[0] >= cx - hx - LATE_TURN_M)
    return abs(pose[1] - cy) - hy - ROBOT_HALF_WIDTH


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=10, help="episodes per (difficulty, task)")
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    specs = episode_set(0, "all", "both", args.episodes)
    env = EnvConfig(image_size=args.image_size).resolved()
    print("| expert noise | episodes | success | labels / flags | max flips | min late-turn clearance (m) | "
          "min motion, last steps (m) |\n|---|---|---|---|---|---|---|")
    for noise in (0.0, 0.2, 0.3):
        noisy = [replace(s, noise_seed=s.seed) for s in specs]  # executed-action noise seeded per episode
        recs = run_episodes(ExpertPolicy(), noisy, env, RecorderFactory({}, env), PoolConfig(workers=args.workers),
                            action_noise=noise, progress=False).results
        label_failures(recs)
        flags = Counter(f for r in recs for f in r.failure_flags.split(";") if f)
        flips = max(sign_flips(steer_signal(r), OSCILLATION_STEER) for r in recs)
        clearance = min(late_turn_clearance(r) for r in recs)
        motion = min(float(np.hypot(*np.subtract(r.trajectory[-1][:2], r.trajectory[-1 - FALSE_STOP_STEPS][:2])))
                     for r in recs)
        print(f"| {noise} | {len(recs)} | {np.mean([r.success for r in recs]):.0%} | {dict(flags) or 'none'} | "
              f"{flips} | {clearance:.3f} | {motion:.3f} |")
    print("\n| policy | success | primary labels |\n|---|---|---|")
    for spec in ("constant", "random", "always-left"):
        recs = eval_policy(load_policy(spec), specs, env, pool=PoolConfig(workers=args.workers), progress=False).results
        label_failures(recs)
        labels = Counter(r.failure_label for r in recs if r.failure_label)
        print(f"| {spec} | {np.mean([r.success for r in recs]):.0%} | {dict(labels.most_common())} |")


if __name__ == "__main__":
    main()
