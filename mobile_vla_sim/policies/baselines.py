"""Reference policies that bracket a VLA policy's score: the expert (upper bound), random and the mean
action (lower bounds: the "mean collapse" the real project hit), an always-one-side expert (the
instruction-grounding failure) and a stable-baselines3 model on the privileged state.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

from mobile_vla_sim.envs.actions import action_limits, check_drive, from_action3
from mobile_vla_sim.envs.expert import ExpertPolicy
from mobile_vla_sim.errors import PolicyLoadError
from mobile_vla_sim.policies.base import Policy

Policy.register(ExpertPolicy)  # the expert lives with the env (generate uses it); it has the full interface

#: Mean dataset action [linear_x, linear_y, angular_z] of scripted-expert demonstrations, episode_start frames
#: included as in `dataset.json`: 180 diff-drive episodes, 30 per (difficulty, task), 2,770 frames (std 0.13, 0,
#: 0.61). The turns cancel between left and right, so the mean drives straight into the box.
DEFAULT_MEAN_ACTION3 = (0.424, 0.0, -0.001)


class AlwaysSidePolicy(ExpertPolicy):
    """The expert, but always going around on `side` whatever the instruction: 100% same-side, ~50% success."""

    def __init__(self, side: str, drive: str = "diff", seed: int = 0):
        if side not in ("left", "right"):
            raise ValueError(f"side must be 'left' or 'right', got {side!r}")
        super().__init__(drive=drive, seed=seed, side=side)
        self.name = f"always-{side}"


class RandomPolicy(Policy):
    """Uniform random actions within the action limits.

    Each episode's stream is seeded from (seed, first image), so an episode gets the same actions whichever
    slot or worker runs it and results do not depend on `--workers`.
    """

    name = "random"

    def __init__(self, drive: str = "diff", seed: int = 0):
        self.drive = check_drive(drive)
        self.seed = seed
        self._limits = action_limits(self.drive)
        self._rngs: dict[int, np.random.Generator | None] = {}

    def reset(self, instruction: str, slot: int = 0) -> None:
        self._rngs[slot] = None

    def act_batch(self, obs: dict[str, np.ndarray], slots: Sequence[int]) -> np.ndarray:
        out = np.empty((len(slots), len(self._limits)), dtype=np.float32)
        for i, s in enumerate(slots):
            if self._rngs.get(s) is None:
                first = np.ascontiguousarray(obs["image"][i]).tobytes()
                self._rngs[s] = np.random.default_rng([self.seed, zlib.crc32(first)])
            out[i] = self._rngs[s].uniform(-self._limits, self._limits)
        return out


class ConstantPolicy(Policy):
    """Always the same action: by default the demonstrations' mean action, i.e. a policy collapsed to the mean."""

    name = "constant"

    def __init__(self, action: Sequence[float], drive: str = "diff"):
        self.drive = check_drive(drive)
        self.action = np.asarray(action, dtype=np.float32).reshape(-1)
        if self.action.shape != action_limits(self.drive).shape:
            raise ValueError(f"a {drive!r} action has {action_limits(drive).size} values, got {self.action.size}")

    @classmethod
    def mean_action(cls, drive: str = "diff", offline_data: str | Path | None = None) -> "ConstantPolicy":
        """The mean action of a dataset's manifest (`--offline-data`) or the documented expert default."""
        mean3 = DEFAULT_MEAN_ACTION3
        if offline_data is not None:
            from mobile_vla_sim.datasets.manifest import load_manifest

            stats = (load_manifest(offline_data) or {}).get("action_stats")
            if not stats or "mean" not in stats:
                raise PolicyLoadError(f"{offline_data} has no action statistics in dataset.json; generate it with "
                                      "`mvla-sim generate` or drop --offline-data to use the default mean action")
            mean3 = stats["mean"]
        return cls(from_action3(np.asarray(mean3, dtype=np.float32), drive), drive=drive)

    def act_batch(self, obs: dict[str, np.ndarray], slots: Sequence[int]) -> np.ndarray:
        return np.tile(self.action, (len(slots), 1))


class SB3Policy(Policy):
    """A stable-baselines3 model acting on the privileged state (e.g. `mvla-sim train-rl`'s PPO).

    SB3 zips contain pickled objects: load only zips you made or trust. Anything that is not a zip is refused.
    """

    def __init__(self, path: str | Path, device: str = "cpu"):
        path = Path(path)
        if not path.is_file():
            raise PolicyLoadError(f"stable-baselines3 model {path} not found; train one with `mvla-sim train-rl "
                                  f"--out {path}`")
        if path.suffix != ".zip" or not zipfile.is_zipfile(path):
            raise PolicyLoadError(f"{path} is not a stable-baselines3 .zip; pass sb3:PATH.zip from `mvla-sim train-rl`")
        from stable_baselines3 import PPO

        try:
            self.model = PPO.load(path, device=device)
        except Exception as err:  # sb3 raises many kinds on a foreign or damaged zip
            raise PolicyLoadError(f"cannot load {path} as a PPO model ({type(err).__name__}: {err}); "
                                  "re-train it with `mvla-sim train-rl`") from err
        dims = self.model.action_space.shape[0]
        self.drive = {2: "diff", 3: "omni"}.get(dims, "")
        if not self.drive:
            raise PolicyLoadError(f"{path} has a {dims}-d action space; expected 2 (diff) or 3 (omni)")
        self.name = f"sb3:{path.name}"

    def act_batch(self, obs: dict[str, np.ndarray], slots: Sequence[int]) -> np.ndarray:
        actions, _ = self.model.predict(np.asarray(obs["state"], dtype=np.float32), deterministic=True)
        return np.asarray(actions, dtype=np.float32).reshape(len(slots), -1)
