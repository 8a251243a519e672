"""The `results.json` of one evaluation, as types: written by `report.write_results`, read by `report.read_results`.

One place says what every key of the file means. JSON has no NaN, so NaN values (an undefined rate or mean, e.g.
SPL of a group with no episode) are written as `null`; `Results.from_dict` turns them back into NaN where the
field is a float of a dataclass, and leaves `None` in the plain-dict parts (the `TypedDict`s).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, TypedDict

from mobile_vla_sim.version import __version__
from mobile_vla_sim.eval.records import EpisodeRecord, from_json_dict

PACKAGE = "mobile-vla-sim"


def json_safe(value: Any) -> Any:
    """NaN is not JSON: write it as null so any JSON reader can load the file."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


class Rate(TypedDict):
    """A proportion of episodes with its Wilson 95% interval (`stats.wilson_interval`)."""

    rate: float | None
    """k / n; null when n is 0."""
    k: int
    """Episodes where the event happened (e.g. successes)."""
    n: int
    """Episodes counted."""
    ci95: list[float]
    """[low, high] Wilson 95% interval of the rate; [0, 1] when n is 0."""


class GroupSummary(TypedDict):
    """Closed-loop summary of a group of episodes (`metrics.summarize`)."""

    episodes: int
    """Episodes in the group."""
    success: Rate
    """Success rate with its Wilson 95% interval."""
    spl: float | None
    """Mean success weighted by path length (Anderson et al. 2018)."""
    collision_rate: float | None
    """Share of episodes that ended in a collision."""
    wrong_side_rate: float | None
    """Share of episodes that passed a box on the side the instruction did not name."""
    timeout_rate: float | None
    """Share of episodes that reached the step limit."""
    out_of_bounds_rate: float | None
    """Share of episodes that left the corridor."""
    mean_final_distance: float | None
    """Mean distance (m) to the goal at the end."""
    mean_steps: float | None
    """Mean number of control steps."""
    nan_actions: int
    """Actions with NaN the env replaced by 0, over all episodes."""
    clipped_actions: int
    """Actions the env clipped to its limits, over all episodes."""
    failures: dict[str, Any]
    """Failure taxonomy (`eval.taxonomy.failure_summary`): episodes, failed, per-label counts and rates, flag
    counts."""


class Grounding(TypedDict):
    """Instruction grounding on paired scenes: the same scene run with both instructions (`metrics.grounding`)."""

    pairs: int
    """Scenes run with both the left and the right instruction."""
    both_success: Rate
    """Pairs where the policy succeeds at both instructions."""
    same_side: Rate
    """Pairs where the robot passes the first box on the same side whatever the instruction."""
    same_path: Rate
    """Pairs where the left and right runs follow the same path: the instruction had no effect."""


class Aggregates(TypedDict):
    """Every summary of one evaluation (`metrics.aggregate`)."""

    overall: GroupSummary
    """All episodes."""
    by_difficulty: dict[str, GroupSummary]
    """Per difficulty (easy, medium, hard)."""
    by_task: dict[str, GroupSummary]
    """Per instructed side (left, right)."""
    by_difficulty_task: dict[str, GroupSummary]
    """Per "difficulty/task"."""
    grounding: dict[str, Grounding]
    """"overall" and per difficulty."""


class Throughput(TypedDict, total=False):
    """How fast the evaluation ran."""

    episodes: int
    """Episodes finished."""
    seconds: float
    """Wall-clock seconds of the rollouts."""
    episodes_per_min: float
    """episodes / seconds * 60."""


@dataclass
class OfflineMetrics:
    """A policy's predictions against held-out demonstrations (`offline.offline_metrics`)."""

    data: str
    """Dataset folder."""
    split: str
    """Split of it: "val" (the one training validated on, `datasets.splits`), "train" or "all"."""
    episodes: int
    """Episodes scored."""
    frames: int
    """Frames scored: each frame with a next action."""
    rmse: float
    """Root mean squared error of the predicted action after each frame against the recorded next action, over the
    dims of the policy's action layout, in m/s and rad/s."""
    rmse_per_dim: dict[str, float]
    """The same per action dim (linear_x, linear_y, angular_z)."""
    mae: float
    """Mean absolute error, same pairs and units."""
    sign_agreement: float
    """Share of predictions with the target's sign, where the target is not ~0; NaN when there is none."""
    episode_names: list[str]
    """Names (file stems) of the episodes scored."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(kw_only=True)
class Results:
    """Everything one `mvla-sim eval` run wrote to `results.json`, in the file's key order."""

    package: str = PACKAGE
    """Always "mobile-vla-sim": tells these files apart from other JSON."""
    version: str = __version__
    """Package version that wrote the file."""
    policy: str
    """Policy label used in tables: checkpoint file name, or the baseline's name."""
    config: dict[str, Any]
    """The evaluation config (`EvalConfig` as plain values) that produced these results."""
    interrupted: bool = False
    """True when the run was stopped early: only the finished episodes are counted."""
    throughput: Throughput = field(default_factory=dict)  # type: ignore[assignment]
    """Episodes, seconds and episodes per minute of the rollouts."""
    aggregates: Aggregates
    """Closed-loop summaries overall, per difficulty, per task, and grounding."""
    offline: OfflineMetrics | None = None
    """Offline metrics when the run was given `--offline-data`, else null."""
    detectable: dict[str, Any] = field(default_factory=dict)
    """What these episodes could detect with 80% power at alpha 0.05 (`report.detectable`): `rate`, the smallest
    change of the success rate from its observed value a test on them finds (`stats.minimum_detectable_effect`);
    `paired`, the smallest difference to another policy on the same episodes an exact McNemar test finds
    (`stats.detectable_difference`, at the assumed discordance: one policy alone measures none)."""
    stopping: dict[str, Any] | None = None
    """With `--target-halfwidth W`: where the evaluation stopped (`run.stopping_record`): the target, whether the
    anytime-valid interval got that narrow (`reached`), the episodes counted (the finished prefix of the run order
    up to the stop) of the budget, and that interval (`confidence_sequence`, valid at whatever episode one stops,
    unlike the Wilson interval of the aggregates); null otherwise."""
    episodes: list[EpisodeRecord]
    """One record per finished episode (`records.EpisodeRecord`), in episode-set order."""

    def to_json(self) -> str:
        payload = {f.name: getattr(self, f.name) for f in fields(self)}
        payload["offline"] = self.offline.to_dict() if self.offline else None
        payload["episodes"] = [r.to_dict() for r in self.episodes]
        return json.dumps(json_safe(payload), indent=1)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Results":
        """Inverse of `to_json` (after `json.loads`); a missing required key raises KeyError."""
        results = from_json_dict(cls, data)
        results.episodes = [EpisodeRecord.from_dict(e) for e in data["episodes"]]
        results.offline = from_json_dict(OfflineMetrics, data["offline"]) if data.get("offline") else None
        return results
