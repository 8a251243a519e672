"""A study spec: the frozen-vs-LoRA × dataset-size × seed grid, from one YAML file (`examples/studies/*.yaml`).

The spec holds what decides the results (data, sizes, training, evaluation); where and how it runs (`--out`,
`--backend`) are options of the command. Generation and training options are those of `mvla-sim generate` and
`mvla-sim train`, checked by building their config dataclasses, so a spec accepts exactly the options those commands
take (their defaults, the real project's, apply where the spec says nothing) and an unknown key is a one-line error
listing the valid ones.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mobile_vla_sim.config import build, check_knobs, flat_fields, flatten, knob, read_yaml, to_dict
from mobile_vla_sim.datasets.generate import GenerateConfig
from mobile_vla_sim.envs.tasks import DEFAULT_FAMILY, get_family
from mobile_vla_sim.errors import ConfigError
from mobile_vla_sim.analysis.compare import CompareConfig
from mobile_vla_sim.probe import ProbeConfig, load_suite
from mobile_vla_sim.eval.run import EvalConfig
from mobile_vla_sim.policies.config import DEFAULT_BACKBONE, MODES, TrainConfig

#: Options the study sets itself, per cell (refused in the spec's `generate` / `train` / `eval` blocks).
STUDY_SET = {"generate": ("out", "workers", "envs_per_worker"),
             "train": ("data", "mode", "backbone", "seed", "out", "device", "resume")}
#: Eval options of the spec: the episode set. The env is the generated data's, so policies are scored as trained.
EVAL_KEYS = ("difficulty", "task", "episodes", "seed")
COMPARE_KEYS = ("max_windows", "seed", "alpha", "adjust")
#: Probe options of the spec; the probe's episode set defaults to the cells' evaluation, its env to the data's.
PROBE_KEYS = ("suite", "difficulty", "episodes", "seed", "text_episodes", "alpha", "adjust")


@dataclass
class StudySpec:
    """Frozen vs LoRA at several dataset sizes and seeds, each cell trained then scored on the same episodes."""

    name: str = knob("study", "title of the report")
    backbone: str = knob(DEFAULT_BACKBONE, "Kosmos-2 hub id, a local folder, tiny or tiny-pretrained")
    modes: tuple[str, ...] = knob(MODES, "training modes compared (frozen, lora)")
    sizes: tuple[int, ...] = knob((250, 500, 1000, 3000), "training episodes per cell (even: left/right pairs); "
                                  "smaller sizes are prefixes of larger ones")
    seeds: tuple[int, ...] = knob((0,), "training seeds (one cell per mode × size × seed)")
    val_episodes: int = knob(100, "validation episodes, the same for every cell (even)", min=2)
    val_fraction: float = knob(0.1, "share of scenes that may be drawn for validation (by a hash of the scene seed, "
                               "as `mvla-sim generate` splits); raise it when val_episodes is large next to the "
                               "sizes, so fewer episodes are generated", min=0.01, max=0.9)
    device: str = knob("cpu", "torch device of training and eval: cpu or cuda (a Ray task then asks for one GPU)")
    cpus_per_cell: int = knob(0, "cores a cell uses (torch threads, eval workers) and asks Ray for; 0: every core "
                              "of the machine with the local backend, 1 with Ray", min=0)
    generate: dict = knob(default_factory=dict, help="options of `mvla-sim generate` (not out/workers); `episodes` "
                          "caps the data generated (default: as many as the sizes and val_episodes need)")
    train: dict = knob(default_factory=dict, help="options of `mvla-sim train` for every mode, plus `frozen:` and "
                       "`lora:` blocks for one mode")
    eval: dict = knob(default_factory=dict, help=f"closed-loop episode set: {', '.join(EVAL_KEYS)} (as "
                      "`mvla-sim eval`)")
    compare: dict = knob(default_factory=dict, help=f"options of `mvla-sim compare`: {', '.join(COMPARE_KEYS)}; "
                         "alpha and adjust also decide the study's own family of method-level tests")
    probe: dict = knob(default_factory=dict, help="optional: `mvla-sim probe` of every cell's policy with these "
                       f"options ({', '.join(PROBE_KEYS)}); without it no probe runs")

    def __post_init__(self) -> None:
        self.modes, self.sizes, self.seeds = tuple(self.modes), tuple(sorted(set(self.sizes))), tuple(self.seeds)
        check_knobs(self)
        unknown = [m for m in self.modes if m not in MODES]
        if unknown or not self.modes:
            raise ConfigError(f"modes {list(self.modes)}: choose among {', '.join(MODES)}")
        if not self.sizes or any(s < 2 or s % 2 for s in self.sizes):
            raise ConfigError(f"sizes {list(self.sizes)}: each must be an even number >= 2 (left/right scene pairs)")
        if self.val_episodes % 2:
            raise ConfigError(f"val_episodes {self.val_episodes} must be even (left/right scene pairs)")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ConfigError(f"seeds {list(self.seeds)}: give distinct seeds >= 0")
        self.generate = _block(self.generate, GenerateConfig, "generate")
        self.eval = _block(self.eval, EvalConfig, "eval", EVAL_KEYS)
        self.compare = _block(self.compare, CompareConfig, "compare", COMPARE_KEYS)
        self.probe = _block(self.probe, ProbeConfig, "probe", PROBE_KEYS)
        self.probe_values()
        self.train = dict(self.train)
        per_mode = {m: self.train.pop(m) or {} for m in MODES if m in self.train}
        shared = _block(self.train, TrainConfig, "train")
        self.train = {**shared, **{m: _block(per_mode.get(m, {}), TrainConfig, f"train.{m}") for m in MODES
                                   if m in per_mode}}
        for mode in self.modes:
            self.train_config(mode, self.seeds[0], Path("data"), Path("cell.ckpt"))  # fail now, not in a cell
        self.generate_config(Path("data"))
        self.eval_values()

    # --- resolved configs of the jobs a study runs -------------------------------------------------------------
    def generate_config(self, out: Path, episodes: int | None = None, workers: int = 0) -> GenerateConfig:
        values = {**self.generate, "out": out, "workers": workers}
        if episodes is not None:
            values["episodes"] = episodes
        return build(GenerateConfig, values)

    def train_config(self, mode: str, seed: int, data: Path, out: Path) -> TrainConfig:
        """A cell's training config on the CPU: the spec's device is checked where the cell runs (a Ray driver may
        have no GPU), so it is `train_values` that carry it."""
        values = {k: v for k, v in self.train.items() if k not in MODES}
        values.update(self.train.get(mode, {}))
        try:
            return build(TrainConfig, {**values, "data": data, "mode": mode, "backbone": self.backbone,
                                       "seed": seed, "out": out})
        except ConfigError as err:
            raise ConfigError(f"spec train options for {mode}: {err}") from None

    def train_values(self, mode: str, seed: int, data: Path, out: Path) -> dict[str, Any]:
        """Flat values of a cell's `TrainConfig`, on the spec's device."""
        return {**to_dict(self.train_config(mode, seed, data, out)), "device": self.device}

    def eval_values(self) -> dict[str, Any]:
        """Flat `EvalConfig` values of every cell's evaluation but the policy, out and pool: the episode set, the
        device, and the env the data was generated in."""
        env = self.generate_config(Path("data")).env
        own = flat_fields(type(env), nested=True)  # not the per-episode task and difficulty
        values = {**{k: v for k, v in to_dict(env).items() if k in own}, **self.eval, "device": self.device}
        resolved = to_dict(build(EvalConfig, {**values, "policy": "expert", "out": None}))
        return {**values, **{k: resolved[k] for k in EVAL_KEYS}}

    def probe_values(self) -> dict[str, Any]:
        """Flat `ProbeConfig` values of every cell's probe but the policy, out, text data and pool ({}: no probe)."""
        if not self.probe:
            return {}
        own = flat_fields(ProbeConfig)
        values = {**{k: v for k, v in self.eval_values().items() if k in own}, **self.probe}
        load_suite(build(ProbeConfig, {**values, "policy": "expert"}).suite)  # fail now, not in a cell
        return values

    @property
    def difficulties(self) -> tuple[str, ...]:
        family = get_family(self.generate_config(Path("data")).env.task_family or DEFAULT_FAMILY)
        return family.parse_difficulties(self.eval.get("difficulty", "all"))


