"""`TaskFamily`: everything that makes one kind of task, so that nothing outside its module names it.

A family says what an instruction can ask (`tasks`), how scenes are drawn per difficulty, the sentences that ask it,
where the goal is and what success needs, which way the scripted expert goes around obstacles, which failure labels
apply, and how episodes are named and laid out on disk. The env, `generate`, `eval`, the probe, the study, the
taxonomy and the reports read it from here (`EnvConfig.task_family`).

A lab's own family is a subclass in a module of its own, named on the command line as `--task-family
package.module:ClassName` (see `mobile_vla_sim/envs/tasks/template.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, ClassVar, Iterable, Mapping

import numpy as np

from mobile_vla_sim.envs.difficulty import DIFFICULTIES, Difficulty
from mobile_vla_sim.envs.scenario import GOAL_RADIUS, Box, Scenario
from mobile_vla_sim.envs.state import MAX_BOXES, decode_state, encode_state, state_dim
from mobile_vla_sim.errors import ConfigError

#: A failure-label detector: (record, the same scene's record with another task or None) -> applies.
Detector = Callable[[Any, Any], bool]


@dataclass(frozen=True)
class LanguageProbe:
    """A language perturbation the family offers to the robustness probe: send the episode's task in another
    instruction set (a set name or a template), e.g. another object name or a paraphrase."""

    default: str
    what: str  # "{}" is the strength


class TaskFamily:
    """One task family. Class attributes are its plain data; methods the parts that compute.

    `tasks`: what an instruction can ask, e.g. ("left", "right"); an episode is (scene, task). `difficulties`: one
    `Difficulty` (or subclass) per level, named easy / medium / hard in every family. `instruction_sets`: named sets,
    task -> sentence; `default_instructions` names the env's default. `opposite`: the task the probe's `swap_sides`
    sends instead of each task. `language_probes`: the family's own language perturbations. `pass_side`: whether
    every obstacle must be passed on the side the task names (else either side will do). `requires_stop`: success
    needs a stop inside the goal circle. `goal_radius`: that circle's radius (m). `paired_scenes`: whether every task
    of one scene index shares the scene (then grounding compares them). `labels`: the failure labels in precedence
    order, names from `mobile_vla_sim.eval.taxonomy` or from `detectors()`. `uses_via`: whether demonstrations pass
    a via point (the scene's `via`, in the privileged state). `images_key`: where the HDF5 layout keeps the camera
    frames ("images", or "observations/images" as in the real project's later "V5" layout, whose frames are all
    moves: no episode_start frame).
    """

    name: ClassVar[str]
    tasks: ClassVar[tuple[str, ...]]
    difficulties: ClassVar[Mapping[str, Difficulty]]
    instruction_sets: ClassVar[Mapping[str, Mapping[str, str]]]
    default_instructions: ClassVar[str]
    opposite: ClassVar[Mapping[str, str]]
    language_probes: ClassVar[Mapping[str, LanguageProbe]] = {}
    pass_side: ClassVar[bool] = False
    requires_stop: ClassVar[bool] = False
    goal_radius: ClassVar[float] = GOAL_RADIUS
    paired_scenes: ClassVar[bool] = True
    uses_via: ClassVar[bool] = False
    labels: ClassVar[tuple[str, ...]]
    images_key: ClassVar[str] = "images"
    #: Real trials of a deployed policy per level (successes, trials), shown beside a sim score of the same level.
    real_trials: ClassVar[Mapping[str, tuple[int, int]]] = {}
    #: Further sentences of the family's real data (e.g. a loader's fallback), for tokenizer vocabularies.
    extra_sentences: ClassVar[tuple[str, ...]] = ()

    # --- scenes ----------------------------------------------------------------------------------------------------
    #: Names that stand for several levels on the command line (`--difficulty all`).
    difficulty_groups: ClassVar[Mapping[str, tuple[str, ...]]] = {"all": DIFFICULTIES}

    def parse_difficulties(self, spec: str | Iterable[str]) -> tuple[str, ...]:
        """Levels named by a comma list (or a sequence) of level and group names, in order, each once; a one-line
        error else."""
        names: list[str] = []
        for item in (str(spec).split(",") if isinstance(spec, str) else spec):
            item = item.strip().lower()
            if item in self.difficulty_groups:
                names.extend(self.difficulty_groups[item])
            elif item in self.difficulties:
                names.append(item)
            else:
                valid = [*self.difficulties, *self.difficulty_groups]
                raise ConfigError(f"unknown difficulty {item!r} for task family {self.name}: choose one of "
                                  f"{', '.join(valid)}, or a comma list")
        return tuple(dict.fromkeys(names))

    def tasks_for(self, difficulty: str) -> tuple[str, ...]:
        """The tasks a level runs (all of them, unless the level is a condition with one task)."""
        return self.tasks

    def difficulty(self, name: str) -> Difficulty:
        """A level by name, with a one-line error naming the valid ones."""
        if name not in self.difficulties:
            raise ConfigError(f"unknown difficulty {name!r} for task family {self.name}: use one of "
                              f"{', '.join(self.difficulties)}")
        return self.difficulties[name]

    def sample_scenario(self, rng: np.random.Generator, difficulty: Difficulty, task: str,
                        instructions: str | None = None) -> Scenario:
        """Draw a scene for `task`; the same generator state, difficulty, task and instruction set always give the
        same scene. A family whose scenes do not depend on the task (`paired_scenes`) must not read it;
        `instructions` (the env's set name or template) lets a family put the object its sentences name."""
        raise NotImplementedError

    def scenario_name(self, scenario: Scenario, task: str) -> str:
        """The real data's name for the scene and task (file names, `info["scenario"]`)."""
        raise NotImplementedError

    def expert_side(self, task: str) -> str | None:
        """The side the expert passes obstacles on for `task` ("left", "right"), or None for the shorter way."""
        return task if self.pass_side else None

    def obstacles(self, scenario: Scenario) -> tuple[Box, ...]:
        """What the expert and the shortest path go around (the boxes; a family may add other objects)."""
        return scenario.boxes

    # --- the privileged state (`mobile_vla_sim.envs.state`) ---------------------------------------------------------
    #: Obstacle slots of the state.
    max_boxes: ClassVar[int] = MAX_BOXES

    @property
    def state_dim(self) -> int:
        return state_dim(self.tasks, self.uses_via, self.max_boxes)

    def encode_state(self, pose, velocity, goal, scenario: Scenario, task: str, via=None) -> np.ndarray:
        """The state vector; `via`: the via point still ahead (None once passed or without one)."""
        return encode_state(pose, velocity, goal, self.obstacles(scenario), task, self.tasks,
                            via if self.uses_via else False, self.max_boxes)

    def decode_state(self, vec) -> dict:
        """`mobile_vla_sim.envs.state.decode_state`, plus `goals` (task -> goal point) where the family's state lets
        an expert tell where another task's goal is (to demonstrate doing the wrong task)."""
        return decode_state(vec, self.tasks, self.uses_via, self.max_boxes)

    # --- instructions ----------------------------------------------------------------------------------------------
    def instruction_set(self, name: str | None = None) -> dict[str, str]:
        """Task -> sentence of a named set (None: the default) or of a template containing `{side}`."""
        name = name or self.default_instructions
        if name in self.instruction_sets:
            return dict(self.instruction_sets[name])
        if "{side}" not in name:
            raise ConfigError(f"instruction template {name!r} is neither a set name of task family {self.name} nor "
                              f"has '{{side}}'; use one of {', '.join(self.instruction_sets)} or a sentence "
                              "containing '{side}'")
        return {task: name.format(side=task) for task in self.tasks}

    def instruction(self, task: str, instructions: str | None = None) -> str:
        return self.instruction_set(instructions)[self.check_task(task)]

    def check_task(self, task: str) -> str:
        if task not in self.tasks:
            raise ConfigError(f"unknown task {task!r} for task family {self.name}: use one of {', '.join(self.tasks)}")
        return task

    # --- outcomes --------------------------------------------------------------------------------------------------
    def detectors(self) -> dict[str, Detector]:
        """Failure-label detectors of the family's own labels (the taxonomy's shared ones need not be repeated)."""
        return {}

    # --- on disk ---------------------------------------------------------------------------------------------------
    def file_name(self, moment: datetime, index: int, task: str, difficulty: str, info: dict[str, Any]) -> str:
        """The file name of generated episode `index`, collected at `moment` (a derived clock), from its final `info`
        (`scenario`, `variant`, `obstacle_distance`, `robot_pose`, `goal`...)."""
        raise NotImplementedError

    def parse_file_name(self, name: str) -> dict[str, str] | None:
        """The fields a real loader reads from a file name (at least `side` and `tag` when present), or None."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<task family {self.name}>"
