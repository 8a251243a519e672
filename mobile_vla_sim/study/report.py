"""The study's report: `study.md`, `study.json` and plots, from the finished cells and comparisons.

Frozen vs LoRA is a question about training methods, so the unit of replication is the training run. Each size's
verdict comes from `eval.stats.compare_methods` on the per-episode outcomes of every seed: a two-stage cluster
bootstrap (training seeds, then episodes) with a Student-t interval. Seed s of frozen is paired with seed s of LoRA
(`seeds_paired`): both start from the same head and action-token initialisation (drawn from the seed before LoRA is
added) and train on the same data subset, so a lucky initialisation is shared. The tests of every size x difficulty
are one family, adjusted (Holm by default) before any verdict, and "the smallest size at which LoRA wins" is read
from the adjusted decisions. With one seed no method-level claim is made. Success rates with Wilson intervals that
pool the seeds' episodes are a description (they leave the seed spread out); the per-seed table shows the spread,
and the noise floor (one checkpoint on two disjoint episode sets) stands beside it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mobile_vla_sim.eval.metrics import rate
from mobile_vla_sim.eval.records import EpisodeRecord
from mobile_vla_sim.eval.report import (adjustment_name, detectable_sentence, p_cell, pct, rate_cell,
                                        read_results)
from mobile_vla_sim.eval.schema import json_safe
from mobile_vla_sim.eval.stats import (ADJUSTMENTS, adjust_pvalues, compare_methods, detectable_difference,
                                       minimum_detectable_method_difference, noise_floor, seed_rates)
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
#: A method-level decision in words (A = frozen, B = LoRA).
VERDICTS = {"B": "LoRA better", "A": "frozen better", "none": "no difference supported",
            "unsupported": "no claim: one seed"}
#: Outcomes of one cell's evaluation: episode key -> (difficulty, success).
Outcomes = dict[str, tuple[str, bool]]


def _mean(values: Sequence[float | None]) -> float | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(values)) if values else None


def cell_outcomes(cells: list[CellTask]) -> dict[str, Outcomes]:
    """Per cell key: every evaluated episode's difficulty and success, from the cell's results.json."""
    return {c.key: {r.key: (r.difficulty, bool(r.success)) for r in read_results(c.dir / "eval").episodes}
            for c in cells}


def outcome_matrix(runs: list[CellTask], outcomes: dict[str, Outcomes], group: str = "all") -> np.ndarray:
    """(seeds, episodes) successes of `runs` (one mode and size, in seed order) on the episodes of `group`, in the
    first run's episode order (every cell ran the same episode set)."""
    keys = [k for k, (d, _) in outcomes[runs[0].key].items() if group in ("all", d)]
    return np.array([[outcomes[c.key][k][1] for k in keys] for c in runs], dtype=bool)


def _runs(cells: list[CellTask], mode: str, size: int) -> list[CellTask]:
    return sorted((c for c in cells if c.mode == mode and c.size == size), key=lambda c: c.seed)


def mode_size_table(spec: StudySpec, cells: list[CellTask], results: dict[str, dict],
                    outcomes: dict[str, Outcomes]) -> dict[str, dict[int, dict]]:
    """Per mode and size: success (all + per difficulty) pooled over seeds with Wilson CIs and per seed, the spread
    of the per-seed success between training runs (`seed_rates`), and the offline numbers per seed and their mean."""
    table: dict[str, dict[int, dict]] = {}
    for mode in spec.modes:
        for size in spec.sizes:
            runs = _runs(cells, mode, size)
            found = [results[c.key] for c in runs]
            success = {}
            for group in ("all", *spec.difficulties):
                k = sum(r["success"][group]["k"] for r in found)
                n = sum(r["success"][group]["n"] for r in found)
                success[group] = {**rate(k, n), "per_seed": [r["success"][group]["rate"] for r in found]}
            table.setdefault(mode, {})[size] = {
                "success": success, "seeds": [r["seed"] for r in found],
                "per_seed": [r["success"]["all"] for r in found],
                "seed_rates": seed_rates(outcome_matrix(runs, outcomes)).to_dict(),
                **{m: _mean([r[m] for r in found]) for m in ("val_loss", "train_loss", "rmse")},
                **{f"{m}_per_seed": [r[m] for r in found] for m in ("val_loss", "train_loss", "rmse")},
                "train_seconds": _mean([r["seconds"]["train"] for r in found]),
                "eval_seconds": _mean([r["seconds"]["eval"] for r in found]),
            }
    return table


