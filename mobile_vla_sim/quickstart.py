"""The whole workflow on built-in defaults, end to end, on a CPU and without any download.

generate expert demos → train a tiny frozen and a tiny LoRA policy → evaluate them closed-loop next to the
baselines on the same episodes (with videos) → frozen-vs-LoRA comparison report → robustness probe of the frozen
policy (small suite). Every step writes into its own folder under `out` and is resumable: re-running skips
finished work.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

from mobile_vla_sim.config import check_knobs, knob
from mobile_vla_sim.envs.config import EnvConfig
from mobile_vla_sim.envs.engine import PoolConfig
from mobile_vla_sim.errors import EvalError


@dataclass
class QuickstartConfig:
    """Sizes chosen so that the whole run, setup included, takes under 6 minutes on 2 CPU cores, while the two
    policies still separate: clearly above random, below the expert (measured in docs/measured.md; more episodes
    and epochs give better policies: `--episodes 200 --frozen-epochs 10 --lora-epochs 6
    --eval-episodes 10`).

    The backbone is `tiny-pretrained`, the tiny Kosmos-2 pretrained in the sim without action labels, so that the
    frozen policy reads features that carry scene information (a random-init backbone frozen says nothing about the
    real question). The recipe differs from the real project's defaults where the tiny backbone needs it (measured):
    lr 1e-3 for the head (1e-4 collapses to the mean action in a few epochs), 1e-4 for LoRA; demos with executed-
    action noise and clean labels (closed-loop recovery); images at the tiny backbone's 112 px input size.
    """

    out: Path = knob(Path("runs/quickstart"), "everything goes below this folder; re-running resumes")
    backbone: str = knob("tiny-pretrained", "backbone of both policies: tiny-pretrained, or tiny (random init)",
                         choices=("tiny-pretrained", "tiny"))
    episodes: int = knob(80, "demonstrations to generate (easy:medium:hard 2:3:2, balanced left/right)", min=8)
    image_size: int = knob(112, "camera side for demos and eval (the tiny backbone's input size)", min=16)
    noise_std: float = knob(0.2, "executed-action noise in the demos (labels stay clean)", min=0.0)
    frozen_epochs: int = knob(8, "epochs of the frozen policy", min=1)
    lora_epochs: int = knob(4, "epochs of the LoRA policy (an epoch recomputes the backbone: ~2.5x a cached frozen "
                            "epoch)", min=1)
    lr_head: float = knob(1e-3, "head learning rate", min=0.0, max=1.0)
    lr_lora: float = knob(1e-4, "LoRA learning rate", min=0.0, max=1.0)
    eval_episodes: int = knob(4, "closed-loop episodes per (difficulty, task)", min=1)
    baselines: tuple[str, ...] = knob(("expert", "random", "constant", "always-left"), "baselines evaluated beside "
                                      "the two policies")
    probe_episodes: int = knob(1, "episodes per (difficulty, task) of the final robustness probe of the frozen "
                               "policy (small suite); 0 skips it", min=0)
    workers: int = knob(2, "worker processes for generation and eval", min=1)
    seed: int = knob(0, "seed of data, training and the eval episode set", min=0)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        check_knobs(self)


def _trained(ckpt: Path) -> bool:
    """A finished training run: its checkpoint exists and no resume state is left (that is deleted at the end)."""
    return ckpt.is_file() and not ckpt.with_name(ckpt.name + ".resume.pt").exists()


def _evaluated(out: Path) -> bool:
    from mobile_vla_sim.eval.report import read_results

    try:
        return not read_results(out).interrupted
    except EvalError:
        return False


def run_quickstart(cfg: QuickstartConfig, progress: bool = True, echo=print) -> dict[str, Path]:
    """Run every stage, skipping those already finished in `cfg.out`; return the paths a user should open."""
    from mobile_vla_sim.datasets.generate import GenerateConfig, generate_dataset
    from mobile_vla_sim.analysis.compare import CompareConfig, compare
    from mobile_vla_sim.probe import ProbeConfig, probe
    from mobile_vla_sim.eval.report import results_table
    from mobile_vla_sim.eval.run import EvalConfig, evaluate
    from mobile_vla_sim.policies.config import TrainConfig
    from mobile_vla_sim.policies.train import train

    start = time.perf_counter()
    say = echo

    def echo(line: str) -> None:  # stage lines carry the time since the start, so a log shows where time went
        clock = time.perf_counter() - start
        say(f"{int(clock // 60)}:{int(clock % 60):02d} {line}" if line.startswith("[") else line)

    out = Path(cfg.out)
    data = out / "data"
    echo(f"[1/5] generating {cfg.episodes} expert demonstrations → {data}")
    env, pool = EnvConfig(image_size=cfg.image_size), PoolConfig(workers=cfg.workers)
    summary = generate_dataset(GenerateConfig(episodes=cfg.episodes, out=data, seed=cfg.seed, noise_std=cfg.noise_std,
                                              env=env, pool=pool), progress=progress)
    echo(f"      {summary}")

    ckpts: dict[str, Path] = {}
    for mode, epochs in (("frozen", cfg.frozen_epochs), ("lora", cfg.lora_epochs)):
        ckpts[mode] = out / f"{mode}.ckpt"
        if _trained(ckpts[mode]):
            echo(f"[2/5] {ckpts[mode]} already trained (delete it to retrain)")
            continue
        echo(f"[2/5] training a tiny Kosmos-2 VLA policy, {mode}, {epochs} epochs → {ckpts[mode]}")
        lora = {"lr_lora": cfg.lr_lora} if mode == "lora" else {}
        train(TrainConfig(data=data, mode=mode, backbone=cfg.backbone, epochs=epochs, lr_head=cfg.lr_head,
                          out=ckpts[mode], seed=cfg.seed, **lora), progress=progress)

    base_eval = EvalConfig(policy="expert", episodes=cfg.eval_episodes, seed=cfg.seed, offline_data=data, env=env,
                           pool=pool)
    eval_dirs: dict[str, Path] = {}
    for name in (*cfg.baselines, "frozen", "lora"):
        eval_dirs[name] = out / "eval" / name
        if _evaluated(eval_dirs[name]):
            echo(f"[3/5] {name} already evaluated in {eval_dirs[name]}")
            continue
        echo(f"[3/5] evaluating {name} closed-loop → {eval_dirs[name]}")
        videos = eval_dirs[name] / "videos" if name in ckpts else None
        result = evaluate(replace(base_eval, policy=str(ckpts.get(name, name)), out=eval_dirs[name],
                                  video_dir=videos), progress=progress)
        echo(f"      {len(result.records)} episodes, {result.episodes_per_min:.0f} episodes/min")

    report = out / "compare"
    echo(f"[4/5] comparing frozen vs LoRA → {report}")
    compare(CompareConfig(checkpoint_a=ckpts["frozen"], checkpoint_b=ckpts["lora"], data=data,
                          eval_dirs=(eval_dirs["frozen"], eval_dirs["lora"]), out=report), progress=progress)
    table = results_table(list(eval_dirs.values()))
    (out / "results.md").write_text(f"# Quickstart: {2 * cfg.eval_episodes} episodes per difficulty, same scenes "
                                    f"for every policy\n\n{table}")
    echo("\n" + table)
    paths = {"data": data, **ckpts, "results": out / "results.md",
             **{f"eval:{k}": v / "summary.md" for k, v in eval_dirs.items()}, "report": report / "report.md"}
    if cfg.probe_episodes:
        echo(f"[5/5] probing the frozen policy's robustness (small suite) → {out / 'probe'}")
        probed = probe(ProbeConfig(policy=str(ckpts["frozen"]), suite="small", episodes=cfg.probe_episodes,
                                   seed=cfg.seed, out=out / "probe", text_data=data, env=env, pool=pool),
                       progress=progress, echo=lambda line: echo(f"      {line}"))
        echo(f"      {probed.summary['verdict']}")
        paths["probe"] = probed.paths["probe.md"]
    echo("[done]")
    return paths
