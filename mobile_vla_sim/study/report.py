"""The study's report: `study.md`, `study.json` and plots, from the finished cells and comparisons.

Seeds are pooled: a (mode, size) success rate counts every (seed, episode) trial, with its Wilson 95% interval
(which leaves out seed-to-seed variance; the per-seed spread is in `study.json`), and the frozen-vs-LoRA McNemar test
at a size sums the paired outcomes of all seeds (seed s of frozen against seed s of LoRA, on the same episodes).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mobile_vla_sim.eval.metrics import rate
from mobile_vla_sim.eval.report import pct, rate_cell
from mobile_vla_sim.eval.schema import json_safe
from mobile_vla_sim.eval.stats import mcnemar_exact
from mobile_vla_sim.io import atomic_write
from mobile_vla_sim.study.cells import CellTask, CompareTask, DataPlan
from mobile_vla_sim.study.spec import StudySpec

#: What the real project reported for Case 3 (frozen Kosmos-2 + LSTM head, 500 real episodes, chunk 10); Case 4
#: (LoRA) never finished (out of GPU memory), and neither case was ever run in closed loop.
REAL_PROJECT = {"frozen": {"val_loss": 0.027, "train_loss": 0.0123, "rmse": 0.170, "success": None},
                "lora": {"val_loss": None, "train_loss": None, "rmse": None, "success": None}}
REAL_NOTE = {"frozen": "not measured", "lora": "not finished"}
#: The real project's dataset size, the size our side of its table is read at (the nearest size run).
REAL_EPISODES = 500
PLOTS = {"success": "success_vs_size.png", "offline": "offline_vs_size.png", "scatter": "rmse_vs_success.png"}
MODE_COLOURS = {"frozen": "tab:blue", "lora": "tab:orange"}


def _mean(values: Sequence[float | None]) -> float | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(values)) if values else None


def mode_size_table(spec: StudySpec, cells: list[CellTask], results: dict[str, dict]) -> dict[str, dict[int, dict]]:
    """Per mode and size: pooled success (all + per difficulty) with Wilson CIs, and mean / range over seeds of the
    offline numbers."""
    table: dict[str, dict[int, dict]] = {}
    for mode in spec.modes:
        for size in spec.sizes:
            runs = [results[c.key] for c in cells if c.mode == mode and c.size == size]
            success = {}
            for group in ("all", *spec.difficulties):
                k = sum(r["success"][group]["k"] for r in runs)
                n = sum(r["success"][group]["n"] for r in runs)
                success[group] = {**rate(k, n), "per_seed": [r["success"][group]["rate"] for r in runs]}
            table.setdefault(mode, {})[size] = {
                "success": success, "seeds": [r["seed"] for r in runs],
                **{m: _mean([r[m] for r in runs]) for m in ("val_loss", "train_loss", "rmse")},
                **{f"{m}_per_seed": [r[m] for r in runs] for m in ("val_loss", "train_loss", "rmse")},
                "train_seconds": _mean([r["seconds"]["train"] for r in runs]),
                "eval_seconds": _mean([r["seconds"]["eval"] for r in runs]),
            }
    return table


def _pooled_mcnemar(per_seed: list[dict], alpha: float) -> dict:
    """Exact McNemar over the paired outcomes of every seed: the four counts summed, then the one test."""
    counts = {k: sum(m[k] for m in per_seed) for k in ("both_success", "only_a", "only_b", "both_fail")}
    a = np.repeat([1, 1, 0, 0], [counts["both_success"], counts["only_a"], counts["only_b"], counts["both_fail"]])
    b = np.repeat([1, 0, 1, 0], [counts["both_success"], counts["only_a"], counts["only_b"], counts["both_fail"]])
    return mcnemar_exact(a, b).to_dict(alpha)


def comparisons(spec: StudySpec, compares: list[CompareTask]) -> dict[int, dict]:
    """Per size: frozen (A) vs LoRA (B) McNemar pooled over seeds, overall and per difficulty, and H1-H3 per seed."""
    alpha = float(spec.compare.get("alpha", 0.05))
    out: dict[int, dict] = {}
    for size in spec.sizes:
        runs = [json.loads((t.dir / "compare.json").read_text()) for t in compares if t.size == size]
        if not runs:
            continue
        groups = [g for g in ("all", *spec.difficulties) if all(g in r["closed_loop"]["mcnemar"] for r in runs)]
        mcnemar = {g: _pooled_mcnemar([r["closed_loop"]["mcnemar"][g] for r in runs], alpha) for g in groups}
        hypotheses = {h: {"holds": sum(r["hypotheses"][h]["holds"] for r in runs), "seeds": len(runs),
                          "value": _mean([r["hypotheses"][h]["value"] for r in runs]),
                          "op": runs[0]["hypotheses"][h]["op"], "threshold": runs[0]["hypotheses"][h]["threshold"],
                          "measure": runs[0]["hypotheses"][h]["measure"]}
                      for h in runs[0]["hypotheses"]}
        lora_wins = mcnemar["all"]["significant"] and mcnemar["all"]["only_b"] > mcnemar["all"]["only_a"]
        out[size] = {"mcnemar": mcnemar, "hypotheses": hypotheses, "lora_significantly_better": bool(lora_wins),
                     "per_seed_p": [r["closed_loop"]["mcnemar"]["all"]["p_value"] for r in runs],
                     "reports": [str(t.dir / "report.md") for t in compares if t.size == size]}
    return out


def rank_correlation(cells: list[CellTask], results: dict[str, dict]) -> dict:
    """Spearman rank correlation of offline RMSE and closed-loop success over every cell (lower RMSE should go with
    higher success: a strong predictor gives rho near -1)."""
    from scipy import stats

    pairs = [(results[c.key]["rmse"], results[c.key]["success"]["all"]["rate"]) for c in cells
             if results[c.key]["rmse"] is not None]
    if len(pairs) < 3 or len({p[0] for p in pairs}) < 2 or len({p[1] for p in pairs}) < 2:
        return {"rho": None, "p_value": None, "cells": len(pairs),
                "note": "undefined: fewer than 3 cells, or RMSE or success the same in every cell"}
    rho, p = stats.spearmanr([p[0] for p in pairs], [p[1] for p in pairs])
    return {"rho": float(rho), "p_value": float(p), "cells": len(pairs), "note": None}


def _fmt(value: float | None, digits: int = 4) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _plot(spec: StudySpec, table: dict, cells: list[CellTask], results: dict, out: Path) -> None:
    from mobile_vla_sim.plotting import subplots

    sizes = list(spec.sizes)
    groups = ["all", *spec.difficulties]
    fig, axes = subplots(1, len(groups), figsize=(4.2 * len(groups), 3.6), squeeze=False, sharey=True)
    for ax, group in zip(axes[0], groups):
        for mode in spec.modes:
            s = [table[mode][n]["success"][group] for n in sizes]
            rates = [x["rate"] if x["rate"] is not None else np.nan for x in s]
            colour = MODE_COLOURS.get(mode)
            ax.plot(sizes, rates, "o-", color=colour, label=mode)
            ax.fill_between(sizes, [x["ci95"][0] for x in s], [x["ci95"][1] for x in s], color=colour, alpha=0.2)
        ax.set(title=f"{group} ({table[spec.modes[0]][sizes[0]]['success'][group]['n']} trials per point)",
               xlabel="training episodes", ylim=(-0.02, 1.02))
        ax.set_xscale("log")
        ax.set_xticks(sizes, [str(n) for n in sizes])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("closed-loop success (Wilson 95% CI)")
    axes[0][0].legend()
    fig.suptitle(f"{spec.name}: success vs dataset size")
    fig.tight_layout()
    fig.savefig(out / PLOTS["success"], dpi=110)

    fig, axes = subplots(1, 2, figsize=(9, 3.6))
    for ax, metric, label in ((axes[0], "val_loss", "val loss (Huber, normalised)"),
                              (axes[1], "rmse", "offline RMSE on val (m/s, rad/s)")):
        for mode in spec.modes:
            per_seed = [[v for v in table[mode][n][f"{metric}_per_seed"] if v is not None] for n in sizes]
            mean = [np.mean(v) if v else np.nan for v in per_seed]
            low = [m - min(v) if v else 0 for m, v in zip(mean, per_seed)]
            high = [max(v) - m if v else 0 for m, v in zip(mean, per_seed)]
            ax.errorbar(sizes, mean, yerr=[low, high], fmt="o-", capsize=3, color=MODE_COLOURS.get(mode), label=mode)
        ax.set(xlabel="training episodes", ylabel=label)
        ax.set_xscale("log")
        ax.set_xticks(sizes, [str(n) for n in sizes])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle("offline metrics vs dataset size (mean over seeds, bars: range)")
    fig.tight_layout()
    fig.savefig(out / PLOTS["offline"], dpi=110)

    fig, ax = subplots(figsize=(5, 4))
    for mode in spec.modes:
        mine = [results[c.key] for c in cells if c.mode == mode and results[c.key]["rmse"] is not None]
        ax.scatter([r["rmse"] for r in mine], [r["success"]["all"]["rate"] for r in mine],
                   color=MODE_COLOURS.get(mode), label=mode)
        for r in mine:
            ax.annotate(str(r["size"]), (r["rmse"], r["success"]["all"]["rate"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
    ax.set(xlabel="offline RMSE on val", ylabel="closed-loop success", title="every cell (labels: size)",
           ylim=(-0.02, 1.02))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / PLOTS["scatter"], dpi=110)


def real_project_table(spec: StudySpec, table: dict) -> dict:
    """The real project's frozen (Case 3) and LoRA (Case 4) numbers beside ours at the size nearest its 500."""
    size = min(spec.sizes, key=lambda n: (abs(n - REAL_EPISODES), -n))
    ours = {mode: {"val_loss": table[mode][size]["val_loss"], "train_loss": table[mode][size]["train_loss"],
                   "rmse": table[mode][size]["rmse"], "success": table[mode][size]["success"]["all"]}
            for mode in spec.modes}
    return {"size": size, "real": REAL_PROJECT, "ours": ours}


