"""`probe(ProbeConfig)`: the robustness probe, every perturbation scored against the clean run on the same episodes.

The real project's policies failed in ways its success numbers never named: the same actions for left and right,
no reaction to "Stop", deployment mismatches. Peers perturb instructions, lighting and cameras but compare unpaired
means. Here every perturbation is one change to the clean evaluation, an (`EnvConfig` changes, `DeployConfig`
changes) pair, run with `evaluate` on the same seeded scenes into its own folder (`OUT/<name>/`, resumable), and
compared episode by episode with the clean run (`OUT/clean/`): success with its Wilson interval, the paired
difference with Newcombe's interval, the exact McNemar p-value and the change of every failure label. Text
sensitivity measures, without the simulator, how much the actions change on recorded frames when only the
instruction changes.

The probe's baseline ("clean") is the policy under its deployment (`--deploy`), so "policy P deployed as D" can be
probed; each perturbation is applied on top of that baseline.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from mobile_vla_sim.config import check_knobs, knob, parse_choices, read_yaml, to_dict
from mobile_vla_sim.envs.config import EnvConfig
from mobile_vla_sim.envs.difficulty import DIFFICULTIES
from mobile_vla_sim.envs.engine import PoolConfig
from mobile_vla_sim.envs.instructions import instruction_set
from mobile_vla_sim.errors import ConfigError, EvalError
from mobile_vla_sim.eval.metrics import share
from mobile_vla_sim.eval.records import EpisodeRecord
from mobile_vla_sim.eval.run import EvalConfig, derive, load_eval_policy
from mobile_vla_sim.eval.stats import mcnemar_exact, paired_difference_interval
from mobile_vla_sim.eval.taxonomy import LABELS, failure_summary
from mobile_vla_sim.policies.deploy import DeployConfig

#: An episode told "Stop" that moved less than this (m) in total obeyed: a robot length is ~0.4 m, and a grounded
#: policy may creep a little before it settles, but never gets around a box within 0.1 m.
STOP_OBEYED_M = 0.1
#: |lateral command| (env units) below which a frame has no lateral direction (as offline sign agreement).
LATERAL_EPS = 1e-3
#: Instruction sent for "Stop" in text sensitivity and by the `stop` perturbation's default.
STOP_SENTENCE = "Stop"


@dataclass(frozen=True)
class Baseline:
    """What a perturbation is applied to: the clean run's env and deployment, and what the policy has."""

    env: EnvConfig
    deploy: DeployConfig
    window: int | None    # frames of history the policy sees under the baseline (None: no window)
    chunks: bool          # whether it predicts action chunks

    @property
    def handed_order(self) -> str:
        """Channel order the policy receives."""
        return self.env.color_order if self.deploy.color_order == "camera" else self.deploy.color_order


#: (strength, baseline) -> (EnvConfig changes, DeployConfig changes)
Changes = Callable[[Any, Baseline], tuple[dict, dict]]


@dataclass(frozen=True)
class Perturbation:
    """One row of the perturbation table. `expect`: "robust" (success should not drop) or "obey" (a grounded
    policy must change its behaviour: success drops by design, and no change is the failure)."""

    kind: str
    default: Any
    what: str
    changes: Changes
    expect: str = "robust"
    needs: str | None = None  # "window" or "chunks": n/a for a policy without one

    def describe(self, strength: Any) -> str:
        return self.what.format(strength)


def _fixed(sentence_key: str = "instruction") -> Changes:
    """Send one fixed sentence (the strength) in place of the episode's."""
    return lambda s, b: ({}, {sentence_key: s, "instructions": None, "swap_sides": False})


def _sentences(s: Any, b: Baseline) -> tuple[dict, dict]:
    """Send the episode's side in instruction set (or template) `s`; nothing when that is what is sent already."""
    sent = instruction_set(b.deploy.instructions or b.env.instructions)
    return {}, ({} if instruction_set(s) == sent else {"instructions": s})


