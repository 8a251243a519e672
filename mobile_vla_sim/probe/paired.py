"""Paired statistics of a perturbed run against the clean one on the same episodes."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from mobile_vla_sim.eval.metrics import share
from mobile_vla_sim.eval.records import EpisodeRecord
from mobile_vla_sim.eval.stats import mcnemar_exact, paired_difference_interval
from mobile_vla_sim.eval.taxonomy import failure_summary

#: An episode told "Stop" that moved less than this (m) in total obeyed: a robot length is ~0.4 m, and a grounded
#: policy may creep a little before it settles, but never gets around a box within 0.1 m.
STOP_OBEYED_M = 0.1


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


def label_changes(clean: Sequence[EpisodeRecord], other: Sequence[EpisodeRecord], labels: Sequence[str]) -> dict:
    """Rate of every primary failure label (share of all episodes) clean, perturbed, and the change."""
    fc, fo = failure_summary(clean, labels), failure_summary(other, labels)
    return {name: {"clean": fc["rates"][name], "perturbed": fo["rates"][name],
                   "change": fo["rates"][name] - fc["rates"][name]} for name in labels}


def compare_condition(clean: Sequence[EpisodeRecord], other: Sequence[EpisodeRecord], alpha: float,
                      labels: Sequence[str]) -> dict:
    """Everything the report says about one perturbation: overall and per difficulty (in the clean run's order),
    with the task family's failure `labels`."""
    diffs = list(dict.fromkeys(r.difficulty for r in clean))
    return {
        "overall": paired_stats(clean, other, alpha),
        "by_difficulty": {d: paired_stats([r for r in clean if r.difficulty == d],
                                          [r for r in other if r.difficulty == d], alpha) for d in diffs},
        "labels": label_changes(clean, other, labels),
        "side_flip": side_flips(clean, other),
        "stayed": share([r.path_length < STOP_OBEYED_M for r in other]),
    }
