"""The fixed episode set: every policy is scored on exactly the same seeded scenes.

A scene seed depends only on (base seed, difficulty, index), never on the task, so the left and right
episodes with the same index share a scene ("paired scenes") and two result files pair episode by episode.
"""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import numpy as np

from mobile_vla_sim.envs.difficulty import DIFFICULTIES
from mobile_vla_sim.envs.instructions import TASKS
from mobile_vla_sim.errors import EvalError


@dataclass(frozen=True)
class EpisodeSpec:
    """One evaluation episode: the env is reset with `seed` and options {task, difficulty}."""

    index: int
    seed: int
    difficulty: str
    task: str

    @property
    def key(self) -> str:
        """Identifier shared by every policy's result for this episode."""
        return f"{self.difficulty}/{self.task}/{self.index:04d}"

    def to_dict(self) -> dict:
        return asdict(self)


def scene_seed(base_seed: int, difficulty: str, index: int) -> int:
    """Scene seed for (base seed, difficulty, index); stable across processes and Python versions."""
    difficulty_id = zlib.crc32(difficulty.encode())
    return int(np.random.SeedSequence([int(base_seed), difficulty_id, int(index)]).generate_state(1)[0])


def parse_choice(value: str | Iterable[str], valid: Sequence[str], what: str) -> tuple[str, ...]:
    """Expand "all"/"both" or a comma list into a tuple of valid names, or raise a one-line error."""
    items = [value] if isinstance(value, str) else list(value)
    names: list[str] = []
    for item in items:
        for name in str(item).split(","):
            name = name.strip().lower()
            if name in ("all", "both"):
                names.extend(valid)
            elif name in valid:
                names.append(name)
            else:
                raise EvalError(f"unknown {what} {name!r}: choose one of {', '.join(valid)} or 'all'")
    return tuple(dict.fromkeys(names))


def episode_set(seed: int, difficulties: str | Iterable[str] = "all", tasks: str | Iterable[str] = "both",
                n: int = 10) -> list[EpisodeSpec]:
    """`n` episodes per (difficulty, task), ordered difficulty → index → task so pairs run side by side."""
    if n < 1:
        raise EvalError(f"--episodes must be at least 1 (got {n})")
    diffs = parse_choice(difficulties, tuple(DIFFICULTIES), "difficulty")
    task_names = parse_choice(tasks, TASKS, "task")
    return [EpisodeSpec(index=i, seed=scene_seed(seed, d, i), difficulty=d, task=t)
            for d in diffs for i in range(n) for t in task_names]