def method_comparisons(spec: StudySpec, cells: list[CellTask], outcomes: dict[str, Outcomes], alpha: float,
                       adjust: str) -> tuple[dict[int, dict], dict]:
    """Per size and group (all, each difficulty): LoRA (B) against frozen (A) with training seeds as the unit
    (`compare_methods`, seed s of one paired with seed s of the other), every size x group test adjusted as one
    family (one `adjust_pvalues` call) and decided on its adjusted p-value; with one difficulty its test is the
    overall one, counted once. Also the smallest difference each comparison could detect, at the method level
    (`minimum_detectable_method_difference`) and for one pair of checkpoints on these episodes (observed
    discordance). Returns (per size, the family's description)."""
    groups = ["all", *spec.difficulties]
    family_groups = groups if len(spec.difficulties) > 1 else ["all"]
    found: dict[tuple[int, str], Any] = {}
    checkpoint: dict[int, dict] = {}
    for size in spec.sizes:
        frozen, lora = _runs(cells, "frozen", size), _runs(cells, "lora", size)
        for group in groups:
            found[size, group] = compare_methods(outcome_matrix(frozen, outcomes, group),
                                                 outcome_matrix(lora, outcomes, group), seeds_paired=True,
                                                 confidence=1 - alpha)
        a, b = outcome_matrix(frozen, outcomes), outcome_matrix(lora, outcomes)
        checkpoint[size] = detectable_difference(a.shape[1], float(np.mean(a != b)), alpha)
    tested = [(size, g) for size in spec.sizes for g in family_groups]
    adjusted = dict(zip(tested, adjust_pvalues([found[t].p_value for t in tested], adjust)))
    out: dict[int, dict] = {}
    for size in spec.sizes:
        methods = {}
        for group in groups:
            c, q = found[size, group], float(adjusted[size, group if group in family_groups else "all"])
            methods[group] = {**c.to_dict(), "p_adjusted": q, "decision": c.decide(p_value=q),
                              "detectable": minimum_detectable_method_difference(c.se, c.df, alpha)}
        out[size] = {"methods": methods, "decision": methods["all"]["decision"],
                     "lora_better": methods["all"]["decision"] == "B", "checkpoint_detectable": checkpoint[size]}
    family = {"method": adjust, "name": ADJUSTMENTS[adjust][1], "alpha": alpha,
              "tests": int(np.isfinite([found[t].p_value for t in tested]).sum())}
    return out, family


def hypotheses(spec: StudySpec, compares: list[CompareTask]) -> dict[int, dict]:
    """Per size: H1-H3 of the real project over the seeds' `compare` runs (how many seeds each holds in, mean
    value), and each seed's checkpoint-level McNemar test (frozen checkpoint vs LoRA checkpoint, adjusted within
    its own `compare`)."""
    out: dict[int, dict] = {}
    for size in spec.sizes:
        tasks = [t for t in compares if t.size == size]
        runs = [json.loads((t.dir / "compare.json").read_text()) for t in tasks]
        if not runs:
            continue
        out[size] = {
            "hypotheses": {h: {"holds": sum(r["hypotheses"][h]["holds"] for r in runs), "seeds": len(runs),
                               "value": _mean([r["hypotheses"][h]["value"] for r in runs]),
                               "op": runs[0]["hypotheses"][h]["op"], "threshold": runs[0]["hypotheses"][h]["threshold"],
                               "measure": runs[0]["hypotheses"][h]["measure"]} for h in runs[0]["hypotheses"]},
            "per_seed": [{"seed": t.seed, **{k: r["closed_loop"]["mcnemar"]["all"][k]
                                             for k in ("only_a", "only_b", "p_value", "p_adjusted")}}
                         for t, r in zip(tasks, runs)],
            "reports": [str(t.dir / "report.md") for t in tasks]}
    return out


