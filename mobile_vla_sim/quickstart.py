"""The whole workflow on built-in defaults, end to end, on a CPU and without any download.

generate expert demos → train a tiny frozen and a tiny LoRA policy → evaluate them closed-loop next to the
baselines on the same episodes (with videos) → frozen-vs-LoRA comparison report. Every step writes into its
own folder under `out` and is resumable: re-running skips finished work.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from mobile_vla_sim.datasets.generate import GenerateConfig, generate_dataset
from mobile_vla_sim.eval.compare import CompareConfig, compare
from mobile_vla_sim.eval.run import EvalConfig, evaluate
from mobile_vla_sim.policies.train import TrainConfig, train


@dataclass
class QuickstartConfig:
    """Sizes chosen so that the whole run takes a few minutes on 2 CPU cores."""

    out: Path = Path("runs/quickstart")
    episodes: int = 60          # demonstrations (mix of difficulties, balanced left/right)
    epochs: int = 4
    eval_episodes: int = 6      # per (difficulty, task)
    baselines: tuple[str, ...] = ("expert", "constant", "always-left")
    workers: int = 2
    seed: int = 0


def run_quickstart(cfg: QuickstartConfig, progress: bool = True, echo=print) -> dict[str, Path]:
    """Run every stage; return the paths a user should open."""
    out = Path(cfg.out)
    data = out / "data"
    echo(f"[1/4] generating {cfg.episodes} expert demonstrations → {data}")
    generate_dataset(GenerateConfig(episodes=cfg.episodes, out=data, workers=cfg.workers, seed=cfg.seed),
                     progress=progress)

    ckpts: dict[str, Path] = {}
    for mode in ("frozen", "lora"):
        ckpts[mode] = out / f"{mode}.ckpt"
        echo(f"[2/4] training a tiny Kosmos-2 VLA policy, {mode} → {ckpts[mode]}")
        train(TrainConfig(data=data, mode=mode, backbone="tiny", epochs=cfg.epochs, out=ckpts[mode], seed=cfg.seed),
              progress=progress)

    base_eval = EvalConfig(policy="", episodes=cfg.eval_episodes, seed=cfg.seed, workers=cfg.workers,
                           offline_data=data)
    eval_dirs: dict[str, Path] = {}
    for name in (*cfg.baselines, "frozen", "lora"):
        eval_dirs[name] = out / "eval" / name
        policy = str(ckpts.get(name, name))
        echo(f"[3/4] evaluating {name} closed-loop → {eval_dirs[name]}")
        videos = eval_dirs[name] / "videos" if name in ckpts else None
        evaluate(replace(base_eval, policy=policy, out=eval_dirs[name], video_dir=videos), progress=progress)

    report = out / "compare"
    echo(f"[4/4] comparing frozen vs LoRA → {report}")
    compare(CompareConfig(checkpoint_a=ckpts["frozen"], checkpoint_b=ckpts["lora"], data=data,
                          eval_dirs=(eval_dirs["frozen"], eval_dirs["lora"]), out=report), progress=progress)
    return {"data": data, **ckpts, **{f"eval:{k}": v / "summary.md" for k, v in eval_dirs.items()},
            "report": report / "report.md"}
