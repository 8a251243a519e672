"""Per-episode result record: what one closed-loop episode produced, flat enough for a CSV row."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, TypeVar

#: Record fields that are lists (kept in results.json, left out of episodes.csv).
_LIST_FIELDS = ("trajectory", "actions", "obstacles", "goal")

T = TypeVar("T")


def from_json_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Dataclass `cls` from its JSON dict: unknown keys are ignored and `null` becomes NaN in float fields
    (results.json writes NaN as null)."""
    floats = {f.name for f in fields(cls) if f.type == "float"}  # type: ignore[arg-type]
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: (float("nan") if v is None and k in floats else v) for k, v in data.items() if k in names})


@dataclass
class EpisodeRecord:
    """Outcome of one episode. `side_taken` is where the robot passed the first box: left, right or none."""

    index: int
    seed: int
    difficulty: str
    task: str
    instruction: str = ""
    scenario: str = ""
    success: bool = False
    collision: bool = False
    wrong_side: bool = False
    out_of_bounds: bool = False
    timeout: bool = False
    final_distance: float = float("nan")
    path_length: float = 0.0
    shortest_path_length: float = float("nan")
    spl: float = 0.0
    steps: int = 0
    nan_actions: int = 0
    clipped_actions: int = 0
    side_taken: str = "none"
    #: Primary failure label of a failed episode ("" on success) and every label that applies, ";"-joined;
    #: set by `mobile_vla_sim.eval.taxonomy.label_failures` (which needs the paired episode).
    failure_label: str = ""
    failure_flags: str = ""
    video: str = ""
    #: Robot poses (x, y, yaw) from reset to the end, for plots.
    trajectory: list[list[float]] = field(default_factory=list)
    #: The env action the policy sent at each step (before the env's NaN/clip handling; NaN is null in JSON).
    actions: list[list[float]] = field(default_factory=list)
    #: World (cx, cy, hx, hy) of each box and (x, y) of the goal, for plots and the side test.
    obstacles: list[list[float]] = field(default_factory=list)
    goal: list[float] = field(default_factory=list)

    @property
    def outcome(self) -> str:
        """The one word that best describes how the episode ended."""
        for name in ("success", "collision", "wrong_side", "out_of_bounds"):
            if getattr(self, name):
                return name
        return "timeout"

    @property
    def key(self) -> str:
        return f"{self.difficulty}/{self.task}/{self.index:04d}"

    def to_dict(self) -> dict:
        return asdict(self)

    def csv_row(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in _LIST_FIELDS}

    @classmethod
    def from_dict(cls, data: dict) -> "EpisodeRecord":
        return from_json_dict(cls, data)


CSV_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(EpisodeRecord) if f.name not in _LIST_FIELDS)