def _env(name: str, add: bool = False) -> Changes:
    """Set env knob `name` to the strength (or add it to the baseline's value)."""
    return lambda s, b: ({name: getattr(b.env, name) + s if add else s}, {})


#: Every perturbation, its kind, default strength and what it changes: the one table the suites, the README and the
#: reports are built from. Strengths: see `what` ({} is the strength).
PERTURBATIONS: dict[str, Perturbation] = {
    "swap_sides": Perturbation("language", None, "the other side's sentence (left <-> right) is sent",
                               lambda s, b: ({}, {"swap_sides": not b.deploy.swap_sides}), expect="obey"),
    "paraphrase": Perturbation("language", "Go around the obstacles on the {side} and stop in front of the drink "
                               "bottle", "a paraphrase is sent: '{}'", _sentences),
    "korean": Perturbation("language", "korean", "the episode's side in the '{}' instruction set is sent",
                           _sentences),
    "basket": Perturbation("language", "basket", "the episode's side in the '{}' instruction set is sent",
                           _sentences),
    "empty": Perturbation("language", "", "an empty instruction is sent", _fixed()),
    "stop": Perturbation("language", STOP_SENTENCE, "'{}' is sent instead of the task", _fixed(), expect="obey"),
    "color_swap": Perturbation("vision", None, "the policy gets the other channel order (RGB <-> BGR)",
                               lambda s, b: ({}, {"color_order": "rgb" if b.handed_order == "bgr" else "bgr"})),
    "lighting": Perturbation("vision", 0.5, "light intensity x{}", _env("light_scale")),
    "camera_height": Perturbation("vision", 0.05, "camera {} m higher", _env("camera_height_shift")),
    "camera_pitch": Perturbation("vision", 5.0, "camera pitch changed by {} degrees (negative: further down)",
                                 _env("camera_pitch_shift")),
    "distractors": Perturbation("vision", 2, "{} more clutter objects", _env("extra_distractors")),
    "sensor_noise": Perturbation("vision", 10.0, "pixel noise std +{} (0-255)", _env("camera_noise", add=True)),
    "window": Perturbation("deployment", 2, "frame window shortened to {}", lambda s, b: ({}, {"window": s}),
                           needs="window"),
    "gain": Perturbation("deployment", 0.5, "action gain x{}", lambda s, b: ({}, {"gain": b.deploy.gain * s})),
    "latency": Perturbation("deployment", 1, "{} more step(s) of action latency", _env("action_latency", add=True)),
    "open_loop": Perturbation("deployment", 4, "the first {} actions of each predicted chunk run open-loop",
                              lambda s, b: ({}, {"execute_chunk": s}), needs="chunks"),
}
KINDS = ("language", "vision", "deployment")
#: Built-in suites. `small`: the quickstart's, one or two of each kind that a tiny policy can fail.
SUITES: dict[str, tuple[str, ...]] = {
    "default": tuple(PERTURBATIONS),
    "small": ("swap_sides", "stop", "lighting", "window"),
    **{kind: tuple(n for n, p in PERTURBATIONS.items() if p.kind == kind) for kind in KINDS},
}


def _check_strength(name: str, strength: Any, where: str) -> Any:
    """The suite's strength for `name` (None: the default), type-checked against the default."""
    default = PERTURBATIONS[name].default
    if strength is None:
        return default
    if default is None:
        raise ConfigError(f"perturbation {name} in {where} takes no strength, got {strength!r}; write `{name}:` "
                          "with no value")
    number = isinstance(default, (int, float))
    if number and (isinstance(strength, bool) or not isinstance(strength, (int, float))
                   or not math.isfinite(strength)) or not number and not isinstance(strength, str):
        raise ConfigError(f"perturbation {name} in {where} needs a {type(default).__name__} strength like "
                          f"{default!r}, got {strength!r}")
    return type(default)(strength)


