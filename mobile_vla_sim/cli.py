"""`mvla-sim` command line: each command is one config dataclass turned into options, and one library call.

Options are generated from the dataclass fields (`mobile_vla_sim.config.knob`): name, type, default, help, choices.
Every command also takes `--config FILE.yaml` (any option; the command line overrides it) and `--print-config`.
One error boundary (`Main.invoke`): expected conditions (`MvlaError`) become one line and exit 1, Ctrl-C exits 130
with what was kept, anything else is a bug: a short message and a log file, or the traceback with `--debug`.
"""

from __future__ import annotations

import dataclasses
import signal
import sys
import tempfile
import threading
import traceback
from pathlib import Path
from typing import Any, Callable

import click
from click.core import ParameterSource

from mobile_vla_sim.version import __version__
from mobile_vla_sim.config import build, flat_fields, load_yaml, option_name, to_yaml, unwrap_optional
from mobile_vla_sim.errors import ConfigError, Interrupted, MvlaError

#: Where an unexpected error's traceback is written.
ERROR_LOG = Path(tempfile.gettempdir()) / "mvla-sim-error.log"


class UserError(click.ClickException):
    """A one-line error that tells the user what is wrong and how to fix it."""


class Main(click.Group):
    """The command group with the package's one error boundary. SIGTERM (`kill`, a cluster's time limit) stops a
    command as Ctrl-C does, keeping what finished, and exits 143 (128 + SIGTERM) instead of 130."""

    def invoke(self, ctx: click.Context) -> Any:
        terminated: list[int] = []

        def on_sigterm(signum: int, frame: Any) -> None:
            terminated.append(signum)
            raise KeyboardInterrupt

        main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, on_sigterm) if main_thread else None
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except KeyboardInterrupt as err:
            kept = f": {err}" if isinstance(err, Interrupted) else "."
            click.echo(f"{'Terminated' if terminated else 'Interrupted'}{kept}", err=True)
            ctx.exit(128 + signal.SIGTERM if terminated else 130)
        except MvlaError as err:
            if ctx.obj and ctx.obj.get("debug") and _foreign_cause(err):
                raise  # it wraps a foreign error (a plugin's): --debug shows its traceback
            raise UserError(str(err)) from None
        except Exception as err:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            ERROR_LOG.write_text(traceback.format_exc())
            raise UserError(f"unexpected {type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''} "
                            f"(a bug: traceback in {ERROR_LOG}; re-run with `mvla-sim --debug ...` to see it)") \
                from None
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)


def _foreign_cause(err: BaseException) -> bool:
    """Whether an error's chain of causes holds one that is not ours (a plugin's or a library's exception)."""
    while err.__cause__ is not None:
        err = err.__cause__
        if not isinstance(err, MvlaError):
            return True
    return False


