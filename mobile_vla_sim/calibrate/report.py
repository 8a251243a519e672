"""A calibration's outputs: `calibrated.yaml`, `calibration.json`, `calibration.md` and its figures.

`frames.png` puts real and sim start frames side by side (before and after the fit), `sensitivity.png` shows the
distance along each fitted scalar and over each texture around the fit, `trace.png` the best distance over the
search.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mobile_vla_sim.calibrate.distance import TEXTURE_WEIGHT
from mobile_vla_sim.calibrate.evaluate import Evaluation
from mobile_vla_sim.calibrate.search import Sensitivity
from mobile_vla_sim.config import flat_fields, to_dict
from mobile_vla_sim.envs.config import EnvConfig
from mobile_vla_sim.io import AtomicFile, atomic_write
from mobile_vla_sim.plotting import subplots

#: Episodes shown in frames.png.
SHOWN = 4
#: The sensitivity table's step: this fraction of each knob's range, below and above the fit.
TABLE_OFFSET = 0.1
CONFIG_NAME = "calibrated.yaml"


@dataclass
class Outcome:
    """What the report shows."""

    names: list[str]                       # episodes used
    size: tuple[int, int]                  # fit (width, height)
    before: Evaluation                     # the env config's look
    after: Evaluation                      # the written config's look
    start: dict[str, Any]                  # fitted knobs before ...
    fitted: dict[str, Any]                 # ... and after
    units: dict[str, str]
    sens: Sensitivity
    trace: list[float]
    frames: dict[str, list[np.ndarray]]    # real, before, after
    evaluations: int
    seconds: float
    notes: list[str]


def env_config_yaml(env: EnvConfig) -> dict[str, Any]:
    """An env as a config file's `env:` block: the knobs that differ from the defaults, and every look knob set."""
    own, default = flat_fields(EnvConfig, nested=True), to_dict(EnvConfig().resolved())
    values = {k: v for k, v in to_dict(env).items() if k in own and v != default[k]}
    values["look"] = {k: v for k, v in to_dict(env.look).items() if v is not None}
    return values


def _save(fig, path: Path) -> None:
    with AtomicFile(path, keep_suffix=True) as tmp:
        fig.savefig(tmp, dpi=110)


