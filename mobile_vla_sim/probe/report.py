"""The probe's report: probe.json, probe.md with a verdict, and three figures (success change heatmap, failure labels
per perturbation, text sensitivity)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from mobile_vla_sim.eval.report import adjustment_name, detectable_sentence, p_cell, pct, rate_cell
from mobile_vla_sim.eval.schema import json_safe
from mobile_vla_sim.io import atomic_write
from mobile_vla_sim.plotting import colormap, subplots

FIGURES = {"heatmap": "success_change.png", "labels": "failure_labels.png", "text": "text_sensitivity.png"}


def _run(summary: dict) -> dict[str, dict]:
    return {n: p for n, p in summary["perturbations"].items() if p["status"] == "run"}


def _pp(x: float) -> str:
    """A difference of rates in percentage points, signed."""
    return "–" if x is None or not math.isfinite(x) else f"{100 * x:+.0f}"


def _ci(share: dict) -> str:
    return rate_cell(share) if share["n"] else "– (0/0)"


def _family(summary: dict) -> str:
    """How significance was decided, for sentences and captions."""
    family = summary["adjustment"]
    return (f"exact McNemar, {adjustment_name(family['method'])}-adjusted p < {family['alpha']:g} over the "
            f"{family['tests']} tests of this probe")


# --- verdict -----------------------------------------------------------------------------------------------------
def verdict(summary: dict) -> str:
    """One paragraph: where success drops significantly (on p-values adjusted over the probe's family), whether the
    policy obeys side and Stop, its text sensitivity, what the probe could detect, and what was not applicable."""
    run, alpha = _run(summary), summary["alpha"]
    clean = summary["clean"]["success"]
    parts = [f"`{summary['policy']}` succeeds in {_ci(clean)} of the clean episodes."]

    def listed(names: list[str]) -> str:
        def one(o: dict) -> str:
            lo, hi = o["difference"]["ci95"]
            return (f"{_pp(o['difference']['value'])} pp [{_pp(lo)}, {_pp(hi)}], p {p_cell(o['mcnemar']['p_value'])}, "
                    f"adjusted {p_cell(o['mcnemar']['p_adjusted'])}")
        return "; ".join(f"{n} ({one(run[n]['overall'])})" for n in names)
    robust = {n: p for n, p in run.items() if p["expect"] == "robust"}
    drops = [n for n, p in robust.items() if p["overall"]["significant"] and p["overall"]["difference"]["value"] < 0]
    rises = [n for n, p in run.items() if p["overall"]["significant"] and p["overall"]["difference"]["value"] > 0]
    steady = [n for n in robust if n not in drops and n not in rises]
    chance = [n for n, p in run.items() if not p["overall"]["significant"] and p["overall"]["mcnemar"]["p_value"]
              is not None and p["overall"]["mcnemar"]["p_value"] < alpha]
    if drops:
        parts.append(f"Success drops significantly ({_family(summary)}) under {listed(drops)}.")
    elif robust:
        parts.append(f"No perturbation that a robust policy should withstand lowers success significantly "
                     f"({_family(summary)}).")
    if chance:
        parts.append(f"Unadjusted p < {alpha:g} but not significant once the whole family is counted: "
                     f"{listed(chance)}.")
    if rises:
        parts.append(f"Success rises significantly under {listed(rises)}: the baseline itself is broken in a way "
                     "these perturbations undo.")
    if steady and drops:
        parts.append(f"No significant change under {', '.join(steady)}.")
    if "swap_sides" in run:
        flips = run["swap_sides"]["side_flip"]
        if not flips["n"]:
            parts.append("No episode passed the first box in both the clean and the swapped run, so whether the "
                         "instruction steers it is not measured in closed loop.")
        else:
            grounded = "it follows the instruction" if flips["rate"] >= 0.5 else "the instruction barely steers it"
            parts.append(f"Told the other side, it passed the first box on the other side in {_ci(flips)} of the "
                         f"episodes that passed it in both runs ({grounded}).")
    if "stop" in run:
        parts.append(f"Told \"Stop\", it moved less than {summary['stop_obeyed_m']:g} m in {_ci(run['stop']['stayed'])} of "
                     "the episodes.")
    text = summary.get("text_sensitivity")
    if text:
        lr = text["left_vs_right"]
        lateral = list(lr["mean_abs_delta"].values())[1]
        parts.append(f"On {text['frames']} recorded frames, changing only the instruction from left to right changes "
                     f"its lateral command by {lateral:.3g} on average and flips its direction in "
                     f"{pct(lr['lateral_flip'])} of the frames"
                     f"{' (instruction-blind)' if lr['lateral_flip'] < 0.05 and lateral < 1e-3 else ''}.")
    if run:
        d = summary["detectable"]
        strictest = d["difference_strictest"]
        parts.append(f"What this probe could see: {detectable_sentence(d)} The strictest step of the adjustment "
                     f"(alpha / {summary['adjustment']['tests']}) needs "
                     + (f"{100 * strictest:.0f} pp." if strictest is not None and math.isfinite(strictest)
                        else "more episodes than were run to detect any change."))
    na = [f"{n} ({p['reason']})" for n, p in summary["perturbations"].items() if p["status"] != "run"]
    if na:
        parts.append(f"Not applicable or not run: {'; '.join(na)}.")
    return " ".join(parts)


# --- markdown ----------------------------------------------------------------------------------------------------
def _table(summary: dict) -> list[str]:
    method = adjustment_name(summary["adjustment"]["method"])
    rows = [f"| perturbation | kind | what | success [95% CI] | change (pp) [95% CI] | McNemar p | {method} p | "
            "side flipped | stayed |", "|---|---|---|---|---|---|---|---|---|"]
    clean = summary["clean"]["success"]
    rows.append(f"| clean | | the baseline | {_ci(clean)} | | | | | |")
    for name, p in summary["perturbations"].items():
        if p["status"] != "run":
            rows.append(f"| {name} | {p['kind']} | {p['what']} | {p['status']}: {p['reason']} | | | | | |")
            continue
        o = p["overall"]
        lo, hi = o["difference"]["ci95"]
        mark = " *" if o["significant"] else ""
        rows.append(f"| {name} | {p['kind']} | {p['what']} | {_ci(o['perturbed'])} | "
                    f"{_pp(o['difference']['value'])} [{_pp(lo)}, {_pp(hi)}]{mark} | "
                    f"{p_cell(o['mcnemar']['p_value'])} | "
                    f"{p_cell(o['mcnemar']['p_adjusted'])} | "
                    f"{_ci(p['side_flip'])} | {_ci(p['stayed'])} |")
    return rows


def _label_table(summary: dict) -> list[str]:
    """Primary failure label rates: clean, then each run perturbation (share of all its episodes)."""
    run = _run(summary)
    labels = list(summary["clean"]["failures"]["counts"])  # the task family's, in precedence order
    seen = [n for n in labels if summary["clean"]["failures"]["counts"][n]
            or any(p["labels"][n]["perturbed"] for p in run.values())]
    if not seen:
        return ["No episode failed in any condition."]
    rows = [f"| condition | {' | '.join(n.replace('_', ' ') for n in seen)} |", "|---|" + "---|" * len(seen)]
    rows.append(f"| clean | {' | '.join(pct(summary['clean']['failures']['rates'][n]) for n in seen)} |")
    for name, p in run.items():
        rows.append(f"| {name} | " + " | ".join(f"{pct(p['labels'][n]['perturbed'])} ({_pp(p['labels'][n]['change'])})"
                                                for n in seen) + " |")
    return rows


def _text_section(text: dict | None) -> list[str]:
    if not text:
        return ["Not measured (`--text-episodes 0`)."]
    dims = list(text["left_vs_right"]["mean_abs_delta"])
    rows = [f"| comparison | {' | '.join(f'mean abs Δ {d}' for d in dims)} | lateral direction flips |",
            "|---|" + "---|" * (len(dims) + 1)]
    for key, title in (("left_vs_right", "left vs right"), ("vs_stop", "instruction vs \"Stop\"")):
        c = text[key]
        deltas = " | ".join(f"{c['mean_abs_delta'][d]:.4f}" for d in dims)
        rows.append(f"| {title} | {deltas} | {pct(c['lateral_flip'])} |")
    return [f"{text['frames']} frames of {text['episodes']} recorded episodes (`{text['data']}`), replayed once per "
            "instruction with the same frame history: mean |Δaction| per env action dim (m/s, rad/s) and the share "
            "of frames whose lateral command points the other way. An instruction-blind policy scores 0. Steers "
            f"towards the instructed side under both sentences: {pct(text['left_vs_right']['toward_instructed'])} of "
            "the frames.", "", *rows]


def probe_markdown(summary: dict, figures: dict[str, str]) -> str:
    out = [f"# Robustness probe of `{summary['policy']}`", ""]
    if summary["interrupted"]:
        out += ["**Interrupted: only the conditions and episodes that finished are counted.**", ""]
    out += ["## Verdict", "", summary["verdict"], "", "## Success under each perturbation", "",
            "Every condition ran on the same seeded scenes as the clean run; differences are paired (perturbed − "
            "clean, percentage points) with Newcombe's hybrid score interval for paired proportions; `*`: "
            f"{_family(summary)} (every perturbation overall and per difficulty: "
            f"{summary['adjustment']['name']}); the per-difficulty tests are in the heatmap and probe.json. "
            "Side flipped: share of episodes passing the first box on the other "
            "side than in the clean run (a grounded policy flips under swap_sides). Stayed: moved less than "
            f"{summary['stop_obeyed_m']:g} m in the whole episode (a grounded policy stays when told \"Stop\").", "", *_table(summary), ""]
    if "heatmap" in figures:
        out += [f"![success change]({figures['heatmap']})", ""]
    out += ["## Failure labels", "", "Primary label rates (share of all episodes; change from clean in pp); "
            "definitions in `mobile_vla_sim.eval.taxonomy`, per-episode labels in each condition's episodes.csv.",
            "", *_label_table(summary), ""]
    if "labels" in figures:
        out += [f"![failure labels]({figures['labels']})", ""]
    out += ["## Text sensitivity", "", *_text_section(summary.get("text_sensitivity")), ""]
    if "text" in figures:
        out += [f"![text sensitivity]({figures['text']})", ""]
    return "\n".join(out)


# --- figures -----------------------------------------------------------------------------------------------------
def plot_heatmap(summary: dict, path: Path) -> None:
    """Perturbation x difficulty heatmap of the paired success change (pp); * significant, grey n/a."""
    names = list(summary["perturbations"])
    run = _run(summary)
    diffs = list(next(iter(run.values()))["by_difficulty"]) if run else []
    cols = [*diffs, "all"]
    values = np.full((len(names), len(cols)), np.nan)
    for i, name in enumerate(names):
        if name in run:
            for j, col in enumerate(cols):
                s = run[name]["overall"] if col == "all" else run[name]["by_difficulty"][col]
                values[i, j] = 100 * s["difference"]["value"] if s["n"] else np.nan
    fig, ax = subplots(figsize=(1.3 * len(cols) + 3.2, 0.42 * len(names) + 1.6), constrained_layout=True)
    cmap = colormap("RdBu").with_extremes(bad="0.88")
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=-100, vmax=100, aspect="auto")
    for i, name in enumerate(names):
        for j, col in enumerate(cols):
            if name not in run:
                text = "n/a" if j == len(cols) - 1 else ""
            else:
                s = run[name]["overall"] if col == "all" else run[name]["by_difficulty"][col]
                text = f"{values[i, j]:+.0f}{'*' if s['significant'] else ''}" if s["n"] else ""
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if np.isfinite(values[i, j]) and abs(values[i, j]) > 60 else "black")
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(names)), [f"{n} ({p['kind']}{', drop expected' if p['expect'] == 'obey' else ''})"
                                      for n, p in summary["perturbations"].items()])
    fig.colorbar(image, ax=ax, label="success change vs clean (pp)")
    family = summary["adjustment"]
    ax.set_title(f"{summary['policy']}: paired success change (* {adjustment_name(family['method'])}-adjusted "
                 f"p < {family['alpha']:g}, {family['tests']} tests)")
    fig.savefig(path, dpi=110)


def plot_labels(summary: dict, path: Path) -> None:
    """One panel per run perturbation: primary failure label rates, clean vs perturbed."""
    run = _run(summary)
    labels = list(summary["clean"]["failures"]["counts"])  # the task family's, in precedence order
    seen = [n for n in labels if summary["clean"]["failures"]["counts"][n]
            or any(p["labels"][n]["perturbed"] for p in run.values())] or labels[:1]
    cols = min(4, max(1, len(run)))
    rows = max(1, math.ceil(len(run) / cols))
    fig, axes = subplots(rows, cols, figsize=(3.6 * cols, 0.28 * len(seen) * rows + 1.4 * rows), squeeze=False,
                             sharex=True, constrained_layout=True)
    y = np.arange(len(seen))
    clean_rates = [100 * summary["clean"]["failures"]["rates"][n] for n in seen]
    for ax, (name, p) in zip(axes.flat, run.items()):
        ax.barh(y + 0.2, clean_rates, height=0.4, color="0.65", label="clean")
        ax.barh(y - 0.2, [100 * p["labels"][n]["perturbed"] for n in seen], height=0.4, color="tab:red",
                label="perturbed")
        ax.set_yticks(y, [n.replace("_", " ") for n in seen], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, 100)
        ax.set_title(name, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    for ax in axes.flat[len(run):]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("% of episodes")
    axes.flat[0].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"{summary['policy']}: primary failure label per perturbation")
    fig.savefig(path, dpi=110)


def plot_text(text: dict, policy: str, path: Path) -> None:
    """Mean |Δaction| per dim (left vs right, instruction vs Stop) and the per-frame lateral commands."""
    fig, (ax, ax2) = subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    dims = list(text["left_vs_right"]["mean_abs_delta"])
    x = np.arange(len(dims))
    for k, (key, title, colour) in enumerate((("left_vs_right", "left vs right", "tab:blue"),
                                             ("vs_stop", "instruction vs \"Stop\"", "tab:orange"))):
        c = text[key]
        ax.bar(x + (k - 0.5) * 0.38, [c["mean_abs_delta"][d] for d in dims], width=0.38, color=colour,
               label=f"{title} (lateral flips in {pct(c['lateral_flip'])} of frames)")
    ax.set_xticks(x, dims)
    ax.set(ylabel="mean |Δaction| (m/s, rad/s)", title="Action change when only the instruction changes")
    ax.set_ylim(0, max(1e-3, ax.get_ylim()[1]) * 1.3)  # room for the legend above the bars
    ax.legend(fontsize=8, loc="upper left")
    left, right = np.asarray(text["lateral"]["left"]), np.asarray(text["lateral"]["right"])
    ax2.scatter(left, right, s=8, alpha=0.5, color="tab:blue")
    lim = max(1e-3, float(np.abs(np.concatenate([left, right])).max()) * 1.1) if len(left) else 1.0
    ax2.plot([-lim, lim], [-lim, lim], color="0.5", lw=0.8, ls="--", label="no effect (same command)")
    ax2.axhline(0, color="0.8", lw=0.6)
    ax2.axvline(0, color="0.8", lw=0.6)
    ax2.set(xlim=(-lim, lim), ylim=(-lim, lim), xlabel=f"lateral {dims[1]} told left",
            ylabel=f"lateral {dims[1]} told right", title="Per frame (grounded: lower right quadrant)")
    ax2.legend(fontsize=8, loc="upper right")
    fig.suptitle(f"{policy}: text sensitivity on {text['frames']} recorded frames")
    fig.savefig(path, dpi=110)


def write_probe(out: Path, summary: dict) -> dict[str, Path]:
    """probe.json, probe.md and the figures into `out`; adds the verdict to `summary`; returns the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary["verdict"] = verdict(summary)
    figures = {}
    if _run(summary):
        plot_heatmap(summary, out / FIGURES["heatmap"])
        plot_labels(summary, out / FIGURES["labels"])
        figures.update(heatmap=FIGURES["heatmap"], labels=FIGURES["labels"])
    if summary.get("text_sensitivity"):
        plot_text(summary["text_sensitivity"], summary["policy"], out / FIGURES["text"])
        figures["text"] = FIGURES["text"]
    summary["figures"] = figures
    paths = {"probe.md": out / "probe.md", "probe.json": out / "probe.json",
             **{k: out / v for k, v in figures.items()}}
    atomic_write(paths["probe.json"], json.dumps(json_safe(summary), indent=2, ensure_ascii=False))
    atomic_write(paths["probe.md"], probe_markdown(summary, figures))
    return paths