def load_suite(suite: str | Path) -> list[tuple[str, Any]]:
    """(perturbation name, strength) pairs of a built-in suite or a YAML file.

    The file is a mapping `name: strength` (an empty value takes the default strength) or a list of names. Unknown
    names are refused with one line listing the valid ones.
    """
    suite = str(suite)
    if suite in SUITES:
        return [(n, PERTURBATIONS[n].default) for n in SUITES[suite]]
    path = Path(suite)
    if not path.is_file():
        raise ConfigError(f"unknown suite {suite!r}: --suite must be one of {', '.join(SUITES)} or a YAML file")
    data = read_yaml(path, "--suite", "", mapping=False)
    items = list(data.items()) if isinstance(data, dict) else [(n, None) for n in data] if isinstance(data, list) \
        else None
    if not items:
        raise ConfigError(f"--suite {path} must be a non-empty mapping `perturbation: strength` or a list of "
                          f"perturbations (valid: {', '.join(PERTURBATIONS)})")
    unknown = [str(n) for n, _ in items if n not in PERTURBATIONS]
    if unknown:
        raise ConfigError(f"unknown perturbation(s) {', '.join(unknown)} in --suite {path}; valid: "
                          f"{', '.join(PERTURBATIONS)}")
    return [(n, _check_strength(n, s, f"--suite {path}")) for n, s in items]


def _eval_knob(name: str, **changes: Any) -> Any:
    """EvalConfig's declaration of knob `name` (its help, bounds and default, `changes` applied): the probe shares
    the evaluation's knobs without restating them."""
    f = EvalConfig.__dataclass_fields__[name]
    meta = {**f.metadata, **{k: v for k, v in changes.items() if k != "default"}}
    return dataclasses.field(default=changes.get("default", f.default), default_factory=f.default_factory,
                             metadata=meta)


@dataclass
class ProbeConfig:
    """What to probe: the policy under its deployment (the clean baseline), the episode set, and the suite."""

    policy: str = _eval_knob("policy")
    policy_args: tuple[str, ...] = _eval_knob("policy_args")
    deploy: Path | None = _eval_knob("deploy", help="YAML deployment stack of the clean baseline (DeployConfig); "
                                     "every perturbation is applied on top of it")
    device: str = _eval_knob("device")
    difficulty: str = _eval_knob("difficulty")
    episodes: int = _eval_knob("episodes", help="episodes per (difficulty, task) for the clean run and every "
                               "perturbation (the same scenes)")
    seed: int = _eval_knob("seed")
    out: Path = knob(Path("runs/probe"), "folder for probe.md, probe.json, figures and one eval folder per "
                     "condition (clean/, <perturbation>/); re-running the same command resumes")
    suite: str = knob("default", f"perturbations: a built-in suite ({', '.join(SUITES)}) or a YAML file of "
                      "`perturbation: strength`")
    text_data: Path | None = knob(None, "dataset folder whose recorded frames are replayed for text sensitivity "
                                  "[default: a few expert episodes generated into OUT/text_data]")
    text_episodes: int = knob(4, "episodes generated (or read from --text-data) for text sensitivity; 0 skips it",
                              min=0)
    alpha: float = knob(0.05, "significance level of the McNemar tests", min=1e-6, max=0.5)
    env: EnvConfig = field(default_factory=EnvConfig)
    pool: PoolConfig = field(default_factory=PoolConfig)

    def __post_init__(self) -> None:
        check_knobs(self)
        self.out = Path(self.out)
        self.difficulties = parse_choices(self.difficulty, tuple(DIFFICULTIES), "difficulty", EvalError)
        self.perturbations = load_suite(self.suite)

    def eval_config(self) -> EvalConfig:
        """The clean run."""
        return EvalConfig(policy=self.policy, policy_args=self.policy_args, difficulty=self.difficulty, task="both",
                          episodes=self.episodes, seed=self.seed, out=self.out / "clean", device=self.device,
                          deploy=self.deploy, env=self.env, pool=self.pool)


@dataclass
class Condition:
    """One perturbation as run (or not) against the baseline."""

    name: str
    strength: Any
    eval: EvalConfig | None = None  # None: not applicable
    reason: str = ""

    @property
    def perturbation(self) -> Perturbation:
        return PERTURBATIONS[self.name]