def plot_frames(path: Path, o: Outcome) -> None:
    n = min(SHOWN, len(o.names))
    aspect = o.size[0] / o.size[1]
    fig, axes = subplots(n, 3, figsize=(3 * 2.2 * aspect, 2.2 * n + 0.3), squeeze=False)
    for row in range(n):
        for col, (title, key) in enumerate((("real", "real"), ("sim before", "before"), ("sim after", "after"))):
            ax = axes[row][col]
            ax.imshow(o.frames[key][row], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(title, fontsize=10)
            if col == 0:
                ax.set_ylabel(o.names[row][-30:], fontsize=6)
    fig.tight_layout()
    _save(fig, path)


def plot_sensitivity(path: Path, o: Outcome) -> None:
    groups: dict[str, list[str]] = {}
    for label in o.sens.profiles:
        groups.setdefault(label.split("[")[0], []).append(label)
    panels = len(groups) + bool(o.sens.options)
    cols = min(4, panels)
    rows = -(-panels // cols)
    fig, axes = subplots(rows, cols, figsize=(3.3 * cols, 2.6 * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    colours = {"[r]": "tab:red", "[g]": "tab:green", "[b]": "tab:blue"}
    for ax, (group, labels) in zip(flat, groups.items()):
        for label in labels:
            _, xs, ys = zip(*o.sens.profiles[label])
            channel = label[len(group):]
            ax.plot(xs, ys, "o-", ms=3, color=colours.get(channel, "k"), label=channel.strip("[]") or None)
        ax.set_title(group, fontsize=9)
        ax.set_xlabel(o.sens.units[labels[0]], fontsize=8)
        ax.tick_params(labelsize=7)
        if len(labels) > 1:
            ax.legend(fontsize=7, frameon=False)
    if o.sens.options:
        ax = flat[len(groups)]
        rows = [(f"{k.removesuffix('_texture')}: {opt}", d, opt == o.fitted[k])
                for k, opts in o.sens.options.items() for opt, d in opts.items()]
        names, values, fit = zip(*rows)
        ax.barh(range(len(values)), values, color=["k" if f else "0.6" for f in fit])
        ax.set_yticks(range(len(values)), names, fontsize=7)
        ax.set_title("textures (black: the fit)", fontsize=9)
    for ax in flat[panels:]:
        ax.axis("off")
    fig.supylabel("distance")
    fig.tight_layout()
    _save(fig, path)


def plot_trace(path: Path, trace: list[float]) -> None:
    fig, ax = subplots(figsize=(5, 2.8))
    ax.plot(range(len(trace)), trace, color="k", lw=1)
    ax.set_xlabel("evaluation")
    ax.set_ylabel("best distance so far")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(f"{v:.{digits}f}" for v in value) + ")"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _step(sens: Sensitivity, label: str, offset: float) -> str:
    """"knob value: distance change (relative)" at `offset` from the fit, or a dash past a bound."""
    row = next(((x, d) for o, x, d in sens.profiles[label] if o == offset), None)
    if row is None:
        return "— (bound)"
    delta = row[1] - sens.centre
    return f"{row[0]:.3f}: {delta:+.4f} ({100 * delta / max(sens.centre, 1e-12):+.0f} %)"


def markdown(cfg, o: Outcome) -> str:
    terms = ("colour", "texture", "features")
    lines = [f"# Calibration of the sim's look to {cfg.real}", "",
             f"{len(o.names)} real start frames (frame 0 of each episode), compared with the sim's start view of the "
             f"same scene at {o.size[0]}x{o.size[1]} px. Fitted: {', '.join(cfg.fit)}. {o.evaluations} evaluations "
             f"({len(o.trace)} in the search, budget {cfg.budget}; the rest for the sensitivity analysis) in "
             f"{o.seconds:.0f} s.", "",
             "## Distance", "",
             "| look | distance | " + " | ".join(terms) + " |", "|---|---|" + "---|" * len(terms)]
    for name, e in (("before: the env config", o.before), (f"after: `{CONFIG_NAME}`", o.after)):
        lines.append(f"| {name} | **{e.distance:.4f}** | " + " | ".join(f"{e.terms[t]:.4f}" for t in terms) + " |")
    lines += ["", f"distance = colour + {TEXTURE_WEIGHT:g} x texture + {cfg.feature_weight:g} x features, the mean "
              "over episodes (`calibrate/distance.py`); 0 is identical statistics. A real scene never matches its "
              "sim scene exactly (box sizes and positions, clutter, lens distortion), so the fitted distance stays "
              "above 0 with real data."]
    lines += ["", "## Fitted knobs", "", "| knob | before | after | unit |", "|---|---|---|---|"]
    for key, value in o.fitted.items():
        lines.append(f"| {key} | {_fmt(o.start[key])} | {_fmt(value)} | {o.units.get(key, '')} |")
    if "light" in o.fitted:
        lines += ["", "`light` is the ambient share of the light (the total stays the env's: a brighter light and "
                  "brighter colours are the same picture, so the colours carry the level)."]
    lines += ["", "## Frames", "", "![real and sim start frames](frames.png)", "",
              "Real start frames (left), the sim's before (middle) and after (right) the fit.", "",
              "## Sensitivity", "",
              f"The distance when one knob moves {100 * TABLE_OFFSET:.0f} % of its search range below or above the "
              "fit, the others fixed (a colour channel: 0.1; the pitch: 10 % of the horizon's range, so the step in "
              f"degrees depends on the field of view). The fit's own distance is {o.sens.centre:.4f}. A knob whose "
              "changes are small is not pinned down by these frames: its fitted value is a weak guess.", "",
              f"| knob | unit | fit | −{100 * TABLE_OFFSET:.0f} %: value: change | +{100 * TABLE_OFFSET:.0f} %: "
              "value: change |", "|---|---|---|---|---|"]
    for label, profile in o.sens.profiles.items():
        fit = next(x for off, x, _ in profile if off == 0.0)
        lines.append(f"| {label} | {o.sens.units[label]} | {fit:.3f} | {_step(o.sens, label, -TABLE_OFFSET)} | "
                     f"{_step(o.sens, label, TABLE_OFFSET)} |")
    if o.sens.options:
        lines += ["", "| texture | option | distance (other knobs at the fit) |", "|---|---|---|"]
        for knob, options in o.sens.options.items():
            for option, d in sorted(options.items(), key=lambda kv: kv[1]):
                lines.append(f"| {knob} | {option}{' (fit)' if option == o.fitted[knob] else ''} | {d:.4f} |")
    lines += ["", "![sensitivity](sensitivity.png)", "", "## Search", "", "![best distance](trace.png)", "",
              "## Use it", "", "```bash",
              f"mvla-sim eval --config {cfg.out / CONFIG_NAME} --policy expert --episodes 10",
              f"mvla-sim calibrate --score-only --real {cfg.real} --config {cfg.out / CONFIG_NAME}",
              "```", "", "In a study spec, put the file's `env:` block under `generate:`."]
    if o.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in o.notes]
    return "\n".join(lines) + "\n"


def write_outputs(cfg, env: EnvConfig, o: Outcome) -> dict[str, Path]:
    """Write every output of a calibration into `cfg.out`; return their paths."""
    out = Path(cfg.out)
    paths = {name: out / name for name in (CONFIG_NAME, "calibration.json", "calibration.md", "frames.png",
                                           "sensitivity.png", "trace.png")}
    header = (f"# mvla-sim calibrate: the look fitted to {len(o.names)} start frames of {cfg.real}\n"
              f"# distance {o.before.distance:.4f} -> {o.after.distance:.4f}; see calibration.md. Use it with\n"
              f"# `mvla-sim eval --config {paths[CONFIG_NAME]}` (also generate, probe; in a study spec, put the env:\n"
              "# block under generate:).\n")
    atomic_write(paths[CONFIG_NAME], header + yaml.safe_dump({"env": env_config_yaml(env)}, sort_keys=False))
    plain = lambda v: list(v) if isinstance(v, tuple) else v  # noqa: E731
    summary = {"real": str(cfg.real), "episodes": o.names, "fit_size": list(o.size), "fit": list(cfg.fit),
               "before": o.before.to_json(), "after": o.after.to_json(),
               "start": {k: plain(v) for k, v in o.start.items()},
               "fitted": {k: plain(v) for k, v in o.fitted.items()},
               "sensitivity": {"centre": o.sens.centre, "profiles": o.sens.profiles, "textures": o.sens.options},
               "evaluations": o.evaluations, "seconds": o.seconds, "notes": o.notes, "config": to_dict(cfg)}
    atomic_write(paths["calibration.json"], json.dumps(summary, indent=1))
    plot_frames(paths["frames.png"], o)
    plot_sensitivity(paths["sensitivity.png"], o)
    plot_trace(paths["trace.png"], o.trace)
    atomic_write(paths["calibration.md"], markdown(cfg, o))
    return paths
