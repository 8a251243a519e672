"""`mvla-sim` command line: a thin click layer over library functions usable from Python too."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from mobile_vla_sim import __version__


class UserError(click.ClickException):
    """A one-line error that tells the user what is wrong and how to fix it."""


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mvla-sim")
def main() -> None:
    """Evaluate vision-language-action policies for a mobile robot in simulation."""


# --- generate ---------------------------------------------------------------------------------
# (section owned by the datasets work)
@main.command()
@click.option("--episodes", type=int, default=500, show_default=True, help="Episodes (balanced left/right).")
@click.option("--out", type=click.Path(file_okay=False), default="data/sim", show_default=True,
              help="Output folder; re-running the same command resumes it.")
@click.option("--difficulty", type=click.Choice(["easy", "medium", "hard", "mix"]), default="mix", show_default=True,
              help="mix = easy:medium:hard 2:3:2.")
@click.option("--workers", type=int, default=0, help="Worker processes [default: one per CPU].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--image-size", type=int, default=224, show_default=True, help="Square camera image side (px).")
@click.option("--drive", type=click.Choice(["diff", "omni"]), default="diff", show_default=True)
@click.option("--noise-std", type=float, default=0.0, show_default=True,
              help="Noise on the executed expert action; the clean label is stored as `action_labels`.")
@click.option("--control", type=click.Choice(["continuous", "pulse"]), default="continuous", show_default=True,
              help="Match the env used for eval; pulse = the real robot's stop-and-go.")
@click.option("--renderer", type=click.Choice(["tiny", "egl"]), default="tiny", show_default=True,
              help="Camera renderer: TinyRenderer (CPU) or PyBullet's EGL plugin (OpenGL, fast on a GPU).")
def generate(**options) -> None:
    """Write scripted-expert demonstrations as real-layout HDF5 episodes plus a dataset.json manifest."""
    from mobile_vla_sim.datasets.generate import GenerateConfig, generate_dataset

    try:
        summary = generate_dataset(GenerateConfig(**options))
    except (ValueError, FileNotFoundError) as err:
        raise UserError(str(err)) from err
    except KeyboardInterrupt:
        raise UserError(f"interrupted: finished episodes are kept in {options['out']}; run the same command "
                        "again to resume") from None
    click.echo(summary)


# --- train ------------------------------------------------------------------------------------
# (section owned by the policies work)
@main.command()
@click.option("--data", type=click.Path(file_okay=False), required=True, help="Dataset folder (`mvla-sim generate`).")
@click.option("--mode", type=click.Choice(["frozen", "lora"]), default="frozen", show_default=True)
@click.option("--backbone", default="microsoft/kosmos-2-patch14-224", show_default=True,
              help="Hub id, local Kosmos-2 directory (model + processor), or `tiny` (offline, for tests).")
@click.option("--epochs", type=int, default=10, show_default=True)
@click.option("--batch-size", type=int, default=16, show_default=True, help="Windows per step.")
@click.option("--window", type=int, default=8, show_default=True, help="Frames the LSTM sees.")
@click.option("--chunk", type=int, default=10, show_default=True, help="Future actions predicted (fwd_pred_next_n).")
@click.option("--hidden", type=int, default=None, help="LSTM hidden size [default: 512; 128 with --backbone tiny].")
@click.option("--lstm-layers", type=int, default=None, help="LSTM layers [default: 4; 2 with --backbone tiny].")
@click.option("--lr-head", type=float, default=1e-4, show_default=True, help="Head and action-token learning rate.")
@click.option("--lr-lora", type=float, default=1e-5, show_default=True, help="LoRA adapters' learning rate.")
@click.option("--lora-r", type=int, default=8, show_default=True)
@click.option("--lora-alpha", type=int, default=16, show_default=True)
@click.option("--lora-dropout", type=float, default=None, help="[default: 0.05; 0 with --backbone tiny].")
@click.option("--lora-targets", default="q_proj,k_proj,v_proj,out_proj,fc1,fc2", show_default=True,
              help="Comma-separated among q_proj,k_proj,v_proj,out_proj,fc1,fc2.")
@click.option("--consecutive", type=click.IntRange(min=1), default=None,
              help="Windows per run of consecutive windows in a batch; runs share frames, so recomputing the backbone "
              "(LoRA) costs less [default: --window for LoRA, 1 for frozen].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), default="vla.ckpt", show_default=True,
              help="Best checkpoint by val loss; an interrupted run resumes from `<out>.resume.pt`.")
def train(lora_targets: str, **options) -> None:
    """Train a Kosmos-2 + LSTM VLA policy, frozen or with LoRA, into one safetensors .ckpt."""
    from mobile_vla_sim.policies.train import TrainConfig
    from mobile_vla_sim.policies.train import train as train_policy

    try:
        cfg = TrainConfig(lora_targets=tuple(t.strip() for t in lora_targets.split(",") if t.strip()), **options)
        result = train_policy(cfg)
    except (ValueError, FileNotFoundError) as err:
        raise UserError(str(err)) from err
    except KeyboardInterrupt:
        raise UserError(f"interrupted: the best checkpoint so far is {options['out']} and finished epochs are in "
                        f"{options['out']}.resume.pt; run the same command again to resume") from None
    click.echo(f"best val loss {result.best_val_loss:.4f} at epoch {result.best_epoch}; {result.trainable_params:,} "
               f"trainable of {result.total_params:,} parameters; checkpoint {result.checkpoint}")


# --- eval / train-rl ---------------------------------------------------------------------------
# (section owned by the evaluation work)


@main.command("eval")
@click.option("--policy", required=True, help="A .ckpt from `mvla-sim train`, expert, random, constant, "
              "always-left, always-right or sb3:PATH.zip.")
@click.option("--difficulty", default="all", show_default=True, help="easy, medium, hard, all or a comma list.")
@click.option("--task", default="both", show_default=True, help="left, right or both.")
@click.option("--episodes", default=10, show_default=True, help="Episodes per (difficulty, task).")
@click.option("--seed", default=0, show_default=True, help="Base seed of the fixed episode set.")
@click.option("--workers", default=0, help="Env worker processes [default: one per CPU].")
@click.option("--envs-per-worker", default=4, show_default=True, help="Concurrent episodes per worker.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/eval"), show_default=True,
              help="Folder for results.json, episodes.csv, summary.md, trajectories.png.")
@click.option("--video-dir", type=click.Path(path_type=Path), help="Write mp4 rollout videos here.")
@click.option("--video-all", is_flag=True, help="A video for every episode (default: the first 2 per group).")
@click.option("--offline-data", type=click.Path(path_type=Path), help="Dataset for offline metrics (val split).")
@click.option("--drive", type=click.Choice(["diff", "omni"]), default="diff", show_default=True)
@click.option("--control", type=click.Choice(["continuous", "pulse"]), default="continuous", show_default=True)
@click.option("--action-latency", default=0, show_default=True, help="Steps between an action and its effect.")
@click.option("--action-scale", default=1.0, show_default=True, help="Multiply every action by this.")
@click.option("--camera-noise", default=0.0, show_default=True, help="Pixel noise std (0-255 scale).")
@click.option("--image-size", default=224, show_default=True, help="Camera image side in pixels.")
@click.option("--renderer", type=click.Choice(["tiny", "egl"]), default="tiny", show_default=True,
              help="Camera renderer; egl runs one env per worker. Evaluate on the renderer you trained on.")
@click.option("--max-steps", type=int, help="Step limit per episode (default: the difficulty's).")
@click.option("--device", default="cpu", show_default=True)
def eval_cmd(policy, difficulty, task, episodes, seed, workers, envs_per_worker, out, video_dir, video_all,
             offline_data, drive, control, action_latency, action_scale, camera_noise, image_size, renderer,
             max_steps, device) -> None:
    """Score a policy closed-loop on a fixed, seeded episode set (plus offline metrics with --offline-data)."""
    from mobile_vla_sim.eval.rollout import EnvConfig
    from mobile_vla_sim.eval.run import EvalConfig, evaluate

    env = EnvConfig(drive=drive, control=control, image_size=image_size, renderer=renderer,
                    action_latency=action_latency, action_scale=action_scale, camera_noise=camera_noise,
                    max_steps=max_steps)
    cfg = EvalConfig(policy=policy, difficulty=difficulty, task=task, episodes=episodes, seed=seed, workers=workers,
                     envs_per_worker=envs_per_worker, out=out, video_dir=video_dir, video_all=video_all,
                     offline_data=offline_data, device=device, env=env)
    try:
        result = evaluate(cfg)
    except (ValueError, FileNotFoundError) as err:
        raise UserError(str(err)) from err
    click.echo(result.paths["summary.md"].read_text())
    click.echo(f"{len(result.records)} episodes, {result.episodes_per_min:.1f} episodes/min; results in {out}")
    if result.interrupted:
        click.echo(f"Interrupted: the {len(result.records)} finished episodes are saved in {out}.", err=True)
        sys.exit(130)


@main.command("train-rl")
@click.option("--timesteps", default=200_000, show_default=True)
@click.option("--difficulty", default="easy", show_default=True, type=click.Choice(["easy", "medium", "hard"]))
@click.option("--drive", type=click.Choice(["diff", "omni"]), default="diff", show_default=True)
@click.option("--n-envs", default=4, show_default=True, help="Envs PPO collects from.")
@click.option("--seed", default=0, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("ppo.zip"), show_default=True)
def train_rl_cmd(timesteps, difficulty, drive, n_envs, seed, out) -> None:
    """Train a PPO reference policy on the privileged state; score it with `eval --policy sb3:OUT`."""
    from mobile_vla_sim.policies.rl import RLConfig, train_rl

    try:
        path, interrupted = train_rl(RLConfig(out=out, timesteps=timesteps, difficulty=difficulty, drive=drive,
                                              seed=seed, n_envs=n_envs))
    except (ValueError, FileNotFoundError) as err:
        raise UserError(str(err)) from err
    click.echo(f"{'Interrupted: model so far saved' if interrupted else 'Saved'} to {path}; "
               f"evaluate it with `mvla-sim eval --policy sb3:{path}`")


# --- compare ----------------------------------------------------------------------------------
# (section owned by the comparison work)
@main.command()
@click.argument("checkpoint_a", type=click.Path())
@click.argument("checkpoint_b", type=click.Path())
@click.option("--data", type=click.Path(file_okay=False), required=True,
              help="Dataset folder; both policies are probed on the same windows of its val split.")
@click.option("--eval", "eval_dirs", type=click.Path(file_okay=False), nargs=2, default=None,
              metavar="A_RESULTS_DIR B_RESULTS_DIR", help="`mvla-sim eval --out` folders of A and B (closed loop).")
@click.option("--out", type=click.Path(file_okay=False), default="runs/compare", show_default=True)
@click.option("--max-windows", type=int, default=64, show_default=True, help="Validation windows probed.")
@click.option("--seed", type=int, default=0, show_default=True, help="Window sampling and t-SNE seed.")
@click.option("--alpha", type=float, default=0.05, show_default=True, help="Significance level of the McNemar test.")
def compare(checkpoint_a, checkpoint_b, data, eval_dirs, out, max_windows, seed, alpha) -> None:
    """Compare two checkpoints (e.g. frozen vs LoRA): representations, losses, success, hypotheses H1-H3."""
    from mobile_vla_sim.eval.compare import CompareConfig, compare as run_compare

    try:
        cfg = CompareConfig(checkpoint_a=checkpoint_a, checkpoint_b=checkpoint_b, data=data,
                            eval_dirs=tuple(eval_dirs) if eval_dirs else None, out=out, max_windows=max_windows,
                            seed=seed, alpha=alpha)
        result = run_compare(cfg)
    except (ValueError, FileNotFoundError) as err:
        raise UserError(str(err)) from err
    except KeyboardInterrupt:
        raise UserError("interrupted: nothing was written; run the same command again") from None
    for name, h in result["hypotheses"].items():
        click.echo(f"{name} {h['measure']}: {h['value']:.4f} {h['op']} {h['threshold']} -> "
                   f"{'holds' if h['holds'] else 'does not hold'}")
    click.echo(f"report: {cfg.out / 'report.md'}")

# --- quickstart -------------------------------------------------------------------------------


@main.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/quickstart"),
              show_default=True, help="Everything goes below this folder; re-running resumes.")
@click.option("--episodes", type=click.IntRange(min=8), help="Demonstrations to generate [default: 200].")
@click.option("--frozen-epochs", type=click.IntRange(min=1), help="[default: 10]")
@click.option("--lora-epochs", type=click.IntRange(min=1), help="[default: 6]")
@click.option("--eval-episodes", type=click.IntRange(min=1), help="Closed-loop episodes per (difficulty, task) "
              "[default: 10].")
@click.option("--workers", type=click.IntRange(min=1), help="[default: 2]")
@click.option("--seed", type=int, help="[default: 0]")
def quickstart(out: Path, **options) -> None:
    """Generate demos, train tiny frozen + LoRA policies, evaluate them with baselines, compare: no download, CPU only.

    Defaults live in `mobile_vla_sim.quickstart.QuickstartConfig`.
    """
    from mobile_vla_sim.quickstart import QuickstartConfig, run_quickstart

    given = {k: v for k, v in options.items() if v is not None}
    try:
        paths = run_quickstart(QuickstartConfig(out=out, **given), echo=click.echo)
    except KeyboardInterrupt:
        raise UserError(f"interrupted: finished work is kept under {out}; run the same command again to resume") \
            from None
    click.echo("\nDone. Open:")
    for name, path in paths.items():
        click.echo(f"  {name:<18} {path}")


if __name__ == "__main__":
    sys.exit(main())
