"""Closed-loop metrics: success rates (Wilson intervals), SPL, aggregates by task/difficulty, instruction grounding."""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Sequence

import numpy as np

from mobile_vla_sim.eval.records import EpisodeRecord
from mobile_vla_sim.eval.schema import Aggregates, GroupSummary, Grounding, Rate
from mobile_vla_sim.eval.stats import wilson_interval
from mobile_vla_sim.envs.tasks import TaskFamily, get_family
from mobile_vla_sim.eval.taxonomy import LABELS, failure_summary, label_failures, paired_scenes
from mobile_vla_sim.moved import moved_name

#: Two runs whose positions never differ by more than this (m) followed the same path.
SAME_PATH_TOL = 0.05


def spl(success: bool, shortest_path_length: float, path_length: float) -> float:
    """Success weighted by path length, S * l / max(p, l) (Anderson et al. 2018)."""
    if not success or not np.isfinite(shortest_path_length) or shortest_path_length <= 0:
        return 0.0
    return float(shortest_path_length / max(path_length, shortest_path_length))


def rate(k: int, n: int) -> Rate:
    """k of n with its Wilson 95% interval (rate NaN, written as null, when n is 0)."""
    lo, hi = wilson_interval(k, n)
    return {"rate": k / n if n else float("nan"), "k": int(k), "n": int(n), "ci95": [lo, hi]}


def share(flags: Sequence[bool]) -> Rate:
    """The share of true flags, as `rate`."""
    return rate(sum(bool(f) for f in flags), len(flags))


def _mean(values: Iterable[float]) -> float:
    arr = np.asarray([v for v in values if v is not None], dtype=float)
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if arr.size else float("nan")


def summarize(records: Sequence[EpisodeRecord], labels: Sequence[str] = LABELS) -> GroupSummary:
    """Success rate with its Wilson 95% CI plus SPL, failure-mode rates, failure labels (of a task family's
    `labels`) and means for a group of episodes (labelled by `label_failures`)."""
    return {
        "episodes": len(records),
        "success": share([r.success for r in records]),
        "spl": _mean(r.spl for r in records),
        "collision_rate": share([r.collision for r in records])["rate"],
        "wrong_side_rate": share([r.wrong_side for r in records])["rate"],
        "timeout_rate": share([r.timeout for r in records])["rate"],
        "out_of_bounds_rate": share([r.out_of_bounds for r in records])["rate"],
        "mean_final_distance": _mean(r.final_distance for r in records),
        "mean_steps": _mean(r.steps for r in records),
        "nan_actions": int(sum(r.nan_actions for r in records)),
        "clipped_actions": int(sum(r.clipped_actions for r in records)),
        "failures": failure_summary(records, labels),
    }


def grounding(records: Sequence[EpisodeRecord], family: TaskFamily | None = None) -> Grounding:
    """Instruction grounding on paired scenes (same difficulty and index, left and right).

    `both_success`: how often the policy succeeds at both instructions in one scene. `same_side`: how often it
    goes around the first box on the same side whatever the instruction says. `same_path`: how often the left and
    right runs follow the same path (within SAME_PATH_TOL): the instruction had no effect at all, as with a
    policy collapsed to the mean action even when it never gets past the box. Families whose tasks do not share
    their scenes have no pairs.
    """
    complete = paired_scenes(records, family)
    both = [left.success and right.success for left, right in complete]
    same = [left.side_taken == right.side_taken != "none" for left, right in complete]
    same_path = [_same_path(left.trajectory, right.trajectory) for left, right in complete]
    return {"pairs": len(complete), "both_success": share(both), "same_side": share(same),
            "same_path": share(same_path)}


def _same_path(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> bool:
    """Whether two pose sequences stay within SAME_PATH_TOL metres of each other over their common length."""
    n = min(len(a), len(b))
    if n == 0:
        return False
    gap = np.asarray(a[:n], dtype=float)[:, :2] - np.asarray(b[:n], dtype=float)[:, :2]
    return bool(np.hypot(gap[:, 0], gap[:, 1]).max() < SAME_PATH_TOL)


def aggregate(records: Sequence[EpisodeRecord], family: TaskFamily | None = None) -> Aggregates:
    """Summaries overall, per difficulty, per task and per (difficulty, task), and grounding per difficulty, with the
    task family's failure labels (default: the default family's).

    First labels every record's failure (`label_failures`, in place, over the whole set so that paired scenes
    find each other), so episodes.csv written afterwards carries the same labels as the summary.
    """
    family = family or get_family()
    label_failures(records, family)
    labels = family.labels
    by_diff: dict[str, list[EpisodeRecord]] = defaultdict(list)
    by_task: dict[str, list[EpisodeRecord]] = defaultdict(list)
    by_both: dict[str, list[EpisodeRecord]] = defaultdict(list)
    for r in records:
        by_diff[r.difficulty].append(r)
        by_task[r.task].append(r)
        by_both[f"{r.difficulty}/{r.task}"].append(r)
    return {
        "overall": summarize(records, labels),
        "by_difficulty": {d: summarize(rs, labels) for d, rs in by_diff.items()},
        "by_task": {t: summarize(rs, labels) for t, rs in by_task.items()},
        "by_difficulty_task": {k: summarize(rs, labels) for k, rs in by_both.items()},
        "grounding": {"overall": grounding(records, family), **{d: grounding(rs, family) for d, rs in by_diff.items()}},
    }


def __getattr__(name: str):
    """Names that moved since the reorganisation (`mobile_vla_sim.moved`)."""
    return moved_name(__name__, name)
