"""Run every benchmark once (quick sizes by default; `--full` for the sizes quoted in benchmarks/README.md)."""

from __future__ import annotations

import argparse
import json

from benchmarks import (bench_env, bench_eval, bench_generate, bench_invariance, bench_look, bench_memory,
                        bench_renderer, bench_serve, bench_train)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--full", action="store_true", help="long memory runs (1,000-episode eval, 2,000-episode generate)")
    ap.add_argument("--json", help="also write the figures to this file")
    full = ap.parse_args()
    results = [bench_env.run(), bench_renderer.run(), bench_look.run(), bench_generate.run(), bench_eval.run(), bench_invariance.run(),
               bench_serve.run(), bench_train.run(),
               bench_memory.run() if full.full else bench_memory.run(eval_episodes=120, generate_episodes=120)]
    if full.json:
        with open(full.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
