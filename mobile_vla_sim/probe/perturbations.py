"""The perturbation table, suites, and each perturbation as one change to the clean evaluation.

Every perturbation is an (`EnvConfig` changes, `DeployConfig` changes) pair applied on top of the clean baseline
(the policy under its deployment), so a perturbed run differs from the clean one in exactly that and runs on the
same seeded scenes. The table drives the suites, the docs' table and the reports.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from mobile_vla_sim.config import read_yaml
from mobile_vla_sim.envs.config import EnvConfig
from mobile_vla_sim.envs.tasks import TaskFamily, get_family
from mobile_vla_sim.errors import ConfigError
from mobile_vla_sim.eval.run import EvalConfig
from mobile_vla_sim.policies.deploy import DeployConfig

#: Instruction sent for "Stop" by the `stop` perturbation and in text sensitivity.
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
    """Send the episode's task in instruction set (or template) `s`; nothing when that is what is sent already."""
    family = get_family(b.env.task_family)
    sent = family.instruction_set(b.deploy.instructions or b.env.instructions)
    return {}, ({} if family.instruction_set(s) == sent else {"instructions": s})


def _env(name: str, add: bool = False) -> Changes:
    """Set env knob `name` to the strength (or add it to the baseline's value)."""
    return lambda s, b: ({name: getattr(b.env, name) + s if add else s}, {})


_SWAP = Perturbation("language", None, "the other side's sentence (left <-> right) is sent",
                     lambda s, b: ({}, {"swap_sides": not b.deploy.swap_sides}), expect="obey")
#: The perturbations every task family has, after its own language ones (`TaskFamily.language_probes`).
_SHARED: dict[str, Perturbation] = {
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


def perturbations(family: TaskFamily | None = None) -> dict[str, Perturbation]:
    """Every perturbation of a task family's probe, its kind, default strength and what it changes: the one table
    the suites, the docs and the reports are built from. Strengths: see `what` ({} is the strength)."""
    own = {name: Perturbation("language", p.default, p.what, _sentences)
           for name, p in (family or get_family()).language_probes.items()}
    return {"swap_sides": _SWAP, **own, **_SHARED}


#: The default family's table (`perturbations()`).
PERTURBATIONS = perturbations()


def suites(table: dict[str, Perturbation]) -> dict[str, tuple[str, ...]]:
    """Built-in suites of a table. `small`: the quickstart's, one or two of each kind that a tiny policy can fail."""
    return {"default": tuple(table), "small": ("swap_sides", "stop", "lighting", "window"),
            **{kind: tuple(n for n, p in table.items() if p.kind == kind) for kind in KINDS}}


SUITES = suites(PERTURBATIONS)


def _check_strength(table: dict[str, Perturbation], name: str, strength: Any, where: str) -> Any:
    """The suite's strength for `name` (None: the default), type-checked against the default."""
    default = table[name].default
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
    if isinstance(default, int) and not float(strength).is_integer():  # int(2.5) would run 2 without a word
        raise ConfigError(f"perturbation {name} in {where} needs a whole-number strength like {default!r}, got "
                          f"{strength!r}")
    return type(default)(strength)


def load_suite(suite: str | Path, family: TaskFamily | None = None) -> list[tuple[str, Any]]:
    """(perturbation name, strength) pairs of a built-in suite or a YAML file, for a task family's table.

    The file is a mapping `name: strength` (an empty value takes the default strength) or a list of names. Unknown
    names are refused with one line listing the valid ones.
    """
    table = perturbations(family)
    builtin = suites(table)
    suite = str(suite)
    if suite in builtin:
        return [(n, table[n].default) for n in builtin[suite]]
    path = Path(suite)
    if not path.is_file():
        raise ConfigError(f"unknown suite {suite!r}: --suite must be one of {', '.join(builtin)} or a YAML file")
    data = read_yaml(path, "--suite", "", mapping=False)
    items = list(data.items()) if isinstance(data, dict) else [(n, None) for n in data] if isinstance(data, list) \
        else None
    if not items:
        raise ConfigError(f"--suite {path} must be a non-empty mapping `perturbation: strength` or a list of "
                          f"perturbations (valid: {', '.join(table)})")
    unknown = [str(n) for n, _ in items if n not in table]
    if unknown:
        raise ConfigError(f"unknown perturbation(s) {', '.join(unknown)} in --suite {path}; valid: "
                          f"{', '.join(table)}")
    return [(n, _check_strength(table, n, s, f"--suite {path}")) for n, s in items]


def perturbation_table_markdown(family: TaskFamily | None = None) -> str:
    """A family's perturbation table as markdown (docs): name, kind, default strength, what it changes, suites."""
    table = perturbations(family)
    rows = ["| perturbation | kind | default strength | what it changes (at the default) | suites |",
            "|---|---|---|---|---|"]
    for name, p in table.items():
        in_suites = ", ".join(s for s, names in suites(table).items() if name in names and s not in KINDS)
        what = p.describe(p.default)
        strength = "–" if p.default is None else "(quoted there)" if p.default and f"'{p.default}'" in what \
            else repr(p.default)
        note = {"obey": "; a grounded policy should change behaviour here",
                "robust": ""}[p.expect] + {"window": "; n/a without a frame window",
                                           "chunks": "; n/a without action chunks", None: ""}[p.needs]
        rows.append(f"| `{name}` | {p.kind} | {strength} | {what}{note} | {in_suites} |")
    return "\n".join(rows)


@dataclass
class Condition:
    """One perturbation as run (or not) against the baseline."""

    name: str
    strength: Any
    perturbation: Perturbation
    eval: EvalConfig | None = None  # None: not applicable
    reason: str = ""


def conditions(suite: list[tuple[str, Any]], clean: EvalConfig, window: int | None, chunks: bool,
               out_dir: Path) -> list[Condition]:
    """Each (perturbation, strength) as an EvalConfig on top of `clean` writing into `out_dir / name`, or n/a with
    the reason. `window` and `chunks` describe the policy under the clean deployment."""
    base = Baseline(clean.env, clean.deploy, window, chunks)
    table = perturbations(get_family(clean.env.task_family))
    out = []
    for name, strength in suite:
        p = table[name]
        cond = Condition(name, strength, p)
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
        cond.eval = replace(clean, deploy=deployment, env=env, out=out_dir / name)
    return out
