"""`detour`: go around the box(es) on the instructed side and stop in front of the bottle (the real project's
2025 task, `1box_hori_left` ... `2box_hori_right`).

* Tasks: `left`, `right`. The scene depends on (seed, difficulty) only, never on the task: left and right episodes
  of one scene share it, so the image alone cannot tell the way and grounding compares the two.
* Scenes: one box (easy, medium) or two staggered boxes (hard) in a corridor at a close / medium / far distance
  class, a dark bottle with a green cap 0.95-1.2 m beyond the last box (`DIFFICULTIES`).
* Instructions: the real project's sentences by name (`INSTRUCTION_SETS`): `bottle` (default) and `cup` in English,
  `korean` (what the real training loader fed the model, from the file name), `inference` (what the deployed robot
  was sent), `basket` (a later scene's target); any sentence with `{side}`.
* Success: inside the goal circle (0.25 m) 0.4 m in front of the bottle, every box passed on the instructed side,
  no collision. Expert: the shortest path around the boxes on the instructed side.
* Failure labels: instruction grounding first (`left_right_confusion`, `wrong_side`), then degenerate actions,
  then where it ended (`mobile_vla_sim.eval.taxonomy`).
* Files: `episode_YYYYMMDD_HHMMSS_<n>box_hori_<side>_<core|variant>_<close|medium|far>_<difficulty>_<index>.h5`,
  the real layout (`images` at the top level).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from mobile_vla_sim.envs.difficulty import Difficulty, doc_field
from mobile_vla_sim.envs.scenario import Scenario, Target, sample_box, sample_distractors, sample_look, sample_start
from mobile_vla_sim.envs.tasks.base import LanguageProbe, TaskFamily

#: Distance (m) from the nominal start to the first box centre for each distance class.
DISTANCE_M = {"close": 0.85, "medium": 1.1, "far": 1.4}


@dataclass(frozen=True)
class DetourDifficulty(Difficulty):
    n_boxes: int = doc_field("boxes to go around, staggered along the corridor")
    box_half_x: tuple[float, float] = doc_field("box half depth (m, along the corridor)")
    box_half_y: tuple[float, float] = doc_field("box half width (m, across the corridor)")
    distances: tuple[str, ...] = doc_field("obstacle distance classes (see DISTANCE_M)")
    box_lateral: float = doc_field("box centre offset from the corridor axis, +- (m)")
    side_gap: tuple[float, float] = doc_field("clearance: free width between the widest box edge and each wall (m)")


DIFFICULTIES: dict[str, DetourDifficulty] = {
    "easy": DetourDifficulty(
        name="easy", n_boxes=1, box_half_x=(0.15, 0.15), box_half_y=(0.2, 0.2), distances=("medium",),
        box_lateral=0.02, start_xy_noise=0.03, start_yaw_noise=0.05, side_gap=(1.0, 1.0), n_distractors=(0, 0),
        color_jitter=0.0, random_textures=False, light_jitter=0.0, camera_height_noise=0.0, camera_angle_noise=0.0,
        actuation_noise=0.0, max_steps=40),
    "medium": DetourDifficulty(
        name="medium", n_boxes=1, box_half_x=(0.12, 0.22), box_half_y=(0.15, 0.3), distances=("close", "medium", "far"),
        box_lateral=0.08, start_xy_noise=0.08, start_yaw_noise=0.15, side_gap=(0.8, 1.0), n_distractors=(0, 1),
        color_jitter=0.08, random_textures=False, light_jitter=0.15, camera_height_noise=0.0, camera_angle_noise=0.0,
        actuation_noise=0.0, max_steps=45),
    "hard": DetourDifficulty(
        name="hard", n_boxes=2, box_half_x=(0.12, 0.22), box_half_y=(0.15, 0.3), distances=("close", "medium", "far"),
        box_lateral=0.12, start_xy_noise=0.15, start_yaw_noise=0.3, side_gap=(0.62, 0.8), n_distractors=(2, 4),
        color_jitter=0.15, random_textures=True, light_jitter=0.4, camera_height_noise=0.03, camera_angle_noise=0.06,
        actuation_noise=0.1, max_steps=60),
}


def _sides(template: str) -> dict[str, str]:
    return {side: template.format(side=side) for side in ("left", "right")}


#: The real project's sentences by name (kept verbatim). English sets could be one `{side}` template, but the Korean
#: training sentences differ by a whole word ("왼쪽" / "오른쪽"), so every set is stored side by side.
INSTRUCTION_SETS: dict[str, dict[str, str]] = {
    "bottle": _sides("Navigate around obstacles and reach the front of the beverage bottle on the {side}"),
    "cup": _sides("Navigate around the obstacle on the {side} side and reach the cup"),
    "korean": {"left": "가장 왼쪽 외곽으로 돌아 컵까지 가세요", "right": "가장 오른쪽 외곽으로 돌아 컵까지 가세요"},
    "inference": _sides("Navigate to the {side} bottle"),
    "basket": _sides("Navigate to the brown pot on the {side}"),
}
#: The real training loader's sentence for a file name with no side in it.
KOREAN_FALLBACK = "컵까지 가세요"

_NAME_RE = re.compile(
    r"^episode_(?P<date>\d{8})_(?P<time>\d{6})"
    r"_(?P<scenario>(?P<num_boxes>\d+)box_(?P<layout>hori|vert)_(?P<side>left|right))"
    r"(?:_(?P<variant>core|variant))?(?:_(?P<distance>close|medium|far))?"
    r"(?:_(?P<difficulty>easy|medium|hard))?(?:_(?P<tag>[A-Za-z0-9]+))?(?:\.h5)?$"
)


class Detour(TaskFamily):
    name = "detour"
    tasks = ("left", "right")
    difficulties = DIFFICULTIES
    instruction_sets = INSTRUCTION_SETS
    default_instructions = "bottle"
    opposite = {"left": "right", "right": "left"}
    language_probes = {
        "paraphrase": LanguageProbe("Go around the obstacles on the {side} and stop in front of the drink bottle",
                                    "a paraphrase is sent: '{}'"),
        "korean": LanguageProbe("korean", "the episode's side in the '{}' instruction set is sent"),
        "basket": LanguageProbe("basket", "the episode's side in the '{}' instruction set is sent"),
    }
    pass_side = True
    extra_sentences = (KOREAN_FALLBACK,)
    labels = ("left_right_confusion", "wrong_side", "forward_collapse", "oscillation", "overshoot", "false_stop",
              "late_turn", "collision", "out_of_bounds", "timeout")

    def sample_scenario(self, rng: np.random.Generator, difficulty: Difficulty, task: str,
                        instructions: str | None = None) -> Scenario:
        d = difficulty
        distance = str(rng.choice(d.distances))
        boxes, x = [], DISTANCE_M[distance]
        for _ in range(d.n_boxes):
            boxes.append(sample_box(rng, d, x, d.box_half_x, d.box_half_y, d.box_lateral))
            x += boxes[-1].hx + rng.uniform(0.75, 0.95)
        last = boxes[-1]
        target = Target("bottle", float(last.x + last.hx + rng.uniform(0.95, 1.2)),
                        float(rng.uniform(-d.box_lateral, d.box_lateral)))
        half_width = max(abs(b.y) + b.hy for b in boxes) + float(rng.uniform(*d.side_gap))
        start = sample_start(rng, d)
        distractors = sample_distractors(rng, d, target, half_width)
        return Scenario(difficulty=d.name, distance=distance, variant=d.variant, boxes=tuple(boxes), target=target,
                        start=start, half_width=float(half_width), distractors=distractors, **sample_look(rng, d))

    def scenario_name(self, scenario: Scenario, task: str) -> str:
        return f"{len(scenario.boxes)}box_hori_{self.check_task(task)}"

    def file_name(self, moment: datetime, index: int, task: str, difficulty: str, info: dict[str, Any]) -> str:
        return (f"episode_{moment:%Y%m%d_%H%M%S}_{info['scenario']}_{info['variant']}_{info['obstacle_distance']}_"
                f"{difficulty}_{index:06d}.h5")

    def parse_file_name(self, name: str) -> dict[str, str] | None:
        match = _NAME_RE.match(Path(name).name)
        if match is None:
            return None
        fields = match.groupdict()
        fields["num_boxes"] = int(fields["num_boxes"])
        return fields
