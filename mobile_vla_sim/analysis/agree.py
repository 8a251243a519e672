"""Sim-vs-real agreement: does the simulator rank a set of policies the way the real robot does?

A simulator earns trust for choosing between policies (frozen vs LoRA, checkpoint A vs B) when its success
rates order those policies as real trials do. Following SimplerEnv (Li et al. 2024, "Evaluating Real-World Robot
Manipulation Policies in Simulation"), two numbers over N policies with sim success rates S_i and real success
rates R_i:

* MMRV, the mean maximum rank violation (lower is better, 0 = the sim orders every pair as the real robot does):

      RV(i, j) = |R_i - R_j| * 1[(S_i > S_j) != (R_i > R_j)]
      MMRV     = (1 / N) * sum_i max_j RV(i, j)

  A pair the sim orders differently from reality costs the *real* gap between the two policies, so swapping two
  policies that are nearly tied on the robot costs little. Comparisons are strict, exactly as SimplerEnv's
  `mean_maximum_rank_violation` (a tie on one side and an order on the other is a violation only when
  1[S_i > S_j] != 1[R_i > R_j]).
* Pearson r between the S_i and the R_i (1 = the sim rates are an increasing linear function of the real ones).
  Undefined (null) when either side has the same rate for every policy.

Real trials come as a small CSV, one row per policy (and condition), summed when a pair repeats (e.g. one row per
session):

    policy,trials,successes,condition
    frozen.ckpt,20,9,easy
    lora.ckpt,20,12,easy

`policy` must be the label an eval wrote into its results.json (`payload["policy"]`: the checkpoint's file name or
the baseline's name). `condition` is optional: when present, each row is compared with the sim success rate at that
difficulty ("all" = the whole eval), and MMRV and r are computed per condition (over policies) and averaged over
conditions, as SimplerEnv averages over tasks.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from mobile_vla_sim.config import knob
from mobile_vla_sim.errors import ConfigError, EvalError, OutputError
from mobile_vla_sim.eval.stats import wilson_interval
from mobile_vla_sim.eval.report import pct, read_results
from mobile_vla_sim.eval.schema import json_safe
from mobile_vla_sim.io import atomic_write
from mobile_vla_sim.paths import check_output_dir

#: Columns every real-trials CSV needs; `condition` is optional.
REAL_COLUMNS = ("policy", "trials", "successes")
#: The condition that means the whole evaluation (every difficulty).
ALL_CONDITIONS = "all"


@dataclass
class AgreeConfig:
    """Sim-vs-real agreement job: eval result folders against a CSV of real-robot trials."""

    real: Path = knob(help="CSV of real-robot trials with columns policy, trials, successes and optionally condition")
    sim: tuple[Path, ...] = knob((), "an evaluation result folder (with results.json), one per policy; repeat it, at "
                                 "least twice", multiple=True)
    out: Path | None = knob(Path("runs/agree"), "folder for agree.json, agree.md and agree.png (None: write nothing)")

    def __post_init__(self):
        self.sim = tuple(Path(p) for p in self.sim)
        if len(self.sim) < 2:
            raise ConfigError(f"--sim needs at least two evaluation folders (one per policy) to rank, "
                              f"got {len(self.sim)}")
        self.real = Path(self.real)
        self.out = None if self.out is None else Path(self.out)


def mmrv(sim: Sequence[float], real: Sequence[float]) -> float:
    """Mean maximum rank violation of sim success rates against real ones (SimplerEnv; see the module docstring)."""
    s, r = np.asarray(sim, dtype=float), np.asarray(real, dtype=float)
    if s.shape != r.shape or s.ndim != 1 or s.size == 0:
        raise ValueError(f"mmrv needs two equally long, non-empty rate lists (got {s.shape} and {r.shape})")
    violated = (s[:, None] > s[None, :]) != (r[:, None] > r[None, :])
    return float((np.abs(r[:, None] - r[None, :]) * violated).max(axis=1).mean())


def pearson(sim: Sequence[float], real: Sequence[float]) -> float:
    """Pearson r of sim against real success rates; NaN when either side is constant (r is undefined)."""
    s, r = np.asarray(sim, dtype=float), np.asarray(real, dtype=float)
    s, r = s - s.mean(), r - r.mean()
    denom = math.sqrt(float((s * s).sum() * (r * r).sum()))
    return float((s * r).sum() / denom) if denom > 0 else float("nan")


def read_real_csv(path: str | Path) -> dict[tuple[str, str], tuple[int, int]]:
    """(policy, condition) -> (trials, successes), summed over repeated rows; condition "all" when absent."""
    path = Path(path)
    if not path.is_file():
        raise EvalError(f"real-robot trials file {path} not found; write a CSV with columns "
                        f"{','.join(REAL_COLUMNS)}[,condition]")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REAL_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise EvalError(f"{path} lacks column(s) {', '.join(missing)}; its header must include "
                            f"{','.join(REAL_COLUMNS)} (condition optional)")
        totals: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
        for line, row in enumerate(reader, start=2):
            try:
                trials, successes = int(row["trials"]), int(row["successes"])
            except (TypeError, ValueError):
                raise EvalError(f"{path} line {line}: trials and successes must be whole numbers, got "
                                f"{row['trials']!r} and {row['successes']!r}") from None
            if trials < 1 or not 0 <= successes <= trials or not (row["policy"] or "").strip():
                raise EvalError(f"{path} line {line}: need a policy name and 0 <= successes <= trials with "
                                f"trials >= 1, got {row['policy']!r}, {trials}, {successes}")
            key = (row["policy"].strip(), (row.get("condition") or ALL_CONDITIONS).strip().lower())
            totals[key][0] += trials
            totals[key][1] += successes
    if not totals:
        raise EvalError(f"{path} has no trial rows; add one row per policy: policy,trials,successes")
    return {k: (v[0], v[1]) for k, v in totals.items()}


def _names_differ(what: str, sim: Sequence[str], real: Sequence[str]) -> EvalError:
    return EvalError(f"policy names differ{what}: sim has {', '.join(sorted(sim)) or 'none'}; real CSV has "
                     f"{', '.join(sorted(real)) or 'none'}; name each CSV policy as its results.json does")


def _sim_rates(sim_dirs: Sequence[str | Path]) -> tuple[dict[str, dict], dict[str, str]]:
    """policy -> aggregates and policy -> folder, refusing two folders of the same policy."""
    aggregates, folders = {}, {}
    for folder in sim_dirs:
        results = read_results(folder)
        name = results.policy
        if name in aggregates:
            raise EvalError(f"{folders[name]} and {folder} both evaluate policy {name!r}; pass one folder per policy")
        aggregates[name], folders[name] = results.aggregates, str(folder)
    return aggregates, folders


def _point(policy: str, stats: dict, trials: int, successes: int) -> dict:
    s = stats["success"]
    return {"policy": policy, "sim": s["rate"], "sim_k": s["k"], "sim_n": s["n"], "sim_ci95": s["ci95"],
            "real": successes / trials, "real_k": successes, "real_n": trials,
            "real_ci95": list(wilson_interval(successes, trials))}


def _mean_defined(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def agree(sim_dirs: Sequence[str | Path], real_csv: str | Path, out: str | Path | None = None) -> dict:
    """MMRV and Pearson r of the sim success rates in `sim_dirs` against the real trials in `real_csv`.

    Returns (and, with `out`, writes as agree.json, agree.md and agree.png) the per-condition points and metrics
    and their mean over conditions. Mismatched policy names on the two sides are refused with a one-line error.
    """
    if out is not None:
        _check_agree_out(Path(out), sim_dirs, real_csv)
    aggregates, folders = _sim_rates(sim_dirs)
    real = read_real_csv(real_csv)
    if set(aggregates) != {p for p, _ in real}:
        raise _names_differ("", list(aggregates), list({p for p, _ in real}))
    if len(aggregates) < 2:
        raise EvalError(f"agreement ranks policies: need at least 2, got {len(aggregates)}; add eval folders")
    conditions: dict[str, dict] = {}
    for cond in dict.fromkeys(c for _, c in real):
        names = [p for p, c in real if c == cond]
        if set(names) != set(aggregates):
            raise _names_differ(f" for condition {cond!r}", list(aggregates), names)
        points = []
        for name in sorted(names):
            agg = aggregates[name]
            stats = agg["overall"] if cond == ALL_CONDITIONS else agg["by_difficulty"].get(cond)
            if stats is None:
                raise EvalError(f"condition {cond!r} in {real_csv} is not a difficulty of {folders[name]} (it has "
                                f"{', '.join(agg['by_difficulty'])}); use one of those or {ALL_CONDITIONS!r}")
            points.append(_point(name, stats, *real[(name, cond)]))
        sim_r, real_r = [p["sim"] for p in points], [p["real"] for p in points]
        conditions[cond] = {"points": points, "mmrv": mmrv(sim_r, real_r), "pearson_r": pearson(sim_r, real_r)}
    result = {"sim": folders, "real_csv": str(real_csv), "conditions": conditions,
              "mean": {"mmrv": float(np.mean([c["mmrv"] for c in conditions.values()])),
                       "pearson_r": _mean_defined([c["pearson_r"] for c in conditions.values()])}}
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "agree.json", json.dumps(json_safe(result), indent=1))
        atomic_write(out / "agree.md", agree_markdown(result))
        plot_agreement(out / "agree.png", result)
    return result


def _check_agree_out(out: Path, sim_dirs: Sequence[str | Path], real_csv: str | Path) -> None:
    """`out` can be written and holds no agreement of other inputs (the same inputs: replaced, same numbers)."""
    check_output_dir(out, "--out")
    done = out / "agree.json"
    if not done.exists():
        return
    try:
        old = json.loads(done.read_text(encoding="utf-8"))
        same = sorted(old["sim"].values()) == sorted(map(str, sim_dirs)) and old["real_csv"] == str(real_csv)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        same = False
    if not same:
        raise OutputError(f"--out {out} holds the agreement of other results (agree.json); choose another --out, "
                          "or delete that folder to replace it")


def _num(value: float) -> str:
    return "undefined" if not math.isfinite(value) else f"{value:.3f}"


def agree_markdown(result: dict) -> str:
    """agree.md: the metrics per condition, then every (policy, condition) point with both success rates."""
    lines = ["# Sim-vs-real agreement", "",
             f"Real trials: `{result['real_csv']}`. MMRV: mean maximum rank violation (0 = the sim ranks every pair "
             "of policies as the real robot does; a misranked pair costs the real gap between them). "
             "Pearson r: linear correlation of the success rates (undefined when one side is constant).", "",
             "| condition | policies | MMRV | Pearson r |", "|---|---|---|---|"]
    for cond, c in result["conditions"].items():
        lines.append(f"| {cond} | {len(c['points'])} | {_num(c['mmrv'])} | {_num(c['pearson_r'])} |")
    if len(result["conditions"]) > 1:
        lines.append(f"| mean | | {_num(result['mean']['mmrv'])} | {_num(result['mean']['pearson_r'])} |")
    lines += ["", "| condition | policy | sim success [95% CI] | real success [95% CI] |", "|---|---|---|---|"]
    for cond, c in result["conditions"].items():
        for p in c["points"]:
            lines.append(f"| {cond} | {p['policy']} | {pct(p['sim'])} [{pct(p['sim_ci95'][0])}, "
                         f"{pct(p['sim_ci95'][1])}] ({p['sim_k']}/{p['sim_n']}) | {pct(p['real'])} "
                         f"[{pct(p['real_ci95'][0])}, {pct(p['real_ci95'][1])}] ({p['real_k']}/{p['real_n']}) |")
    return "\n".join(lines) + "\n"


def plot_agreement(path: str | Path, result: dict) -> None:
    """Scatter of sim against real success (Wilson 95% bars), one colour per condition, with the y = x line."""
    from mobile_vla_sim.plotting import colormap, subplots

    fig, ax = subplots(figsize=(5.2, 5.0))
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="sim = real")
    for (cond, c), colour in zip(result["conditions"].items(), colormap("tab10").colors):
        real = np.array([p["real"] for p in c["points"]])
        sim = np.array([p["sim"] for p in c["points"]])
        xerr = np.abs(np.array([p["real_ci95"] for p in c["points"]]).T - real)
        yerr = np.abs(np.array([p["sim_ci95"] for p in c["points"]]).T - sim)
        ax.errorbar(real, sim, xerr=xerr, yerr=yerr, fmt="o", color=colour, ecolor=colour, elinewidth=0.8,
                    capsize=2, alpha=0.85, label=f"{cond}: MMRV {_num(c['mmrv'])}, r {_num(c['pearson_r'])}")
        for p in c["points"]:
            ax.annotate(p["policy"], (p["real"], p["sim"]), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlim(-0.03, 1.03)
    ax.set_ylim(-0.03, 1.03)
    ax.set_aspect("equal")
    ax.set_xlabel("real success rate")
    ax.set_ylabel("sim success rate")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title(f"Sim vs real: MMRV {_num(result['mean']['mmrv'])}, r {_num(result['mean']['pearson_r'])}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