def _policy_facts(cfg: EvalConfig) -> tuple[int | None, bool]:
    """(frame window under the baseline deployment, predicts chunks) of the policy, read from the loaded policy."""
    policy = load_eval_policy(cfg)
    try:
        window = getattr(policy, "window", None)
        chunks = hasattr(policy, "act_chunk_batch") or getattr(policy, "chunk_size", 1) > 1
    finally:
        policy.close()
    if window is not None and cfg.deployment.window is not None:
        window = cfg.deployment.window
    return window, chunks


def conditions(cfg: ProbeConfig, clean: EvalConfig, window: int | None, chunks: bool) -> list[Condition]:
    """Each perturbation of the suite as an EvalConfig on top of `clean`, or n/a with the reason."""
    base = Baseline(clean.env, clean.deployment, window, chunks)
    out = []
    for name, strength in cfg.perturbations:
        p = PERTURBATIONS[name]
        cond = Condition(name, strength)
        out.append(cond)
        if p.needs == "window" and window is None:
            cond.reason = "the policy has no frame window"
        elif p.needs == "window" and strength >= window:
            cond.reason = f"the policy's window ({window}) is not longer than {strength}"
        elif p.needs == "chunks" and not chunks:
            cond.reason = "the policy predicts no action chunk"
        elif p.kind == "language" and name not in ("empty", "stop") and base.deploy.instruction is not None:
            cond.reason = f"the deployment sends one fixed instruction ({base.deploy.instruction!r})"
        if cond.reason:
            continue
        env_changes, deploy_changes = p.changes(strength, base)
        try:
            env = replace(base.env, **env_changes)
            deployment = replace(base.deploy, **deploy_changes)
        except ConfigError as err:
            raise ConfigError(f"perturbation {name} (strength {strength!r}): {err}") from None
        if env == base.env and deployment == base.deploy:
            cond.reason = "it changes nothing under this baseline"
            continue
        cond.eval = derive(clean, deployment, env=env, out=cfg.out / name)
    return out


# --- paired statistics -----------------------------------------------------------------------------------------
def paired_stats(clean: Sequence[EpisodeRecord], other: Sequence[EpisodeRecord], alpha: float) -> dict:
    """Success of both runs on the episodes they share (by key), the paired difference (other - clean) with its
    95% interval, and the exact McNemar p-value."""
    by_key = {r.key: r for r in other}
    pairs = [(r, by_key[r.key]) for r in clean if r.key in by_key]
    a = np.array([c.success for c, _ in pairs], bool)
    b = np.array([o.success for _, o in pairs], bool)
    diff, lo, hi = paired_difference_interval(a, b)
    test = mcnemar_exact(a, b) if len(pairs) else None
    p = test.p_value if test else float("nan")
    return {"n": len(pairs), "clean": share(a), "perturbed": share(b),
            "difference": {"value": diff, "ci95": [lo, hi]},
            "mcnemar": {"p_value": p, "only_clean": test.only_a if test else 0,
                        "only_perturbed": test.only_b if test else 0},
            "significant": bool(test is not None and p < alpha)}


def side_flips(clean: Sequence[EpisodeRecord], other: Sequence[EpisodeRecord]) -> dict:
    """Share of shared episodes, among those passing the first box in both runs, passed on the other side."""
    by_key = {r.key: r for r in other}
    sides = [(r.side_taken, by_key[r.key].side_taken) for r in clean if r.key in by_key]
    return share([a != b for a, b in sides if a != "none" and b != "none"])


def label_changes(clean: Sequence[EpisodeRecord], other: Sequence[EpisodeRecord]) -> dict:
    """Rate of every primary failure label (share of all episodes) clean, perturbed, and the change."""
    fc, fo = failure_summary(clean), failure_summary(other)
    return {name: {"clean": fc["rates"][name], "perturbed": fo["rates"][name],
                   "change": fo["rates"][name] - fc["rates"][name]} for name in LABELS}


