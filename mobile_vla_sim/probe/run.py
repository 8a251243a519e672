"""`probe(ProbeConfig)`: the robustness probe, every perturbation scored against the clean run on the same episodes.

The real project's policies failed in ways its success numbers never named: the same actions for left and right,
no reaction to "Stop", deployment mismatches. Peers perturb instructions, lighting and cameras but compare unpaired
means. Here every perturbation is one change to the clean evaluation (`probe.perturbations`), run with `evaluate`
on the same seeded scenes into its own folder (`OUT/<name>/`, resumable), and compared episode by episode with the
clean run (`OUT/clean/`, `probe.paired`). Text sensitivity (`probe.text`) measures, without the simulator, how much
the actions change on recorded frames when only the instruction changes. The policy is loaded once for all of it.

The probe's baseline ("clean") is the policy under its deployment (`--deploy`), so "policy P deployed as D" can be
probed; each perturbation is applied on top of that baseline.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from mobile_vla_sim.config import check_knobs, knob, to_dict
from mobile_vla_sim.envs.config import EnvConfig
from mobile_vla_sim.envs.engine import PoolConfig
from mobile_vla_sim.envs.tasks import get_family
from mobile_vla_sim.errors import EvalError, MvlaError
from mobile_vla_sim.eval.metrics import share
from mobile_vla_sim.eval.records import EpisodeRecord
from mobile_vla_sim.eval.run import EvalConfig, as_trained, eval_knob, evaluate, load_eval_policy
from mobile_vla_sim.eval.stats import ADJUSTMENTS
from mobile_vla_sim.eval.taxonomy import failure_summary
from mobile_vla_sim.policies.deploy import DeployConfig, deploy_policy
from mobile_vla_sim.policy import Policy
from mobile_vla_sim.probe.paired import STOP_OBEYED_M, adjust_family, compare_condition, probe_detectable
from mobile_vla_sim.probe.perturbations import STOP_SENTENCE, SUITES, conditions, load_suite
from mobile_vla_sim.probe.text import text_sensitivity


@dataclass
class ProbeConfig:
    """What to probe: the policy under its deployment (the clean baseline), the episode set, and the suite."""

    policy: str = eval_knob("policy")
    policy_args: tuple[str, ...] = eval_knob("policy_args")
    deploy: DeployConfig = eval_knob("deploy", help="YAML deployment stack of the clean baseline (DeployConfig); "
                                      "every perturbation is applied on top of it")
    device: str = eval_knob("device")
    difficulty: str = eval_knob("difficulty")
    episodes: int = eval_knob("episodes", help="episodes per (difficulty, task) for the clean run and every "
                               "perturbation (the same scenes)")
    seed: int = eval_knob("seed")
    out: Path = knob(Path("runs/probe"), "folder for probe.md, probe.json, figures and one eval folder per "
                     "condition (clean/, <perturbation>/); re-running the same command resumes")
    suite: str = knob("default", f"perturbations: a built-in suite ({', '.join(SUITES)}) or a YAML file of "
                      "`perturbation: strength`")
    text_data: Path | None = knob(None, "dataset folder whose recorded frames are replayed for text sensitivity "
                                  "[default: a few expert episodes generated into OUT/text_data]")
    text_episodes: int = knob(4, "episodes generated (or read from --text-data) for text sensitivity; 0 skips it",
                              min=0)
    alpha: float = knob(0.05, "significance level of the McNemar tests, after the adjustment for multiplicity",
                        min=1e-6, max=0.5)
    adjust: str = knob("holm", "multiplicity adjustment over every perturbation x difficulty test of the probe: holm "
                       "(chance of any false star <= alpha) or bh (Benjamini-Hochberg: expected share of false stars "
                       "<= alpha)", choices=tuple(ADJUSTMENTS))
    env: EnvConfig = field(default_factory=EnvConfig)
    pool: PoolConfig = field(default_factory=PoolConfig)

    def __post_init__(self) -> None:
        check_knobs(self)
        self.out = Path(self.out)

    def eval_config(self) -> EvalConfig:
        """The clean run."""
        return EvalConfig(policy=self.policy, policy_args=self.policy_args, difficulty=self.difficulty, task="both",
                          episodes=self.episodes, seed=self.seed, out=self.out / "clean", device=self.device,
                          deploy=self.deploy, env=self.env, pool=self.pool)


def _usable_text_data(data: Path) -> None:
    """`--text-data` holds successful episodes (a one-line error naming the option otherwise)."""
    from mobile_vla_sim.datasets.reader import EpisodeDataset

    try:
        ds = EpisodeDataset(data, only_success=True)
    except MvlaError as err:
        raise EvalError(f"--text-data: {err}") from None
    if not len(ds):
        raise EvalError(f"--text-data {data} holds no successful episode to replay; pass a dataset made with "
                        "`mvla-sim generate`, or leave --text-data out")


def _text_episodes(cfg: ProbeConfig, clean: EvalConfig, progress: bool) -> list:
    """The recorded episodes to replay: `--text-data`, else a few expert episodes generated like the clean run."""
    from mobile_vla_sim.datasets.reader import EpisodeDataset

    data = cfg.text_data
    if data is None:
        from mobile_vla_sim.datasets.generate import GenerateConfig, generate_dataset

        data = cfg.out / "text_data"
        levels = get_family(clean.env.task_family).parse_difficulties(cfg.difficulty)
        difficulty = levels[0] if len(levels) == 1 else "mix"
        generate_dataset(GenerateConfig(episodes=cfg.text_episodes, out=data, difficulty=difficulty, seed=cfg.seed,
                                        env=clean.env, pool=cfg.pool), progress=progress)
    ds = EpisodeDataset(data, only_success=True)
    return [ds[i] for i in range(min(cfg.text_episodes, len(ds)))]


def measure_text_sensitivity(cfg: ProbeConfig, clean: EvalConfig, policy: Policy,
                             progress: bool = True) -> dict | None:
    """Text sensitivity of `policy` behind the baseline's frame and action stages (its instruction stages and chunk
    execution left out, so the policy hears exactly the sentences compared)."""
    if cfg.text_episodes == 0:
        return None
    episodes = _text_episodes(cfg, clean, progress)
    family = get_family(clean.env.task_family)
    sentences = {**family.instruction_set(clean.env.instructions), "stop": STOP_SENTENCE}
    stages = replace(clean.deploy, instruction=None, instructions=None, swap_sides=False, execute_chunk=1)
    deployed = deploy_policy(policy, stages, clean.env.color_order, clean.env.instructions, family)
    try:
        result = text_sensitivity(deployed, episodes, sentences)
    finally:
        if deployed is not policy:
            deployed.close()
    return {**result, "data": str(cfg.text_data or cfg.out / "text_data")}


@dataclass
class ProbeResult:
    summary: dict
    paths: dict[str, Path]
    interrupted: bool


def probe(cfg: ProbeConfig, progress: bool = True, echo: Callable[[str], None] = print,
          policy: Policy | None = None) -> ProbeResult:
    """Run the clean episode set and every perturbation of the suite on the same scenes, measure text
    sensitivity, and write probe.md, probe.json and the figures into `cfg.out`.

    `policy`: an already loaded policy (it stays open); by default it is loaded here, once for every condition.
    Unset env knobs are taken from what the policy was trained with, as `evaluate` does. Ctrl-C stops after keeping
    every finished episode; the report covers what ran.
    """
    from mobile_vla_sim.probe.report import write_probe

    if cfg.text_data is not None and cfg.text_episodes:  # its errors before the closed-loop conditions, not after
        _usable_text_data(cfg.text_data)
    owned = policy is None
    policy = load_eval_policy(cfg.eval_config()) if owned else policy
    try:
        clean = as_trained(cfg.eval_config(), policy)
        family = get_family(clean.env.task_family)
        perturbations = load_suite(cfg.suite, family)
        window = policy.window if clean.deploy.window is None or policy.window is None else clean.deploy.window
        chunks = hasattr(policy, "act_chunk_batch") or policy.chunk_size > 1
        conds = conditions(perturbations, clean, window, chunks, cfg.out)
        runnable = [c for c in conds if c.eval is not None]
        results: dict[str, list[EpisodeRecord]] = {}
        interrupted, label = False, None
        for i, (name, ecfg) in enumerate([("clean", clean), *((c.name, c.eval) for c in runnable)]):
            echo(f"[{i + 1}/{len(runnable) + 1}] {name} → {ecfg.out}")
            result = evaluate(ecfg, policy=policy, progress=progress)
            results[name], label = result.records, label or result.policy
            if result.interrupted:
                interrupted = True
                break
        text = None if interrupted else measure_text_sensitivity(cfg, clean, policy, progress)
    finally:
        if owned:
            policy.close()
    summary = {"policy": label, "config": {**to_dict(cfg), "clean": to_dict(clean)},
               "interrupted": interrupted, "alpha": cfg.alpha, "stop_obeyed_m": STOP_OBEYED_M,
               "clean": {"episodes": len(results["clean"]), "success": share([r.success for r in results["clean"]]),
                         "failures": failure_summary(results["clean"], family.labels)},
               "perturbations": {}, "text_sensitivity": text}
    for c in conds:
        p = c.perturbation
        entry: dict[str, Any] = {"kind": p.kind, "strength": c.strength, "what": p.describe(c.strength),
                                 "expect": p.expect}
        if c.eval is None:
            entry.update(status="n/a", reason=c.reason)
        elif c.name not in results:
            entry.update(status="not run", reason="interrupted")
        else:
            entry.update(status="run", out=str(c.eval.out), deployment=to_dict(c.eval.deploy),
                         **compare_condition(results["clean"], results[c.name], family.labels))
        summary["perturbations"][c.name] = entry
    summary["adjustment"] = adjust_family(summary["perturbations"], cfg.adjust, cfg.alpha)
    summary["detectable"] = probe_detectable(summary["perturbations"], len(results["clean"]), summary["adjustment"])
    paths = write_probe(cfg.out, summary)
    return ProbeResult(summary, paths, interrupted)
