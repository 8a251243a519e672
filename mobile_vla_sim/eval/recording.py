"""`eval --record DIR`: closed-loop episodes saved as data in the real HDF5 layout, so failures become training data.

Each file holds the frames the policy was given (the env's camera frame before each move, colour order as the env
renders it), the actions it sent (as env actions in the real `[linear_x, linear_y, angular_z]` layout), the
privileged states and poses, and as attributes the episode's outcome (`success`, `collision`...), the policy, and,
once the whole set is labelled, its failure label (`failure_label`, `failure_flags`; `mobile_vla_sim.eval.taxonomy`).
The layout, names and frame convention are `generate`'s for the task family, with `capture_delay` 0: frame k is the
view as move k began, the frame the real collector stores with it. Files are written atomically as episodes end, so
an interrupted eval keeps its recordings; names follow the episode's place in the eval set, so any number of workers
writes the same files.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Mapping

import h5py

from mobile_vla_sim.datasets.generate import DemoRecorder, GenerateConfig
from mobile_vla_sim.envs.config import EnvConfig
from mobile_vla_sim.envs.engine import EpisodeSpec
from mobile_vla_sim.eval.records import EpisodeRecord

#: Attributes of a demonstration that say nothing about a policy's rollout.
_DEMO_ONLY = ("expert_seed", "generation_seed", "expert_actions", "noise_std")


@dataclass(frozen=True)
class RecordPlan:
    """Where and how an eval records: the folder, the eval's seed (the clock in the names), the policy's label, and
    each episode's place in the eval set (spec key -> file index)."""

    folder: str
    seed: int
    policy: str
    order: Mapping[str, int]

    def resolved(self) -> RecordPlan:
        """The plan with an absolute folder (Ray tasks may run elsewhere on a shared file system)."""
        return replace(self, folder=str(Path(self.folder).resolve()))


class RolloutWriter(DemoRecorder):
    """A `DemoRecorder` for a policy's rollouts: no action noise, no expert, the policy's label."""

    def __init__(self, plan: RecordPlan, env: EnvConfig):
        super().__init__(GenerateConfig(env=env, out=Path(plan.folder), seed=plan.seed, capture_delay=0.0))
        self.plan = plan

    def start(self, spec: EpisodeSpec, obs: dict, info: dict) -> None:
        super().start(replace(spec, index=self.plan.order[spec.key]), obs, info)

    def attrs(self, spec: EpisodeSpec, info: dict, moment: datetime, moves_stored: int, moves: bool) -> dict[str, Any]:
        attrs = super().attrs(spec, info, moment, moves_stored, moves)
        for key in _DEMO_ONLY:
            attrs.pop(key)
        return {**attrs, "policy": self.plan.policy, "eval_seed": self.plan.seed}


def label_recordings(folder: Path, records: Iterable[EpisodeRecord], order: Mapping[str, int]) -> int:
    """Write each labelled record's failure label into its recording (matched by `episode_index`); returns how many
    files were labelled. Files of episodes not in `records` are left as they are."""
    by_index = {order[r.key]: r for r in records if r.key in order}
    labelled = 0
    for path in sorted(Path(folder).glob("episode_*.h5")):
        with h5py.File(path, "r+") as f:
            record = by_index.get(int(f.attrs.get("episode_index", -1)))
            if record is None or f.attrs.get("policy") is None:
                continue
            f.attrs["failure_label"] = record.failure_label
            f.attrs["failure_flags"] = record.failure_flags
            labelled += 1
    return labelled
