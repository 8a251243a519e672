"""`reach`: drive to the target object at the instructed position and stop in front of it (the real project's 2026
task: a gray basket at left / centre / right, approached along nine path types; MoNaVLA's "V5" data).

* Tasks: `left`, `center`, `right`: where the target stands as seen from the start (the real file names'
  `target_<left|center|right>`). The target stands `distance` ahead, `lateral` metres to the side (none for centre).
  The scene depends on the task (the target is where the task says); from medium on, decoys of the same kind stand at
  the other positions, so only the instruction tells them apart (the real deployed policy, which read no instruction,
  saw one basket).
* Path types: `left`, `straight`, `right`: the curve the demonstrator drives (the real `<left|straight|right>_path`):
  the expert passes a via point `VIA_OFFSET` to that side of the straight line halfway (beside the box, at hard), or
  drives straight (around the box the shorter way). Drawn per scene, with the target position giving the nine real
  path types; a policy in eval may take any path.
* Obstacles: none (easy, medium), one box on the way at hard, passed on either side.
* Target: the object the instruction set names (`--instructions basket|pot|cup|bottle`, the real project's targets
  in turn); default a gray basket (the deployed detector's "gray basket"), its target since mid-2026. Sizes are
  assumed (`scenario.TARGET_RADIUS`: no size was published).
* Success: stopped (a stop command) inside `goal_radius` of the stop point `STOP_GAP` (0.4 m) in front of the
  target, no collision.
* Failure labels (the real project's names): `wrong_target` (ended nearer another target position), then degenerate
  actions, `overshoot`, `false_stop` (at rest outside the goal circle: stopped short), `missed_stop` (went through
  the goal circle without stopping there).
* Real trials: `trial_*` levels put one basket where the deployed policy's five trial positions put it (centre, weak
  and strong left and right), so a sim score sits beside the real 95/100 (`REAL_TRIALS`).
* Files: the V5 layout (`observations/images`; every frame a move, no episode_start frame) and names
  `episode_YYMMDD_HHMMSS_target_<pos>_<path>_path__core__fixed_<end>.h5`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from mobile_vla_sim.envs.difficulty import DIFFICULTIES as STANDARD_LEVELS, Difficulty, doc_field
from mobile_vla_sim.envs.scenario import (TARGET_KINDS, TARGET_RADIUS, Box, Scenario, Target, sample_box,
                                          sample_distractors, sample_look, sample_start)
from mobile_vla_sim.envs.tasks.base import Detector, LanguageProbe, TaskFamily

#: Sideways offset of the via point of a curved path type (m), halfway to the goal.
VIA_OFFSET = 0.3
PATHS = ("left", "straight", "right")
#: With a box on the way, a curved path passes it this far beyond its side (m): the robot's radius (0.22 m), the
#: expert's planning margin (0.08 m) and some room.
_BOX_CLEARANCE = 0.35
#: A box on the way stands this far ahead of the start (m): 0.6 m or more before the stop point (hard's targets stand
#: 2.2-2.6 m ahead), room to get around it and line up with the target.
BOX_X = 0.85
#: The robot's centre stops this far in front of the target (m): the real project's calibrated stop distance was
#: 40-50 cm in front of the basket.
STOP_GAP = 0.4
_SIGN = {"left": 1.0, "center": 0.0, "right": -1.0, "straight": 0.0}
#: Start-to-target distance (m): the real collection guide's start points lie 0.5-1.5 m from the basket front and its
#: trials took 10-13 keys of 0.12 m on average; 1.8 m to the centre puts the stop point 1.2 m away.
DISTANCE = 1.8
#: Half the real camera's horizontal field of view: 112.96 degrees for its assumed 120 degree diagonal at 16:9
#: (`mobile_vla_sim.envs.config.CAMERAS["real"]`).
_TAN_HALF_HFOV = 1.5096


def lateral_at(cx: float, distance: float = DISTANCE) -> float:
    """The lateral offset (m, +left) that shows a target `distance` ahead at horizontal image position `cx` (0 left
    edge, 1 right edge) in the real camera at the start pose: the real reports give positions only as cx."""
    return (0.5 - cx) * 2 * _TAN_HALF_HFOV * distance


@dataclass(frozen=True)
class ReachDifficulty(Difficulty):
    lateral: float = doc_field("target offset of the left and right positions, +- (m)")
    distance: tuple[float, float] = doc_field("target distance ahead of the start (m)")
    decoys: int = doc_field("other objects of the target's kind at the other positions")
    n_boxes: int = doc_field("boxes on the way, passed on either side")
    task: str = doc_field("the only task of a trial condition ('' for any)")


_COMMON = dict(start_xy_noise=0.03, start_yaw_noise=0.05, n_distractors=(0, 0), color_jitter=0.0,
               random_textures=False, light_jitter=0.0, camera_height_noise=0.0, camera_angle_noise=0.0,
               actuation_noise=0.0, max_steps=30, decoys=0, n_boxes=0, task="")
#: Real trial conditions: the deployed policy's five start positions put the basket at cx 0.10 / 0.20 / 0.50 / 0.80 /
#: 0.90 of the first frame (the real reports give no metres): converted with `lateral_at`.
TRIAL_CX = {"trial_strong_left": 0.10, "trial_weak_left": 0.20, "trial_centre": 0.50, "trial_weak_right": 0.80,
            "trial_strong_right": 0.90}
#: The deployed policy's real successes per condition (of 20 each; 95/100 in August 2026).
REAL_TRIALS = {"trial_centre": (20, 20), "trial_strong_left": (19, 20), "trial_weak_left": (19, 20),
               "trial_strong_right": (19, 20), "trial_weak_right": (18, 20)}

DIFFICULTIES: dict[str, ReachDifficulty] = {
    "easy": ReachDifficulty(name="easy", lateral=lateral_at(0.25), distance=(DISTANCE, DISTANCE), **_COMMON),
    "medium": ReachDifficulty(**{**_COMMON, **dict(
        name="medium", lateral=lateral_at(0.25), distance=(1.6, 2.0), decoys=1, start_xy_noise=0.08,
        start_yaw_noise=0.15, color_jitter=0.08, light_jitter=0.15, max_steps=35)}),
    "hard": ReachDifficulty(**{**_COMMON, **dict(
        name="hard", lateral=lateral_at(0.25), distance=(2.2, 2.6), decoys=2, n_boxes=1, start_xy_noise=0.15,
        start_yaw_noise=0.3, n_distractors=(1, 3), color_jitter=0.15, random_textures=True, light_jitter=0.4,
        camera_height_noise=0.03, camera_angle_noise=0.06, actuation_noise=0.1, max_steps=45)}),
    **{name: ReachDifficulty(**{**_COMMON, **dict(name=name, lateral=abs(lateral_at(cx)), distance=(DISTANCE, DISTANCE),
                                                  task="center" if cx == 0.5 else "left" if cx < 0.5 else "right")})
       for name, cx in TRIAL_CX.items()},
}


def _sentences(template: str) -> dict[str, str]:
    return {"left": template.format(where="on the left"), "center": template.format(where="in the center"),
            "right": template.format(where="on the right")}


#: Sentences by target object: the real project's targets in order (bottle, cup, brown pot, then gray basket).
INSTRUCTION_SETS: dict[str, dict[str, str]] = {
    "basket": _sentences("Navigate to the gray basket {where}"),
    "pot": _sentences("Navigate to the brown pot {where}"),
    "cup": _sentences("Navigate to the cup {where}"),
    "bottle": _sentences("Navigate to the beverage bottle {where}"),
}

_NAME_RE = re.compile(
    r"^episode_(?P<date>\d{6})_(?P<time>\d{6})_(?P<scenario>target_(?P<side>left|center|right)_"
    r"(?P<path>left|straight|right)_path)__(?P<variant>core|variant)__(?P<distance>fixed|var)_"
    r"(?P<end>left|center|right)(?:\.h5)?$")
#: The real collector tags where the target ends up in the last frame: left of 0.4 of the width, right of 0.6.
_END_LEFT, _END_RIGHT = 0.4, 0.6


class Reach(TaskFamily):
    name = "reach"
    tasks = ("left", "center", "right")
    difficulties = DIFFICULTIES
    instruction_sets = INSTRUCTION_SETS
    default_instructions = "basket"
    opposite = {"left": "right", "center": "center", "right": "left"}
    language_probes = {
        "object": LanguageProbe("pot", "the episode's target position with another object ('{}') is sent"),
        "paraphrase": LanguageProbe("Drive up to the gray basket {side} and stop in front of it",
                                    "a paraphrase is sent: '{}'"),
    }
    requires_stop = True
    paired_scenes = False
    uses_via = True
    images_key = "observations/images"
    difficulty_groups = {"all": STANDARD_LEVELS, "trials": tuple(TRIAL_CX)}
    #: The real deployed policy's successes per trial condition, set beside a sim score of the same condition.
    real_trials = REAL_TRIALS
    labels = ("wrong_target", "forward_collapse", "oscillation", "overshoot", "false_stop", "missed_stop",
              "collision", "out_of_bounds", "timeout")

    def instruction_set(self, name: str | None = None) -> dict[str, str]:
        """Named sets, or a template whose `{side}` becomes "on the left", "in the center", "on the right"."""
        name = name or self.default_instructions
        if name not in self.instruction_sets and "{side}" in name:
            return _sentences(name.replace("{side}", "{where}"))
        return super().instruction_set(name)

    def target_kind(self, instructions: str | None) -> str:
        """The object an instruction set names (a set named after an object kind), else the basket."""
        return instructions if instructions in TARGET_KINDS else "basket"

    def sample_scenario(self, rng: np.random.Generator, difficulty: Difficulty, task: str,
                        instructions: str | None = None) -> Scenario:
        d, kind = difficulty, self.target_kind(instructions)
        distance = float(rng.uniform(*d.distance))
        positions = {t: (distance, _SIGN[t] * d.lateral) for t in self.tasks}
        stop = STOP_GAP + TARGET_RADIUS[kind]
        target = Target(kind, *positions[task], stop)
        others = [t for t in self.tasks if t != task]
        decoys = tuple(Target(kind, *positions[t], stop) for t in rng.permutation(others)[:d.decoys])
        boxes = tuple(sample_box(rng, d, BOX_X, (0.12, 0.18), (0.15, 0.25), 0.15) for _ in range(d.n_boxes))
        path = PATHS[int(rng.integers(len(PATHS)))]
        goal_x = distance - stop
        if path == "straight":
            via = None
        elif boxes:  # the curve goes around the box on its side, clear of its safety margin
            via = (boxes[0].x, boxes[0].y + _SIGN[path] * (boxes[0].hy + _BOX_CLEARANCE))
        else:
            via = (goal_x / 2, target.y / 2 + _SIGN[path] * VIA_OFFSET)
        half_width = d.lateral + 0.9
        start = sample_start(rng, d)
        distractors = sample_distractors(rng, d, target, half_width)
        return Scenario(difficulty=d.name, distance="fixed", variant=d.variant, boxes=boxes, target=target,
                        start=start, half_width=half_width, distractors=distractors, decoys=decoys, via=via,
                        path=path, **sample_look(rng, d))

    def scenario_name(self, scenario: Scenario, task: str) -> str:
        return f"target_{self.check_task(task)}_{scenario.path}_path"

    def tasks_for(self, difficulty: str) -> tuple[str, ...]:
        task = self.difficulty(difficulty).task
        return (task,) if task else self.tasks

    def expert_side(self, task: str) -> str | None:
        return None  # obstacles on either side: the shorter way

    #: A box and two decoys.
    max_boxes = 3

    def obstacles(self, scenario: Scenario) -> tuple[Box, ...]:
        """The boxes and the decoys' footprints (a target is a collision like any other object)."""
        radius = TARGET_RADIUS[scenario.target.kind]
        return scenario.boxes + tuple(Box(d.x, d.y, radius, radius, 0.0, (0.0, 0.0, 0.0)) for d in scenario.decoys)

    @property
    def state_dim(self) -> int:
        return super().state_dim + 1

    def encode_state(self, pose, velocity, goal, scenario: Scenario, task: str, via=None) -> np.ndarray:
        """The shared layout, then the level's lateral offset of the side positions: with it an expert knows every
        position's stop point (always-left drives to the left one)."""
        vec = super().encode_state(pose, velocity, goal, scenario, task, via)
        return np.append(vec, np.float32(self.difficulties[scenario.difficulty].lateral))

    def decode_state(self, vec) -> dict:
        vec = np.asarray(vec)
        s = super().decode_state(vec[:-1])
        s["goals"] = {t: np.array([s["goal"][0], _SIGN[t] * float(vec[-1])]) for t in self.tasks}
        return s

    def detectors(self) -> dict[str, Detector]:
        return {"wrong_target": self._wrong_target}

    def _wrong_target(self, rec, partner) -> bool:
        """Ended nearer the stop point of another target position than of its own."""
        if not rec.trajectory or not rec.goal or rec.difficulty not in self.difficulties:
            return False
        lateral = self.difficulties[rec.difficulty].lateral
        x, y = rec.trajectory[-1][:2]
        gx = rec.goal[0]
        own = math.hypot(x - gx, y - rec.goal[1])
        return any(math.hypot(x - gx, y - _SIGN[t] * lateral) < own for t in self.tasks if t != rec.task)

    def file_name(self, moment: datetime, index: int, task: str, difficulty: str, info: dict[str, Any]) -> str:
        """The V5 name; its last tag is where the target appears in the last frame, as the real collector tags it by
        its image column."""
        x, y, yaw = info["robot_pose"]
        dx, dy = info["target"][0] - x, info["target"][1] - y
        ahead, left = math.cos(yaw) * dx + math.sin(yaw) * dy, -math.sin(yaw) * dx + math.cos(yaw) * dy
        cx = 0.5 - left / max(ahead, 1e-6) / (2 * _TAN_HALF_HFOV)
        end = "left" if cx < _END_LEFT else "right" if cx > _END_RIGHT else "center"
        return f"episode_{moment:%y%m%d_%H%M%S}_{info['scenario']}__core__fixed_{end}.h5"

    def parse_file_name(self, name: str) -> dict[str, str] | None:
        match = _NAME_RE.match(Path(name).name)
        return None if match is None else match.groupdict()
