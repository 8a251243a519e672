"""Failure taxonomy: why an episode failed, as one primary label plus every label that applies.

Success says *whether*; the label says *how*, so that a collapsed policy (drives straight into the box), an
ungrounded one (goes the other way) and a jittery one (weaves) are told apart before a robot shows it. Labels are
computed from an `EpisodeRecord` (its outcome flags, poses, per-step actions, boxes and goal) and, for
`left_right_confusion`, its partner: the episode with the same difficulty and index and the other task, which
shares the scene (`mobile_vla_sim.eval.episodes`). Which labels apply, and in which order, is the task family's
(`TaskFamily.labels`; its own detectors come from `TaskFamily.detectors`): the detour family's are listed below,
the reach family's add `wrong_target` and `missed_stop`.

Notation: poses p_0..p_T (x along the corridor, y to the left), actions a_1..a_T (a_t is sent at pose p_{t-1}),
task sign s = +1 for left and -1 for right, first box (cx, cy, hx, hy), goal g. The *steer* of an action is its
lateral command as a fraction of its limit, +left: angular_z / MAX_ANGULAR for diff drive, linear_y / MAX_LINEAR
for omni (the real holonomic robot steers by strafing; its data has no rotation). NaN actions count as 0, as the
env executes them. The *forward* command is linear_x / MAX_LINEAR.

Labels, in precedence order (constants below); the episode ...

* `left_right_confusion`: went around the first box on the other side than instructed, and so did its partner.
* `wrong_side`: passed some box on the other side than instructed (the env's `wrong_side`).
* `forward_collapse`: never steered (every abs(steer) < STEER_ACTIVE) while commanding forward
  (forward >= STEER_ACTIVE) in at least FORWARD_COLLAPSE_FRACTION of its steps.
* `oscillation`: flipped the steer's sign at least OSCILLATION_FLIPS times between steps with
  abs(steer) >= OSCILLATION_STEER.
* `overshoot`: got farther along the corridor than the goal circle: max x > g_x + GOAL_RADIUS.
* `false_stop`: ended at rest outside the goal circle: over its last FALSE_STOP_STEPS steps it moved less than
  STOP_MOVE_M and turned less than STOP_TURN_RAD.
* `missed_stop` (families that need a stop): went through the goal circle without stopping there.
* `late_turn`: was still on a collision course with the first box (abs(y - cy) < hy + ROBOT_HALF_WIDTH) at the first
  pose within LATE_TURN_M of the box's near face (x >= cx - hx - LATE_TURN_M), and first steered towards the
  instructed side (s * steer >= STEER_ACTIVE) only from that pose on, before passing the box (x > cx + hx).
* `collision`: touched a wall, box, the bottle or clutter (the env's `collision`).
* `out_of_bounds`: left the arena (the env's `out_of_bounds`).
* `timeout`: ran out of steps (also the fallback, as in `EpisodeRecord.outcome`).

The primary label of a failed episode is the first label in that order that applies (`family.labels`); a successful
episode has none, but its flags still list behaviour labels (e.g. a successful run that weaves). The order puts
causes before outcomes: instruction grounding first (the question this tool exists to answer), then degenerate
action patterns (collapse, weaving), then where the robot ended up or turned (overshoot, false stop, late turn),
and the env's outcome only when nothing more specific explains the failure.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Sequence

import numpy as np

from mobile_vla_sim.envs.actions import MAX_ANGULAR, MAX_LINEAR
from mobile_vla_sim.envs.scenario import GOAL_RADIUS
from mobile_vla_sim.envs.sim import ROBOT_HALF_WIDTH
from mobile_vla_sim.envs.tasks import DEFAULT_FAMILY, TaskFamily, get_family
from mobile_vla_sim.eval.records import EpisodeRecord

#: A steer (or forward command) below this fraction of its limit is no command: 0.1 x 1.5 rad/s turns the robot
#: 3.4 degrees in a 0.4 s step, far too little to get around a box; a policy collapsed to the demonstrations'
#: mean action steers at 0.001 of the limit.
STEER_ACTIVE = 0.1
#: Share of steps with a forward command that makes a non-steering episode a forward collapse (not, say, a stop).
FORWARD_COLLAPSE_FRACTION = 0.8
#: Only swings of at least this fraction of the limit (0.45 rad/s) count towards oscillation, so small corrections
#: do not. Measured by scripts/taxonomy_margins.py (60 episodes, all difficulties): the clean expert flips such
#: swings once (out around the box, back to the goal), with the quickstart's 0.2 demo action noise at most 3 times.
OSCILLATION_STEER = 0.3
#: Sign flips of such swings that make an episode oscillate: one more than the noisy expert's maximum.
OSCILLATION_FLIPS = 4
#: Steps at rest that make an ending a stop: 1.2 s, whereas the expert covers at least 0.38 m in its last 3 steps.
FALSE_STOP_STEPS = 3
#: At rest = moved less than this over FALSE_STOP_STEPS steps (m): 3% of what 0.5 m/s covers in 1.2 s.
STOP_MOVE_M = 0.03
#: ... and turned less than this (rad), so a robot turning on the spot is not at rest.
STOP_TURN_RAD = 0.1
#: Distance to the first box's near face (m) by which the robot must be off a collision course. The expert plans
#: around corners inflated by 0.30 m and is then at least 0.057 m clear of the course (scripts/taxonomy_margins.py,
#: 180 episodes with 0 to 0.3 demo noise); a robot still on it here must move sideways by up to its width
#: (0.32 m) within about its own length.
LATE_TURN_M = 0.3

_SIGN = {"left": 1.0, "right": -1.0}
_OTHER = {"left": "right", "right": "left"}
_Detector = Callable[[EpisodeRecord, "EpisodeRecord | None"], bool]


def _actions(rec: EpisodeRecord) -> np.ndarray:
    """(T, action_dim) float array of the sent actions, NaN (null in JSON) as the 0 the env executes."""
    if not rec.actions:  # results written before actions were recorded
        return np.zeros((0, 2))
    return np.nan_to_num(np.asarray(rec.actions, dtype=float), nan=0.0)


def steer_signal(rec: EpisodeRecord) -> np.ndarray:
    """Per-step lateral command as a fraction of its limit, +left (angular_z in diff drive, linear_y in omni)."""
    a = _actions(rec)
    return a[:, 1] / (MAX_LINEAR if a.shape[1] == 3 else MAX_ANGULAR)


def sign_flips(steer: np.ndarray, threshold: float) -> int:
    """Sign changes between consecutive steps whose abs(steer) >= threshold (smaller steps are skipped)."""
    swings = np.sign(steer[np.abs(steer) >= threshold])
    return int((swings[1:] != swings[:-1]).sum())


def _left_right_confusion(rec: EpisodeRecord, partner: EpisodeRecord | None) -> bool:
    return partner is not None and all(r.side_taken == _OTHER.get(r.task) for r in (rec, partner))


def _forward_collapse(rec: EpisodeRecord, partner: EpisodeRecord | None) -> bool:
    a = _actions(rec)
    if a.shape[0] == 0:
        return False
    forward = a[:, 0] / MAX_LINEAR >= STEER_ACTIVE
    return bool(np.abs(steer_signal(rec)).max() < STEER_ACTIVE and forward.mean() >= FORWARD_COLLAPSE_FRACTION)


def _oscillation(rec: EpisodeRecord, partner: EpisodeRecord | None) -> bool:
    return sign_flips(steer_signal(rec), OSCILLATION_STEER) >= OSCILLATION_FLIPS


def _overshoot(rec: EpisodeRecord, partner: EpisodeRecord | None) -> bool:
    if not rec.goal or not rec.trajectory:
        return False
    return max(p[0] for p in rec.trajectory) > rec.goal[0] + GOAL_RADIUS


def _false_stop(rec: EpisodeRecord, partner: EpisodeRecord | None) -> bool:
    if not rec.goal or len(rec.trajectory) <= FALSE_STOP_STEPS:
        return False
    tail = np.asarray(rec.trajectory[-FALSE_STOP_STEPS - 1:], dtype=float)
    moved = np.hypot(*(tail[:, :2] - tail[-1, :2]).T).max()
    turn = np.abs(np.angle(np.exp(1j * (tail[:, 2] - tail[-1, 2])))).max()
    away = np.hypot(tail[-1, 0] - rec.goal[0], tail[-1, 1] - rec.goal[1]) >= GOAL_RADIUS
    return bool(moved < STOP_MOVE_M and turn < STOP_TURN_RAD and away)


def _late_turn(rec: EpisodeRecord, partner: EpisodeRecord | None) -> bool:
    if not rec.obstacles or not rec.trajectory or rec.task not in _SIGN:
        return False
    cx, cy, hx, hy = rec.obstacles[0][:4]
    xs = np.asarray(rec.trajectory, dtype=float)[:, :2]
    near = np.flatnonzero(xs[:, 0] >= cx - hx - LATE_TURN_M)
    if near.size == 0 or abs(xs[near[0], 1] - cy) >= hy + ROBOT_HALF_WIDTH:
        return False
    passed = np.flatnonzero(xs[:, 0] > cx + hx)
    end = passed[0] if passed.size else len(xs)
    toward = _SIGN[rec.task] * steer_signal(rec) >= STEER_ACTIVE  # toward[t] was sent at pose t
    return bool(toward[near[0]:end].any() and not toward[:near[0]].any())


def _missed_stop(rec: EpisodeRecord, partner: EpisodeRecord | None) -> bool:
    if not rec.goal or not rec.trajectory:
        return False
    xs = np.asarray(rec.trajectory, dtype=float)[:, :2]
    return bool(np.hypot(xs[:, 0] - rec.goal[0], xs[:, 1] - rec.goal[1]).min() < GOAL_RADIUS)


#: The shared detectors by label; a family lists the ones that apply to it (`TaskFamily.labels`) in its order.
_DETECTORS: dict[str, _Detector] = {
    "left_right_confusion": _left_right_confusion,
    "wrong_side": lambda rec, partner: rec.wrong_side,
    "forward_collapse": _forward_collapse,
    "oscillation": _oscillation,
    "overshoot": _overshoot,
    "false_stop": _false_stop,
    "late_turn": _late_turn,
    "missed_stop": _missed_stop,
    "collision": lambda rec, partner: rec.collision,
    "out_of_bounds": lambda rec, partner: rec.out_of_bounds,
    "timeout": lambda rec, partner: rec.timeout,
}
#: The default family's labels, in precedence order (the primary label of a failure is the first that applies).
LABELS: tuple[str, ...] = get_family(DEFAULT_FAMILY).labels


def detectors(family: TaskFamily) -> dict[str, _Detector]:
    """The family's labels in precedence order, each with its detector (the family's own, else the shared one)."""
    own = family.detectors()
    return {name: own.get(name) or _DETECTORS[name] for name in family.labels}


def classify(rec: EpisodeRecord, partner: EpisodeRecord | None = None,
             family: TaskFamily | None = None) -> tuple[str, list[str]]:
    """(primary label, every label that applies in precedence order); the primary label is "" on success."""
    flags = [name for name, applies in detectors(family or get_family()).items() if applies(rec, partner)]
    if rec.success:
        return "", flags
    return (flags[0] if flags else "timeout"), flags


def paired_scenes(records: Sequence[EpisodeRecord],
                  family: TaskFamily | None = None) -> list[tuple[EpisodeRecord, EpisodeRecord]]:
    """(left, right) records of every scene (difficulty, index) run with both tasks, in families whose tasks share
    their scenes (none otherwise: another task's episode is another scene there)."""
    if not (family or get_family()).paired_scenes:
        return []
    by_scene: dict[tuple[str, int], dict[str, EpisodeRecord]] = defaultdict(dict)
    for r in records:
        by_scene[(r.difficulty, r.index)][r.task] = r
    return [(s["left"], s["right"]) for s in by_scene.values() if "left" in s and "right" in s]


def label_failures(records: Sequence[EpisodeRecord], family: TaskFamily | None = None) -> None:
    """Set `failure_label` and `failure_flags` (";"-joined) of every record in place; idempotent."""
    family = family or get_family()
    paired = {a.key: b for left, right in paired_scenes(records, family) for a, b in ((left, right), (right, left))}
    for r in records:
        label, flags = classify(r, paired.get(r.key), family)
        r.failure_label, r.failure_flags = label, ";".join(flags)


def failure_summary(records: Sequence[EpisodeRecord], labels: Sequence[str] = LABELS) -> dict:
    """Counts and rates (over all episodes of the group) of each primary label, and counts of each flag."""
    n = len(records)
    counts = {name: sum(r.failure_label == name for r in records) for name in labels}
    flags = {name: sum(name in r.failure_flags.split(";") for r in records) for name in labels}
    return {"episodes": n, "failed": sum(not r.success for r in records), "counts": counts,
            "rates": {name: (k / n if n else float("nan")) for name, k in counts.items()}, "flags": flags}