def compare_condition(clean: Sequence[EpisodeRecord], other: Sequence[EpisodeRecord], alpha: float) -> dict:
    """Everything the report says about one perturbation: overall and per difficulty."""
    diffs = [d for d in DIFFICULTIES if any(r.difficulty == d for r in clean)]
    return {
        "overall": paired_stats(clean, other, alpha),
        "by_difficulty": {d: paired_stats([r for r in clean if r.difficulty == d],
                                          [r for r in other if r.difficulty == d], alpha) for d in diffs},
        "labels": label_changes(clean, other),
        "side_flip": side_flips(clean, other),
        "stayed": share([r.path_length < STOP_OBEYED_M for r in other]),
    }


# --- text sensitivity ------------------------------------------------------------------------------------------
def text_sensitivity(policy, episodes: list, sentences: dict[str, str]) -> dict:
    """How the actions change on recorded frames when only the instruction changes.

    Each episode's frames are replayed through the policy (frame history as in closed loop) once with the left
    sentence, once with the right one and once with "Stop". Reported per env action dim: mean |a(left) - a(right)|
    and mean |a(instruction) - a(Stop)| (left and right runs pooled); and the share of frames whose lateral command
    (angular_z for diff drive, linear_y for omni) points in opposite directions (both beyond LATERAL_EPS), plus the
    share that steers towards the instructed side under both sentences. An instruction-blind policy scores 0.
    """
    from mobile_vla_sim.envs.actions import LAYOUT_DIMS
    from mobile_vla_sim.eval.offline import DIM_NAMES, predict_episodes

    dims = list(LAYOUT_DIMS[policy.drive])
    run = {k: predict_episodes(policy, episodes, dims, [s] * len(episodes))[0] for k, s in sentences.items()}
    left, right, stop = run["left"], run["right"], run["stop"]
    names = [DIM_NAMES[d] for d in dims]

    def compare(a: np.ndarray, b: np.ndarray) -> dict:
        la, lb = a[:, 1], b[:, 1]
        directed = (np.abs(la) > LATERAL_EPS) & (np.abs(lb) > LATERAL_EPS)
        return {"mean_abs_delta": dict(zip(names, np.abs(a - b).mean(0).tolist())),
                "lateral_flip": float(np.mean(directed & (np.sign(la) != np.sign(lb))))}

    vs_stop = compare(np.concatenate([left, right]), np.concatenate([stop, stop]))
    return {"frames": int(len(left)), "episodes": len(episodes), "sentences": sentences,
            "left_vs_right": {**compare(left, right),
                              "toward_instructed": float(np.mean((left[:, 1] > LATERAL_EPS)
                                                                 & (right[:, 1] < -LATERAL_EPS)))},
            "vs_stop": vs_stop, "lateral": {"left": left[:, 1].tolist(), "right": right[:, 1].tolist()}}


def _text_episodes(cfg: ProbeConfig, clean: EvalConfig, progress: bool) -> list:
    """The recorded episodes to replay: `--text-data`, else a few expert episodes generated like the clean run."""
    from mobile_vla_sim.datasets.reader import EpisodeDataset

    data = cfg.text_data
    if data is None:
        from mobile_vla_sim.datasets.generate import GenerateConfig, generate_dataset

        data = cfg.out / "text_data"
        difficulty = cfg.difficulties[0] if len(cfg.difficulties) == 1 else "mix"
        generate_dataset(GenerateConfig(episodes=cfg.text_episodes, out=data, difficulty=difficulty, seed=cfg.seed,
                                        env=clean.env, pool=cfg.pool), progress=progress)
    ds = EpisodeDataset(data, only_success=True)
    return [ds[i] for i in range(min(cfg.text_episodes, len(ds)))]