def _markdown(spec: StudySpec, data: dict, table: dict, compared: dict, smallest: int | None, corr: dict,
              real: dict, cells: list[CellTask], results: dict) -> str:
    sizes, groups = list(spec.sizes), ["all", *spec.difficulties]
    eval_n = results[cells[0].key]["success"]
    lines = [f"# Study: {spec.name}", "",
             f"Backbone `{spec.backbone}`; modes {', '.join(spec.modes)}; sizes {', '.join(map(str, sizes))} "
             f"training episodes; seeds {', '.join(map(str, spec.seeds))}. Every cell is scored on the same "
             f"closed-loop episodes ({eval_n['all']['n']} per cell: "
             + ", ".join(f"{eval_n[d]['n']} {d}" for d in spec.difficulties)
             + ") and the same validation episodes. Success: Wilson 95% CI, seeds pooled.", "",
             "## Data", "",
             f"Generated once ({data['generated']} episodes in `{data['root']}`); each size is the same "
             f"{data['val']} validation episodes plus a prefix of one side- and difficulty-balanced order of the "
             "training episodes, so smaller sets are subsets of larger ones.", "",
             "| size | train episodes (left / right) | val episodes | difficulty mix of train (easy / medium / hard) |",
             "|---|---|---|---|"]
    for row in data["sizes"]:
        lines.append(f"| {row['size']} | {row['train']} ({row['left']} / {row['right']}) | {row['val']} | "
                     f"{' / '.join(str(row['mix'].get(d, 0)) for d in ('easy', 'medium', 'hard'))} |")
    lines += ["", "## Closed-loop success vs dataset size", "", f"![success vs size]({PLOTS['success']})", "",
              "| mode | size | " + " | ".join(groups) + " |", "|---|---|" + "---|" * len(groups)]
    for mode in spec.modes:
        for n in sizes:
            lines.append(f"| {mode} | {n} | " + " | ".join(rate_cell(table[mode][n]["success"][g])
                                                            for g in groups) + " |")
    lines += ["", "## Offline metrics vs dataset size", "", f"![offline vs size]({PLOTS['offline']})", "",
              "| mode | size | val loss | train loss | offline RMSE (val) | train s | eval s |", "|---|---|---|---|---|---|---|"]
    for mode in spec.modes:
        for n in sizes:
            t = table[mode][n]
            lines.append(f"| {mode} | {n} | {_fmt(t['val_loss'])} | {_fmt(t['train_loss'])} | {_fmt(t['rmse'], 3)} | "
                         f"{_fmt(t['train_seconds'], 0)} | {_fmt(t['eval_seconds'], 0)} |")
    lines += ["", "## Frozen vs LoRA per size", ""]
    if not compared:
        lines += ["Not compared: the spec's modes are not frozen and lora.", ""]
    else:
        lines += ["Exact McNemar test on paired episodes (A = frozen, B = LoRA; seeds pooled); H1-H3 of the real "
                  "project from `mvla-sim compare` (how many seeds it holds in, mean value).", "",
                  "| size | frozen | LoRA | only frozen / only LoRA | McNemar p (all) | p per difficulty | H1 | H2 | H3 |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for n, c in compared.items():
            m = c["mcnemar"]["all"]
            per = ", ".join(f"{g} {c['mcnemar'][g]['p_value']:.3g}" for g in c["mcnemar"] if g != "all")
            hyp = [f"{h['holds']}/{h['seeds']} ({h['value']:.3f} {h['op']} {h['threshold']})"
                   for h in c["hypotheses"].values()]
            lines.append(f"| {n} | {pct(table['frozen'][n]['success']['all']['rate'])} | "
                         f"{pct(table['lora'][n]['success']['all']['rate'])} | {m['only_a']} / {m['only_b']} | "
                         f"{m['p_value']:.3g}{' *' if m['significant'] else ''} | {per} | {' | '.join(hyp)} |")
        lines += ["", "**Smallest size at which LoRA significantly beats frozen**: "
                  + (f"{smallest} training episodes." if smallest is not None else "not within the sizes run."), "",
                  "H1: context similarity (mean per-token cosine of the Kosmos-2 context vectors) > 0.8; H2: latent "
                  "difference (1 - mean cosine of the LSTM h_n) > 0.3; H3: |val loss frozen - val loss LoRA| < "
                  "0.01. Per-seed reports: `compare/<key>/report.md`.", ""]
    lines += ["## Does offline RMSE predict closed-loop success?", "", f"![RMSE vs success]({PLOTS['scatter']})", "",
              (f"Spearman rank correlation of offline RMSE and overall success over {corr['cells']} cells: "
               f"rho = {corr['rho']:.2f} (p = {corr['p_value']:.3g}); -1 would mean a lower RMSE always comes with "
               "a higher success." if corr["rho"] is not None else f"Spearman rank correlation: {corr['note']}."), ""]
    n = real["size"]
    lines += ["## The real project's table", "",
              "The real project reported offline numbers for Case 3 (frozen Kosmos-2 + LSTM head) on 500 real "
              "episodes and never ran it in closed loop; Case 4 (LoRA) never finished (out of GPU memory). Ours at "
              f"{n} simulated training episodes (the size nearest 500). Their RMSE is on "
              "clamped key labels, ours in m/s and rad/s: compare the columns of one side, not across.", "",
              "| | real Case 3 (frozen) | real Case 4 (LoRA) | " + " | ".join(f"ours {m} (n={n})" for m in spec.modes)
              + " |", "|---|---|---|" + "---|" * len(spec.modes)]
    for metric, label, digits in (("val_loss", "val loss", 4), ("train_loss", "train loss", 4), ("rmse", "RMSE", 3),
                                  ("success", "closed-loop success", 0)):
        real_cells = []
        for mode in ("frozen", "lora"):
            v = real["real"][mode][metric]
            real_cells.append(_fmt(v, digits) if v is not None else REAL_NOTE[mode])
        ours = [(rate_cell(real["ours"][m][metric]) if metric == "success"
                 else _fmt(real["ours"][m][metric], digits)) for m in spec.modes]
        lines.append(f"| {label} | {' | '.join(real_cells)} | {' | '.join(ours)} |")
    lines += ["", "## Cells", "", "| cell | key | val loss | RMSE | success | train s | eval s | threads |",
              "|---|---|---|---|---|---|---|---|"]
    for c in cells:
        r = results[c.key]
        lines.append(f"| {c.name} | `{c.key}` | {_fmt(r['val_loss'])} | {_fmt(r['rmse'], 3)} | "
                     f"{rate_cell(r['success']['all'])} | {r['seconds']['train']:.0f} | {r['seconds']['eval']:.0f} | "
                     f"{r['threads']} |")
    return "\n".join(lines) + "\n"


def data_summary(spec: StudySpec, plan: DataPlan) -> dict:
    from mobile_vla_sim.datasets.manifest import load_manifest

    rows = []
    for size in spec.sizes:
        train = [e for p in plan.train[:size // 2] for e in p.entries]
        mix: dict[str, int] = {}
        for e in train:
            mix[e["difficulty"]] = mix.get(e["difficulty"], 0) + 1
        rows.append({"size": size, "train": len(train), "val": 2 * len(plan.val), "mix": mix,
                     "left": sum(e["task"] == "left" for e in train), "right": sum(e["task"] == "right" for e in train)})
    return {"root": str(plan.root), "generated": len(load_manifest(plan.root)["episodes"]), "val": 2 * len(plan.val),
            "sizes": rows}


def probe_summary(probe: dict) -> dict:
    """A cell's probe in one row: clean success, the perturbations with a significant change, the swap's side
    flips and the text sensitivity (the full probe.md is in the probe's folder)."""
    run = {name: p for name, p in probe["perturbations"].items() if p["status"] == "run"}
    swap = run.get("swap_sides", {}).get("side_flip")
    text = probe.get("text_sensitivity") or {}
    return {"clean": probe["clean"]["success"],
            "significant": {name: p["overall"]["difference"]["value"] for name, p in run.items()
                            if p["overall"]["significant"]},
            "swap_side_flip": swap, "text_lateral_flip": (text.get("left_vs_right") or {}).get("lateral_flip")}


def _probe_lines(cells: list[CellTask], probes: dict[str, dict], probe_dirs: dict[str, str]) -> list[str]:
    lines = ["## Robustness probe", "", "Per cell: the perturbations whose paired success change is significant "
             "(exact McNemar), the share of episodes that changed side when told the other side, and the share of "
             "recorded frames whose lateral command flips between the left and the right instruction (0: "
             "instruction-blind). Full reports: `probe/<key>/probe.md`.", "",
             "| cell | clean success | significant changes (pp) | side flipped under swap | text: lateral flips | "
             "probe |", "|---|---|---|---|---|---|"]
    for c in cells:
        p = probes.get(c.name)
        if p is None:
            continue
        changes = ", ".join(f"{n} {100 * v:+.0f}" for n, v in p["significant"].items()) or "none"
        flip = rate_cell(p["swap_side_flip"]) if p["swap_side_flip"] else "n/a"
        text = f"{100 * p['text_lateral_flip']:.0f}%" if p["text_lateral_flip"] is not None else "n/a"
        lines.append(f"| {c.name} | {rate_cell(p['clean'])} | {changes} | {flip} | {text} | "
                     f"`{probe_dirs[c.name]}` |")
    return lines + [""]


def write_report(spec: StudySpec, cells: list[CellTask], results: dict[str, dict], compares: list[CompareTask],
                 plan: DataPlan, out: Path, probed: dict[str, dict | None] | None = None) -> dict[str, Path]:
    """Write `study.md`, `study.json` and the plots into `out`; return their paths."""
    from mobile_vla_sim.config import to_dict

    table = mode_size_table(spec, cells, results)
    compared = comparisons(spec, compares)
    smallest = next((n for n, c in compared.items() if c["lora_significantly_better"]), None)
    corr = rank_correlation(cells, results)
    real = real_project_table(spec, table)
    data = data_summary(spec, plan)
    _plot(spec, table, cells, results, out)
    study: dict[str, Any] = {
        "spec": to_dict(spec), "data": data, "by_mode_size": table, "comparisons": compared,
        "smallest_size_lora_significantly_better": smallest, "rmse_success_spearman": corr,
        "real_project_table": real, "plots": PLOTS,
        "cells": [{k: v for k, v in results[c.key].items() if k != "identity"} for c in cells],
    }
    probes = {name: probe_summary(p) for name, p in (probed or {}).items() if p is not None}
    markdown = _markdown(spec, data, table, compared, smallest, corr, real, cells, results)
    if probes:
        study["probes"] = probes
        dirs = {name: Path(p["config"]["out"]).name for name, p in probed.items() if p is not None}
        markdown += "\n" + "\n".join(_probe_lines(cells, probes, {n: f"probe/{d}" for n, d in dirs.items()}))
    atomic_write(out / "study.json", json.dumps(json_safe(study), indent=1, default=str) + "\n")
    atomic_write(out / "study.md", markdown)
    return {"report": out / "study.md", "json": out / "study.json", **{k: out / v for k, v in PLOTS.items()}}
