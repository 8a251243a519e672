"""Measure the scripted expert's success rate per difficulty x task over N seeded episodes each.

    python scripts/expert_success.py --episodes 200 --image-size 16
    python scripts/expert_success.py --episodes 200 --drive omni --action-mode direction --expert-actions keys
    python scripts/expert_success.py --task-family reach --episodes 200 --drive omni --action-mode direction \
        --expert-actions keys --instructions pot
Seeds 0..N-1 are shared by the tasks (same scenes where the family pairs them). Prints a Markdown table (with the share of episodes of at
least 18 frames, the real episode length); --json writes the numbers.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

import mobile_vla_sim  # noqa: F401  (registers the env)
from mobile_vla_sim.envs import EnvConfig, make_env
from mobile_vla_sim.envs.expert import EXPERT_ACTIONS, KeysExpert, ScriptedExpert, run_expert_episode
from mobile_vla_sim.envs.tasks import get_family

#: Frames of a real episode (episode_start + 17 keys); the real loader needs window 8 + chunk 10.
REAL_FRAMES = 18


def measure(episodes: int, cfg: EnvConfig, expert_actions: str, difficulties, seed: int = 0):
    """Yield one result row per (difficulty, task) cell as soon as it is finished."""
    for difficulty in difficulties:
        env = make_env(dataclasses.replace(cfg, difficulty=difficulty))
        try:
            yield from _cells(env, cfg, expert_actions, difficulty, episodes, seed)
        finally:
            env.close()


def _cells(env, cfg: EnvConfig, expert_actions: str, difficulty: str, episodes: int, seed: int):
    """One row per task the difficulty runs (a trial condition runs one); the tasks run the same seeds."""
    for task in get_family(cfg.task_family).tasks_for(difficulty):
        expert = (KeysExpert.for_env(cfg) if expert_actions == "keys"
                  else ScriptedExpert(drive=cfg.drive, family=get_family(cfg.task_family)))
        infos, start = [], time.perf_counter()
        for s in tqdm(range(seed, seed + episodes), desc=f"{difficulty}/{task}", leave=False):
            infos.append(run_expert_episode(env, expert, s, task))
        ok = np.array([i["success"] for i in infos])
        spl = [i["shortest_path_length"] / max(i["path_length"], i["shortest_path_length"]) * i["success"]
               for i in infos]
        yield {"difficulty": difficulty, "task": task, "episodes": episodes, "success": float(ok.mean()),
               "failed_seeds": [seed + k for k in np.flatnonzero(~ok).tolist()],
               "collisions": int(sum(i["collision"] for i in infos)),
               "wrong_side": int(sum(i["wrong_side"] for i in infos)),
               "mean_steps": float(np.mean([i["steps"] for i in infos])), "spl": float(np.mean(spl)),
               "real_length": float(np.mean([i["steps"] + 1 >= REAL_FRAMES for i in infos])),
               "seconds": time.perf_counter() - start}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=200)
    ap.add_argument("--image-size", type=int, default=16, help="camera size; the expert ignores it, small is fast")
    ap.add_argument("--drive", choices=["diff", "omni"], default="diff")
    ap.add_argument("--control", choices=["continuous", "pulse"], default="continuous")
    ap.add_argument("--action-mode", choices=["velocity", "direction"], default="velocity")
    ap.add_argument("--expert-actions", choices=list(EXPERT_ACTIONS), default="continuous")
    ap.add_argument("--task-family", default="detour", help="a built-in family or package.module:ClassName")
    ap.add_argument("--instructions", default=None, help="the family's instruction set (reach: the target object)")
    ap.add_argument("--difficulties", default="all", help="comma list of the family's levels or groups")
    ap.add_argument("--seed", type=int, default=0, help="first seed")
    ap.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    args = ap.parse_args()
    rows = []
    try:
        cfg = EnvConfig(task_family=args.task_family, instructions=args.instructions, image_size=args.image_size,
                        drive=args.drive, control=args.control, action_mode=args.action_mode)
        difficulties = get_family(args.task_family).parse_difficulties(args.difficulties)
        rows.extend(measure(args.episodes, cfg, args.expert_actions, difficulties, args.seed))
    except KeyboardInterrupt:
        print("interrupted: reporting the finished cells only")
    print(f"task_family={args.task_family} instructions={args.instructions} drive={args.drive} control={args.control} action_mode={args.action_mode} "
          f"expert_actions={args.expert_actions} episodes={args.episodes} per cell")
    print(f"| difficulty | task | success | collisions | wrong side | mean steps | >= {REAL_FRAMES} frames | SPL | s |")
    print("|---" * 9 + "|")
    for r in rows:
        print(f"| {r['difficulty']} | {r['task']} | {r['success']:.1%} | {r['collisions']} | {r['wrong_side']} | "
              f"{r['mean_steps']:.1f} | {r['real_length']:.0%} | {r['spl']:.3f} | {r['seconds']:.0f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
