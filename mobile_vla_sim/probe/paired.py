"""Paired statistics of a perturbed run against the clean one on the same episodes, and the probe's family of tests.

Every perturbation x difficulty McNemar test of one probe is one family: a default probe runs up to 16
perturbations, each tested overall and per difficulty, and at alpha = 0.05 per test chance alone would star about one
of them. Stars and verdicts are decided on p-values adjusted over the whole family (`adjust_family`; Holm by default).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from mobile_vla_sim.eval.metrics import share
from mobile_vla_sim.eval.records import EpisodeRecord
from mobile_vla_sim.eval.stats import (ADJUSTMENTS, adjust_pvalues, detectable_difference, mcnemar_exact,
                                      paired_difference_interval)
from mobile_vla_sim.eval.taxonomy import failure_summary

#: An episode told "Stop" that moved less than this (m) in total obeyed: a robot length is ~0.4 m, and a grounded
#: policy may creep a little before it settles, but never gets around a box within 0.1 m.
STOP_OBEYED_M = 0.1


# --- paired statistics -----------------------------------------------------------------------------------------
def paired_stats(clean: Sequence[EpisodeRecord], other: Sequence[EpisodeRecord]) -> dict:
    """Success of both runs on the episodes they share (by key), the paired difference (other - clean) with its
    95% interval, and the exact McNemar p-value (significance is decided over the family: `adjust_family`)."""
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
                        "only_perturbed": test.only_b if test else 0}}


def side_flips(clean: Sequence[EpisodeRecord], other: Sequence[EpisodeRecord]) -> dict:
    """Share of shared episodes, among those passing the first box in both runs, passed on the other side."""
    by_key = {r.key: r for r in other}
    sides = [(r.side_taken, by_key[r.key].side_taken) for r in clean if r.key in by_key]
    return share([a != b for a, b in sides if a != "none" and b != "none"])


def label_changes(clean: Sequence[EpisodeRecord], other: Sequence[EpisodeRecord], labels: Sequence[str]) -> dict:
    """Rate of every primary failure label (share of all episodes) clean, perturbed, and the change."""
    fc, fo = failure_summary(clean, labels), failure_summary(other, labels)
    return {name: {"clean": fc["rates"][name], "perturbed": fo["rates"][name],
                   "change": fo["rates"][name] - fc["rates"][name]} for name in labels}


def compare_condition(clean: Sequence[EpisodeRecord], other: Sequence[EpisodeRecord],
                      labels: Sequence[str]) -> dict:
    """Everything the report says about one perturbation: overall and per difficulty (in the clean run's order),
    with the task family's failure `labels`."""
    diffs = list(dict.fromkeys(r.difficulty for r in clean))
    return {
        "overall": paired_stats(clean, other),
        "by_difficulty": {d: paired_stats([r for r in clean if r.difficulty == d],
                                          [r for r in other if r.difficulty == d]) for d in diffs},
        "labels": label_changes(clean, other, labels),
        "side_flip": side_flips(clean, other),
        "stayed": share([r.path_length < STOP_OBEYED_M for r in other]),
    }


# --- the family of tests ---------------------------------------------------------------------------------------
def adjust_family(perturbations: dict[str, dict], method: str, alpha: float) -> dict:
    """Adjust the McNemar p-values of every run perturbation, overall and per difficulty, as one family (one call
    of `adjust_pvalues`), in place: each test gets ``mcnemar.p_adjusted`` and ``significant`` (adjusted p < alpha).
    With one difficulty its test is the overall one, counted once. Returns the family's description."""
    tests: list[list[dict]] = []  # each: the stats dicts that share one test
    for p in perturbations.values():
        if p["status"] != "run":
            continue
        groups = list(p["by_difficulty"].values())
        tests += [[p["overall"]], *([g] for g in groups)] if len(groups) > 1 else [[p["overall"], *groups]]
    raw = [same[0]["mcnemar"]["p_value"] for same in tests]
    for same, adjusted in zip(tests, adjust_pvalues(raw, method) if raw else []):
        for s in same:
            s["mcnemar"]["p_adjusted"] = float(adjusted)
            s["significant"] = bool(adjusted < alpha)  # NaN (no pair): not tested, no star
    return {"method": method, "name": ADJUSTMENTS[method][1], "tests": int(np.isfinite(raw).sum()) if raw else 0,
            "alpha": alpha}


def probe_detectable(perturbations: dict[str, dict], clean_episodes: int, family: dict) -> dict:
    """The smallest success change the probe could detect with 80% power (`stats.detectable_difference`) at the
    mean observed discordance of its perturbations: for one test at alpha, and at alpha / tests, the strictest step
    of the family's adjustment (what the most significant change must reach)."""
    overall = [p["overall"] for p in perturbations.values() if p["status"] == "run" and p["overall"]["n"]]
    discordance = (float(np.mean([(o["mcnemar"]["only_clean"] + o["mcnemar"]["only_perturbed"]) / o["n"]
                                  for o in overall])) if overall else None)
    single = detectable_difference(clean_episodes, discordance, family["alpha"])
    strictest = detectable_difference(clean_episodes, discordance, family["alpha"] / max(1, family["tests"]))
    return {**single, "difference_strictest": strictest["difference"], "alpha_strictest": strictest["alpha"]}
