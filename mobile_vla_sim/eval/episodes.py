"""The fixed episode set: every policy is scored on exactly the same seeded scenes.

A scene seed depends only on (base seed, difficulty, index), never on the task, so the episodes of one index share
their scene's draw ("paired scenes": in the detour family left and right see the very same scene) and two result
files pair episode by episode.
"""

from __future__ import annotations

import zlib
from typing import Iterable

import numpy as np

from mobile_vla_sim.config import parse_choices
from mobile_vla_sim.envs.engine import EpisodeSpec
from mobile_vla_sim.envs.tasks import DEFAULT_FAMILY, TaskFamily, get_family
from mobile_vla_sim.errors import ConfigError, EvalError


def scene_seed(base_seed: int, difficulty: str, index: int) -> int:
    """Scene seed for (base seed, difficulty, index); stable across processes and Python versions."""
    difficulty_id = zlib.crc32(difficulty.encode())
    return int(np.random.SeedSequence([int(base_seed), difficulty_id, int(index)]).generate_state(1)[0])


def episode_set(seed: int, difficulties: str | Iterable[str] = "all", tasks: str | Iterable[str] = "both", n: int = 10,
                family: str | TaskFamily = DEFAULT_FAMILY) -> list[EpisodeSpec]:
    """`n` episodes per (difficulty, task) of the task family, ordered difficulty → index → task so the tasks of one
    scene run side by side; a level that is a condition with one task runs only that task."""
    if n < 1:
        raise EvalError(f"--episodes must be at least 1 (got {n})")
    fam = get_family(family) if isinstance(family, str) else family
    try:
        diffs = fam.parse_difficulties(difficulties)
    except ConfigError as err:
        raise EvalError(str(err)) from None
    task_names = parse_choices(tasks, fam.tasks, "task", EvalError)
    return [EpisodeSpec(index=i, seed=scene_seed(seed, d, i), difficulty=d, task=t)
            for d in diffs for i in range(n) for t in task_names if t in fam.tasks_for(d)]


def interleaved(specs: list[EpisodeSpec]) -> list[EpisodeSpec]:
    """`specs` index by index (each index's difficulties and tasks in the set's order), so every prefix covers every
    difficulty and side alike: the run order of evaluations that may stop early (`eval --target-halfwidth`,
    `mvla-sim ab`), where a difficulty-major order would judge a policy on its easy episodes alone."""
    return sorted(specs, key=lambda s: s.index)  # stable: keeps difficulty -> task within an index