def _block(values: Any, cls: type, name: str, allowed: tuple[str, ...] | None = None) -> dict[str, Any]:
    """A spec block as flat knob values of job `cls`: unknown keys and keys the study sets itself are refused."""
    if not isinstance(values, dict):
        raise ConfigError(f"spec key {name!r} must be a mapping of option: value, got {type(values).__name__}")
    try:
        flat = flatten(values, cls)
    except ConfigError as err:
        raise ConfigError(f"spec {name}: {str(err).replace(' in the config file', '')}") from None
    refused = [k for k in flat if k in STUDY_SET.get(name.split(".")[0], ()) or allowed and k not in allowed]
    if refused:
        raise ConfigError(f"spec {name}: {', '.join(refused)} cannot be set here (the study sets it per cell)"
                          + (f"; valid keys: {', '.join(allowed)}" if allowed else ""))
    return flat


def load_spec(path: str | Path) -> StudySpec:
    """The spec in YAML file `path`; one-line `ConfigError`s for a missing file, bad YAML or unknown keys."""
    data = read_yaml(path, "study spec", "pass a YAML file such as examples/studies/laptop.yaml")
    valid = [f.name for f in dataclasses.fields(StudySpec)]
    unknown = [str(k) for k in data if str(k).replace("-", "_") not in valid]
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(unknown)} in study spec {path}; valid keys: {', '.join(valid)}")
    values = {str(k).replace("-", "_"): v for k, v in data.items()}
    return build(StudySpec, values)