def noise_floors(cells: list[CellTask], outcomes: dict[str, Outcomes], table: dict, eval_seed: int,
                 floors: dict[str, tuple[int, list[EpisodeRecord] | None]]) -> dict[str, dict]:
    """Per evaluated cell: its success on the study's episode set and on a disjoint one (`noise_floor`), beside the
    spread between the training seeds of its mode and size."""
    by_name = {c.name: c for c in cells}
    out = {}
    for name, (seed, records) in floors.items():
        if records is None:
            continue
        cell = by_name[name]
        first = [success for _, success in outcomes[cell.key].values()]
        floor = noise_floor(first, [r.success for r in records])
        out[name] = {**floor.to_dict(), "episode_seeds": [eval_seed, seed], "mode": cell.mode, "size": cell.size,
                     "seed_rates": table[cell.mode][cell.size]["seed_rates"]}
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


def _seed_lines(spec: StudySpec, table: dict) -> list[str]:
    """Every training run's success and val loss, and the spread between the runs of one mode and size."""
    lines = ["## Training runs: per-seed results and their spread", "",
             "Each seed is one training run scored on the same closed-loop episodes. SD between seeds: standard "
             "deviation of the per-seed success; episode noise: the binomial SD one run's success has from the "
             "episodes alone. A seed spread well above the episode noise means the training runs themselves differ, "
             "so only several seeds say something about a training method.", "",
             "| mode | size | success per seed (k/n) | mean | SD between seeds | episode noise | val loss per seed |",
             "|---|---|---|---|---|---|---|"]
    for mode in spec.modes:
        for n in spec.sizes:
            t = table[mode][n]
            per = ", ".join(f"s{seed} {pct(r['rate'])} ({r['k']}/{r['n']})"
                            for seed, r in zip(t["seeds"], t["per_seed"]))
            spread = t["seed_rates"]
            lines.append(f"| {mode} | {n} | {per} | {pct(spread['mean'])} | {_fmt(spread['spread'], 3)} | "
                         f"{_fmt(spread['episode_noise'], 3)} | {', '.join(_fmt(v) for v in t['val_loss_per_seed'])} |")
    return lines + [""]