def measure_text_sensitivity(cfg: ProbeConfig, clean: EvalConfig, progress: bool = True) -> dict | None:
    """Text sensitivity of the policy behind the baseline's frame and action stages (its instruction stages and
    chunk execution left out, so the policy hears exactly the sentences compared)."""
    if cfg.text_episodes == 0:
        return None
    from mobile_vla_sim.policies.deploy import deploy_policy

    episodes = _text_episodes(cfg, clean, progress)
    sentences = {**instruction_set(clean.env.instructions), "stop": STOP_SENTENCE}
    stages = replace(clean.deployment, instruction=None, instructions=None, swap_sides=False, execute_chunk=1)
    policy = load_eval_policy(clean)
    try:
        result = text_sensitivity(deploy_policy(policy, stages, clean.env.color_order), episodes, sentences)
    finally:
        policy.close()
    return {**result, "data": str(cfg.text_data or cfg.out / "text_data")}


# --- the job ---------------------------------------------------------------------------------------------------
@dataclass
class ProbeResult:
    summary: dict
    paths: dict[str, Path]
    interrupted: bool


def probe(cfg: ProbeConfig, progress: bool = True, echo: Callable[[str], None] = print,
          given: set[str] | None = None) -> ProbeResult:
    """Run the clean episode set and every perturbation of the suite on the same scenes, measure text
    sensitivity, and write probe.md, probe.json and the figures into `cfg.out`.

    `given`: the knobs the user set (the CLI's); a checkpoint's other env knobs are then taken from its training
    data, as `mvla-sim eval` does. Ctrl-C stops after keeping every finished episode; the report covers what ran.
    """
    from mobile_vla_sim.eval.probe_report import write_probe
    from mobile_vla_sim.eval.run import as_trained, evaluate, recorded_config

    clean = cfg.eval_config()
    if given is not None:
        clean = as_trained(clean, given)
    window, chunks = _policy_facts(clean)
    conds = conditions(cfg, clean, window, chunks)
    runnable = [c for c in conds if c.eval is not None]
    results: dict[str, list[EpisodeRecord]] = {}
    interrupted, label = False, None
    for i, (name, ecfg) in enumerate([("clean", clean), *((c.name, c.eval) for c in runnable)]):
        echo(f"[{i + 1}/{len(runnable) + 1}] {name} → {ecfg.out}")
        result = evaluate(ecfg, progress=progress)
        results[name], label = result.records, label or result.policy
        if result.interrupted:
            interrupted = True
            break
    text = None if interrupted else measure_text_sensitivity(cfg, clean, progress)
    summary = {"policy": label, "config": {**to_dict(cfg), "clean": recorded_config(clean)},
               "interrupted": interrupted, "alpha": cfg.alpha, "stop_obeyed_m": STOP_OBEYED_M,
               "clean": {"episodes": len(results["clean"]), "success": share([r.success for r in results["clean"]]),
                         "failures": failure_summary(results["clean"])},
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
            entry.update(status="run", out=str(c.eval.out), deployment=to_dict(c.eval.deployment),
                         **compare_condition(results["clean"], results[c.name], cfg.alpha))
        summary["perturbations"][c.name] = entry
    paths = write_probe(cfg.out, summary)
    return ProbeResult(summary, paths, interrupted)


def perturbation_table_markdown() -> str:
    """The perturbation table as markdown (README): name, kind, default strength, what it changes, suites."""
    rows = ["| perturbation | kind | default strength | what it changes (at the default) | suites |",
            "|---|---|---|---|---|"]
    for name, p in PERTURBATIONS.items():
        suites = ", ".join(s for s, names in SUITES.items() if name in names and s not in KINDS)
        what = p.describe(p.default)
        strength = "–" if p.default is None else "(quoted there)" if p.default and f"'{p.default}'" in what \
            else repr(p.default)
        note = {"obey": "; a grounded policy should change behaviour here",
                "robust": ""}[p.expect] + {"window": "; n/a without a frame window",
                                           "chunks": "; n/a without action chunks", None: ""}[p.needs]
        rows.append(f"| `{name}` | {p.kind} | {strength} | {what}{note} | {suites} |")
    return "\n".join(rows)