@click.group(cls=Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mvla-sim")
@click.option("--debug", is_flag=True, help="Show the full traceback of unexpected errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Evaluate vision-language-action policies for a mobile robot in simulation."""
    ctx.obj = {"debug": debug}


def _param(name: str, f: dataclasses.Field, tp: Any) -> click.Parameter:
    """The click option (or argument) of one knob."""
    meta = f.metadata or {}
    inner, optional = unwrap_optional(tp)
    required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    default = None if required else (f.default if f.default is not dataclasses.MISSING else f.default_factory())
    choices = meta.get("choices")
    nargs = meta.get("nargs", 1)
    if choices:
        ptype: Any = click.Choice([str(c) for c in choices])
    elif inner is bool:
        ptype = bool
    elif inner in (int, float):
        ptype = inner
    elif inner is Path or nargs > 1:
        ptype = click.Path(path_type=Path)
    else:
        ptype = str
    multiple = bool(meta.get("multiple"))
    if isinstance(default, tuple) and nargs == 1 and not multiple:
        default = ",".join(map(str, default))
    if meta.get("argument"):
        return click.Argument([name], type=ptype, required=True)
    flags = [meta.get("flag") or option_name(name)]
    if inner is bool:
        flags = [f"{flags[0]}/--no-{flags[0][2:]}"]
    return click.Option([*flags, name], type=ptype, default=default, nargs=nargs, multiple=multiple,
                        show_default=default not in (None, ()),
                        help=meta.get("help", "") + (" [required]" if required else ""))


def config_command(cls: type, name: str) -> Callable[[Callable[[Any], None]], click.Command]:
    """Register `fn(cfg)` as command `name`, its options generated from config dataclass `cls`."""
    knobs = {k: v for k, v in flat_fields(cls).items() if (v[1].metadata or {}).get("cli", True)}

    def wrap(fn: Callable[[Any], None]) -> click.Command:
        params = [_param(k, f, tp) for k, (_, f, tp) in knobs.items()]
        params += [click.Option(["--config"], type=click.Path(dir_okay=False, path_type=Path),
                                help="YAML file of options (nested as printed by --print-config, or flat); "
                                     "options given on the command line override it."),
                   click.Option(["--print-config"], is_flag=True, help="Print the resolved config as YAML and exit.")]

        def callback(config: Path | None, print_config: bool, **given: Any) -> None:
            ctx = click.get_current_context()
            values = load_yaml(config, cls) if config else {}
            values.update({k: v for k, v in given.items()
                           if ctx.get_parameter_source(k) not in (ParameterSource.DEFAULT, None)})
            missing = [option_name(k) for k, (_, f, _) in knobs.items() if k not in values
                       and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
            if missing:
                raise ConfigError(f"missing {', '.join(missing)} (give it on the command line or in --config)")
            cfg = build(cls, values)
            if print_config:
                click.echo(to_yaml(cfg), nl=False)
                return
            fn(cfg)

        command = click.Command(name, callback=callback, params=params, help=fn.__doc__,
                                context_settings={"show_default": True})
        main.add_command(command)
        return command
    return wrap


# --- commands: each a config dataclass and one library call -------------------------------------------------------
from mobile_vla_sim.datasets.generate import GenerateConfig  # noqa: E402  (after the helpers they use)
from mobile_vla_sim.analysis.ab import ABConfig  # noqa: E402
from mobile_vla_sim.analysis.plan import PlanConfig  # noqa: E402
from mobile_vla_sim.analysis.agree import AgreeConfig  # noqa: E402
from mobile_vla_sim.analysis.compare import CompareConfig  # noqa: E402
from mobile_vla_sim.probe import ProbeConfig  # noqa: E402
from mobile_vla_sim.eval.run import EvalConfig  # noqa: E402
from mobile_vla_sim.policies.config import TrainConfig  # noqa: E402
from mobile_vla_sim.policies.rl import RLConfig  # noqa: E402
from mobile_vla_sim.quickstart import QuickstartConfig  # noqa: E402
from mobile_vla_sim.serving.server import ServeConfig  # noqa: E402
from mobile_vla_sim.study.run import StudyConfig  # noqa: E402


@config_command(GenerateConfig, "generate")
def generate(cfg: GenerateConfig) -> None:
    """Write scripted-expert demonstrations as real-layout HDF5 episodes plus a dataset.json manifest."""
    from mobile_vla_sim.datasets.generate import generate_dataset

    try:
        click.echo(generate_dataset(cfg))
        for warning in cfg.warnings:
            click.echo(f"Note: {warning}", err=True)
    except KeyboardInterrupt:
        raise Interrupted(f"finished episodes are kept in {cfg.out}; run the same command again to resume") from None


@config_command(TrainConfig, "train")
def train(cfg: TrainConfig) -> None:
    """Train a Kosmos-2 + LSTM VLA policy, frozen or with LoRA, into one safetensors .ckpt."""
    from mobile_vla_sim.policies.train import train as train_policy

    result = train_policy(cfg)
    click.echo(f"best val loss {result.best_val_loss:.4f} at epoch {result.best_epoch}; {result.trainable_params:,} "
               f"trainable of {result.total_params:,} parameters; checkpoint {result.checkpoint}")


@config_command(EvalConfig, "eval")
def eval_cmd(cfg: EvalConfig) -> None:
    """Score a policy closed-loop on a fixed, seeded episode set (plus offline metrics with --offline-data)."""
    from mobile_vla_sim.eval.run import evaluate

    result = evaluate(cfg)
    for warning in result.warnings:
        click.echo(f"Warning: {warning}", err=True)
    if cfg.out is not None:
        click.echo(result.paths["summary.md"].read_text())
    click.echo(f"{len(result.records)} episodes, {result.episodes_per_min:.1f} episodes/min; results in {cfg.out}")
    if cfg.record is not None:
        click.echo(f"episodes recorded in {cfg.record} (the real HDF5 layout: train on them, or export them)")
    if result.interrupted:
        raise Interrupted(f"the {len(result.records)} finished episodes are saved in {cfg.out}; run the same command "
                          "again to finish the rest")


@config_command(ProbeConfig, "probe")
def probe(cfg: ProbeConfig) -> None:
    """Probe robustness: the clean episodes and every perturbation of a suite on the same scenes, paired statistics,
    failure labels, text sensitivity; writes probe.md, probe.json and figures."""
    from mobile_vla_sim.probe import probe as run_probe

    result = run_probe(cfg, echo=click.echo)
    click.echo(f"\n{result.summary['verdict']}\nreport: {result.paths['probe.md']}")
    if result.interrupted:
        raise Interrupted(f"finished episodes are kept under {cfg.out}; run the same command again to finish")


@config_command(RLConfig, "train-rl")
def train_rl_cmd(cfg: RLConfig) -> None:
    """Train a PPO reference policy on the privileged state; score it with `eval --policy sb3:OUT`."""
    from mobile_vla_sim.policies.rl import train_rl

    path, interrupted = train_rl(cfg)
    if interrupted:
        raise Interrupted(f"the model so far is saved to {path}")
    click.echo(f"Saved to {path}; evaluate it with `mvla-sim eval --policy sb3:{path}`")


@config_command(CompareConfig, "compare")
def compare(cfg: CompareConfig) -> None:
    """Compare two checkpoints (e.g. frozen vs LoRA): representations, losses, success, hypotheses H1-H3."""
    from mobile_vla_sim.analysis.compare import compare as run_compare

    try:
        result = run_compare(cfg)
    except KeyboardInterrupt:
        raise Interrupted("nothing was written; run the same command again") from None
    for name, h in result["hypotheses"].items():
        click.echo(f"{name} {h['measure']}: {h['value']:.4f} {h['op']} {h['threshold']} -> "
                   f"{'holds' if h['holds'] else 'does not hold'}")
    click.echo(f"report: {cfg.out / 'report.md'}")


@config_command(PlanConfig, "plan")
def plan(cfg: PlanConfig) -> None:
    """How many episodes a question needs: a success rate to +-W, a paired difference D between two policies (with
    the discordance assumed), and what N episodes can detect."""
    from mobile_vla_sim.analysis.plan import plan as make_plan, plan_markdown

    click.echo(plan_markdown(make_plan(cfg)), nl=False)


@config_command(ABConfig, "ab")
def ab(cfg: ABConfig) -> None:
    """Sequential A/B test of two policies on the same episode stream: stops as soon as one is better (valid under
    optional stopping) or after --max-episodes pairs; resumable; writes ab.md, ab.json and each policy's episodes."""
    from mobile_vla_sim.analysis.ab import run_ab

    result = run_ab(cfg, echo=click.echo)
    if result.interrupted:
        raise Interrupted(f"the finished episode pairs are kept in {cfg.out}; run the same command again to resume")
    click.echo(result.paths["ab.md"].read_text())


@config_command(ServeConfig, "serve")
def serve(cfg: ServeConfig) -> None:
    """Serve a policy over WebSocket (openpi's msgpack-numpy protocol), batching requests from every client."""
    from mobile_vla_sim.serving.server import serve as run_server

    try:
        run_server(cfg, log=click.echo)
    except KeyboardInterrupt:
        raise Interrupted("the server stopped") from None


@config_command(AgreeConfig, "agree")
def agree(cfg: AgreeConfig) -> None:
    """Sim-vs-real agreement of several policies: MMRV and Pearson r of sim against real-robot success rates."""
    from mobile_vla_sim.analysis.agree import agree as run_agree, agree_markdown

    click.echo(agree_markdown(run_agree(cfg.sim, cfg.real, cfg.out)))


@config_command(QuickstartConfig, "quickstart")
def quickstart(cfg: QuickstartConfig) -> None:
    """Generate demos, train tiny frozen + LoRA policies, evaluate them with baselines, compare: no download, CPU
    only."""
    from mobile_vla_sim.quickstart import run_quickstart

    try:
        paths = run_quickstart(cfg, echo=click.echo)
    except KeyboardInterrupt:
        raise Interrupted(f"finished work is kept under {cfg.out}; run the same command again to resume") from None
    click.echo("\nDone. Open:")
    for name, path in paths.items():
        click.echo(f"  {name:<18} {path}")


@config_command(StudyConfig, "study")
def study(cfg: StudyConfig) -> None:
    """Frozen vs LoRA across dataset sizes and seeds from one spec: data once, every cell trained and scored on the
    same episodes, cached by a hash of its config; report with success vs size, McNemar per size, H1-H3."""
    from mobile_vla_sim.study.run import run_study

    paths = run_study(cfg, echo=click.echo)
    click.echo(paths["report"].read_text())
    click.echo("Open:")
    for name, path in paths.items():
        click.echo(f"  {name:<8} {path}")


# --- export-checkpoint: this package's checkpoints in other stacks' layouts (policies/robovlms.py) ------------------
from mobile_vla_sim.policies.robovlms_config import CheckpointExportConfig  # noqa: E402


@config_command(CheckpointExportConfig, "export-checkpoint")
def export_checkpoint(cfg: CheckpointExportConfig) -> None:
    """Write a checkpoint of this package in the real project's Lightning layout; `eval --policy OUT` reproduces it,
    and the differences their unmodified code cannot load are listed."""
    from mobile_vla_sim.policies.checkpoint import load_checkpoint
    from mobile_vla_sim.policies.robovlms import export_checkpoint as export

    differences = export(*load_checkpoint(cfg.checkpoint), cfg.out, source=str(cfg.checkpoint))
    click.echo(f"wrote {cfg.out} ({cfg.format} layout); `mvla-sim eval --policy {cfg.out}` evaluates it as the "
               "original")
    for difference in differences:
        click.echo(f"  differs from their stock policy: {difference}")


# --- dataset formats: export and import (LeRobotDataset v3.0) ------------------------------------------------------
from mobile_vla_sim.datasets.lerobot import ExportConfig, ImportConfig  # noqa: E402


@config_command(ExportConfig, "export")
def export(cfg: ExportConfig) -> None:
    """Export HDF5 episodes (generated or the real robot's) to another format: a LeRobotDataset v3.0."""
    from mobile_vla_sim.datasets.lerobot import export_lerobot

    try:
        click.echo(export_lerobot(cfg))
    except KeyboardInterrupt:
        raise Interrupted(f"nothing was written to {cfg.out} (the export is atomic); run the same command again") \
            from None


@config_command(ImportConfig, "import")
def import_cmd(cfg: ImportConfig) -> None:
    """Import a LeRobotDataset v3.0 as HDF5 episodes in the real layout (for the real loaders and `train`)."""
    from mobile_vla_sim.datasets.lerobot import import_lerobot

    try:
        click.echo(import_lerobot(cfg))
    except KeyboardInterrupt:
        raise Interrupted(f"nothing was written to {cfg.out} (the import is atomic); run the same command again") \
            from None


# --- calibrate (issue 25): fit the sim's camera and look to a lab's real frames, or score a config against them ---
from mobile_vla_sim.calibrate.run import CalibrateConfig  # noqa: E402


@config_command(CalibrateConfig, "calibrate")
def calibrate_cmd(cfg: CalibrateConfig) -> None:
    """Fit the sim's camera (height, pitch, field of view), colours, textures and light to the start frames of real
    episodes; writes calibrated.yaml (an env config for eval, generate, probe) and calibration.md. With --score-only,
    print how far the real frames are from an env config (--config FILE)."""
    from mobile_vla_sim.calibrate.run import calibrate, score

    if cfg.score_only:
        click.echo(score(cfg).describe())
        return
    result = calibrate(cfg, echo=click.echo)
    o = result.outcome
    click.echo(f"distance {o.before.distance:.4f} -> {o.after.distance:.4f} over {len(o.names)} episodes in "
               f"{o.seconds:.0f} s\nconfig: {result.paths['calibrated.yaml']}\n"
               f"report: {result.paths['calibration.md']}")


if __name__ == "__main__":
    sys.exit(main())