def _method_lines(spec: StudySpec, table: dict, compared: dict, family: dict, hyps: dict,
                  smallest: int | None) -> list[str]:
    """Frozen vs LoRA per size with training runs as the unit, the smallest size at which LoRA wins, H1-H3."""
    method = adjustment_name(family["method"])
    seeds = len(spec.seeds)
    lines = ["## Frozen vs LoRA per size (training runs as the unit)", "",
             f"Difference in mean success, LoRA − frozen, over {seeds} training seed(s) per method: two-stage "
             "cluster bootstrap over training seeds, then episodes (Davison & Hinkley 1997; Field & Welsh 2007), with seed s "
             "of frozen paired with seed s of LoRA (same head initialisation, same data), and a Student-t interval "
             "on the seeds' degrees of freedom (`eval.stats.compare_methods`). A verdict needs "
             f"{method}-adjusted p < {family['alpha']:g} over every size x difficulty test of this study "
             f"({family['tests']} tests; {family['name']}). Detectable: the smallest difference this comparison "
             "finds with 80% power, given the spread it measured.", "",
             f"| size | frozen mean (per seed) | LoRA mean (per seed) | LoRA − frozen [95% CI] | p | {method} p | "
             f"verdict | per difficulty: Δ ({method} p) | detectable | H1 | H2 | H3 |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for n, c in compared.items():
        m = c["methods"]["all"]
        per_mode = [f"{pct(r['mean'])} ({', '.join(pct(x) for x in r['rates'])})"
                    for r in (table[mode][n]["seed_rates"] for mode in ("frozen", "lora"))]
        per_group = ", ".join(f"{g} {_pp(d['difference'])} ({p_cell(d['p_adjusted'])})"
                              for g, d in c["methods"].items() if g != "all")
        hyp = [f"{h['holds']}/{h['seeds']} ({h['value']:.3f} {h['op']} {h['threshold']})"
               for h in hyps.get(n, {}).get("hypotheses", {}).values()] or ["–"] * 3
        lines.append(f"| {n} | {per_mode[0]} | {per_mode[1]} | {_pp(m['difference'])} [{_pp(m['ci'][0])}, "
                     f"{_pp(m['ci'][1])}] | {p_cell(m['p_value'])} | {p_cell(m['p_adjusted'])} | "
                     f"{VERDICTS[m['decision']]} | {per_group or '–'} | {_pp(m['detectable'])} | {' | '.join(hyp)} |")
    lines += ["", "**Smallest size at which LoRA wins** (method level, adjusted): "
              + (f"{smallest} training episodes." if smallest is not None else "not within the sizes run."), ""]
    if seeds < 2:
        lines += ["**One training seed per method cannot support a method-level claim.** With one run of each "
                  "method the spread between training runs is unknown, so any difference between the two checkpoints "
                  "may be the luck of those runs. Run at least 2 seeds (3 or more to detect differences of the size "
                  "training runs differ by); the checkpoint-level tests of the single runs are in "
                  "`compare/<key>/report.md`.", ""]
    first = next(iter(compared.values()), None)
    if first is not None:
        lines += [f"One pair of checkpoints on these episodes: {detectable_sentence(first['checkpoint_detectable'])} "
                  "(at the smallest size; per size in study.json).", ""]
    lines += ["H1: context similarity (mean per-token cosine of the Kosmos-2 context vectors) > 0.8; H2: latent "
              "difference (1 - mean cosine of the LSTM h_n) > 0.3; H3: |val loss frozen - val loss LoRA| < 0.01; "
              "each: in how many seeds it holds (mean value). Per-seed reports: `compare/<key>/report.md`.", ""]
    return lines


def _noise_lines(floors: dict[str, dict]) -> list[str]:
    lines = ["## The harness's noise floor", "",
             "One checkpoint evaluated on two disjoint episode sets (the study's and a second episode seed): how far "
             "two evaluations differ when only the episodes do (Newcombe's interval for independent proportions). "
             "Beside it, the spread between training seeds of that mode and size.", "",
             "| cell | episode seeds | success on each set | difference [95% CI] | seed spread (SD) | "
             "episode noise (SD) |",
             "|---|---|---|---|---|---|"]
    for name, f in floors.items():
        k1, k2 = round(f["first"] * f["n_first"]), round(f["second"] * f["n_second"])
        lines.append(f"| {name} | {f['episode_seeds'][0]} / {f['episode_seeds'][1]} | {pct(f['first'])} "
                     f"({k1}/{f['n_first']}) / {pct(f['second'])} ({k2}/{f['n_second']}) | {_pp(f['difference'])} "
                     f"[{_pp(f['low'])}, {_pp(f['high'])}] | {_fmt(f['seed_rates']['spread'], 3)} | "
                     f"{_fmt(f['seed_rates']['episode_noise'], 3)} |")
    return lines + [""]


def _pp(x: float | None) -> str:
    """A difference of rates in signed percentage points."""
    return "–" if x is None or not math.isfinite(x) else f"{100 * x:+.0f} pp"


def _markdown(spec: StudySpec, data: dict, study: dict, cells: list[CellTask], results: dict) -> str:
    sizes, groups = list(spec.sizes), ["all", *spec.difficulties]
    table, corr, real = study["by_mode_size"], study["rmse_success_spearman"], study["real_project_table"]
    eval_n = results[cells[0].key]["success"]
    lines = [f"# Study: {spec.name}", "",
             f"Backbone `{spec.backbone}`; modes {', '.join(spec.modes)}; sizes {', '.join(map(str, sizes))} "
             f"training episodes; seeds {', '.join(map(str, spec.seeds))}. Every cell is scored on the same "
             f"closed-loop episodes ({eval_n['all']['n']} per cell: "
             + ", ".join(f"{eval_n[d]['n']} {d}" for d in spec.difficulties)
             + ") and the same validation episodes.", "",
             "## Data", "",
             f"Generated once ({data['generated']} episodes in `{data['root']}`); each size is the same "
             f"{data['val']} validation episodes plus a prefix of one side- and difficulty-balanced order of the "
             "training episodes, so smaller sets are subsets of larger ones.", "",
             "| size | train episodes (left / right) | val episodes | difficulty mix of train (easy / medium / hard) |",
             "|---|---|---|---|"]
    for row in data["sizes"]:
        lines.append(f"| {row['size']} | {row['train']} ({row['left']} / {row['right']}) | {row['val']} | "
                     f"{' / '.join(str(row['mix'].get(d, 0)) for d in ('easy', 'medium', 'hard'))} |")
    lines += [""]
    if study["comparisons"]:
        lines += _method_lines(spec, table, study["comparisons"], study["adjustment"], study["hypotheses"],
                               study["smallest_size_lora_better"])
    else:
        lines += ["## Frozen vs LoRA per size", "", "Not compared: the spec's modes are not frozen and lora.", ""]
    lines += _seed_lines(spec, table)
    if study["noise_floor"]:
        lines += _noise_lines(study["noise_floor"])
    lines += ["## Closed-loop success vs dataset size", "", f"![success vs size]({PLOTS['success']})", "",
              "Episodes of every seed pooled, with Wilson 95% intervals: a description of what the cells did, not a "
              "test (the intervals leave the spread between training runs out; see the per-seed table).", "",
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
    lines += ["", "## Does offline RMSE predict closed-loop success?", "",
              f"![RMSE vs success]({PLOTS['scatter']})", "",
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
             "(exact McNemar, adjusted over that probe's family of tests), the share of episodes that changed side "
             "when told the other side, and the share of recorded frames whose lateral command flips between the "
             "left and the right instruction (0: instruction-blind). Full reports: `probe/<key>/probe.md`.", "",
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
                 plan: DataPlan, out: Path, probed: dict[str, dict | None] | None = None,
                 floors: dict[str, tuple[int, list[EpisodeRecord] | None]] | None = None) -> dict[str, Path]:
    """Write `study.md`, `study.json` and the plots into `out`; return their paths. `floors`: per noise-floor cell,
    the second episode set's seed and its records (None while not finished)."""
    from mobile_vla_sim.config import to_dict

    outcomes = cell_outcomes(cells)
    table = mode_size_table(spec, cells, results, outcomes)
    alpha, adjust = float(spec.compare.get("alpha", 0.05)), str(spec.compare.get("adjust", "holm"))
    compared, family = (method_comparisons(spec, cells, outcomes, alpha, adjust)
                        if set(spec.modes) == {"frozen", "lora"} else ({}, None))
    data = data_summary(spec, plan)
    _plot(spec, table, cells, results, out)
    study: dict[str, Any] = {
        "spec": to_dict(spec), "data": data, "comparisons": compared, "adjustment": family,
        "smallest_size_lora_better": next((n for n, c in compared.items() if c["lora_better"]), None),
        "hypotheses": hypotheses(spec, compares),
        "noise_floor": noise_floors(cells, outcomes, table, spec.eval_values()["seed"], floors or {}),
        "by_mode_size": table, "rmse_success_spearman": rank_correlation(cells, results),
        "real_project_table": real_project_table(spec, table), "plots": PLOTS,
        "cells": [{k: v for k, v in results[c.key].items() if k != "identity"} for c in cells],
    }
    probes = {name: probe_summary(p) for name, p in (probed or {}).items() if p is not None}
    markdown = _markdown(spec, data, study, cells, results)
    if probes:
        study["probes"] = probes
        dirs = {name: Path(p["config"]["out"]).name for name, p in probed.items() if p is not None}
        markdown += "\n" + "\n".join(_probe_lines(cells, probes, {n: f"probe/{d}" for n, d in dirs.items()}))
    atomic_write(out / "study.json", json.dumps(json_safe(study), indent=1, default=str) + "\n")
    atomic_write(out / "study.md", markdown)
    return {"report": out / "study.md", "json": out / "study.json", **{k: out / v for k, v in PLOTS.items()}}
