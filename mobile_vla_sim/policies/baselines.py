"""Reference policies that bracket a VLA policy's score: random and the mean action (lower bounds: the "mean
collapse" the real project hit) and a stable-baselines3 model on the privileged state. The expert (upper bound)
and the always-one-side expert (the instruction-grounding failure) are `mobile_vla_sim.envs.expert`'s.
"""

from __future__ import annotations

import io
import json
import zipfile
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

from mobile_vla_sim.envs.actions import LAYOUT_DIMS, action_limits, check_drive, from_action3
from mobile_vla_sim.envs.state import STATE_BOUND, STATE_DIM
from mobile_vla_sim.errors import PolicyLoadError, require_file
from mobile_vla_sim.policy import Policy
from mobile_vla_sim.moved import moved_name

#: Mean dataset action [linear_x, linear_y, angular_z] of scripted-expert demonstrations, episode_start frames
#: included as in `dataset.json`: 180 diff-drive episodes, 30 per (difficulty, task), 2,770 frames (std 0.13, 0,
#: 0.61). The turns cancel between left and right, so the mean drives straight into the box.
DEFAULT_MEAN_ACTION3 = (0.424, 0.0, -0.001)


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
    """A stable-baselines3 PPO `MlpPolicy` acting on the privileged state (e.g. `mvla-sim train-rl`'s model).

    The zip is read without unpickling anything from it (sb3's own `PPO.load` runs cloudpickle on the `data`
    entry, so a crafted zip could run code): tensors come from `policy.pth` through `torch.load(weights_only=True)`,
    the network is rebuilt as sb3's `ActorCriticPolicy` for this env's spaces (observation: the privileged state;
    action: the drive layout read from the weights) with the layer sizes read from the tensor shapes, and only
    plain JSON values of `data` are consulted. A model that needs anything else (custom activation, feature
    extractor, gSDE, another observation) is refused with a one-line `PolicyLoadError`.
    """

    def __init__(self, path: str | Path, device: str = "cpu"):
        path = Path(path)
        fix = f"train one with `mvla-sim train-rl --out {path}`"
        require_file(path, "stable-baselines3 model", fix, PolicyLoadError)
        if path.suffix != ".zip" or not zipfile.is_zipfile(path):
            raise PolicyLoadError(f"{path} is not a stable-baselines3 .zip; pass sb3:PATH.zip from `mvla-sim train-rl`")
        weights, data = _read_sb3_zip(path)
        try:
            self.policy, self.drive = _build_actor_critic(weights, data, device)
        except ValueError as err:
            raise PolicyLoadError(f"cannot load {path}: {err}; {fix}") from err
        self.name = f"sb3:{path.name}"

    def act_batch(self, obs: dict[str, np.ndarray], slots: Sequence[int]) -> np.ndarray:
        actions, _ = self.policy.predict(np.asarray(obs["state"], dtype=np.float32), deterministic=True)
        return np.asarray(actions, dtype=np.float32).reshape(len(slots), -1)


#: Plain-JSON `policy_kwargs` that do not change a trained MlpPolicy's deterministic actions (the layer sizes come
#: from the weights themselves); any other key could (activation, extractor, gSDE...) and is refused.
_SB3_INERT_KWARGS = frozenset({"net_arch", "log_std_init", "ortho_init", "optimizer_kwargs", "normalize_images",
                               "share_features_extractor"})
_MLP = "mlp_extractor.{}_net.{}.weight"
#: Largest uncompressed entries read from an sb3 zip, checked on the sizes the zip declares before inflating
#: anything (a zip bomb inflated to 2.4 GB before it was refused): the MlpPolicy weights of `train-rl` are ~40 KB.
_SB3_ENTRY_BYTES = {"policy.pth": 256 * 2**20, "data": 16 * 2**20}
#: Inflation ratio refused for entries over 1 MiB: float weights and JSON compress a few times, a bomb ~1000x.
_SB3_MAX_RATIO = 100


def _read_sb3_zip(path: Path) -> tuple[dict[str, "torch.Tensor"], dict]:
    """(`policy.pth` tensors, `data` JSON) of an sb3 zip, with nothing unpickled beyond plain tensors."""
    import pickle

    import torch

    fix = "re-train it with `mvla-sim train-rl`"
    try:
        with zipfile.ZipFile(path) as archive:
            entries = {}
            for name, limit in _SB3_ENTRY_BYTES.items():
                if name not in archive.namelist():
                    continue
                info = archive.getinfo(name)
                ratio = info.file_size / max(info.compress_size, 1)
                if info.file_size > limit or info.file_size > 2**20 and ratio > _SB3_MAX_RATIO:
                    raise PolicyLoadError(f"{path}: refused unread, its {name} entry inflates to "
                                          f"{info.file_size:,} bytes ({ratio:.0f}x its compressed size); an sb3 "
                                          f"MlpPolicy's is under {limit:,}; {fix}")
                with archive.open(name) as entry:  # zipfile stops at the declared size: the check above holds
                    entries[name] = entry.read(limit + 1)
    except (zipfile.BadZipFile, OSError) as err:
        raise PolicyLoadError(f"{path} is a damaged zip ({err}); {fix}") from err
    if len(entries) < 2:
        raise PolicyLoadError(f"{path} is not a stable-baselines3 model (no policy.pth and data entries); {fix}")
    try:
        weights = torch.load(io.BytesIO(entries["policy.pth"]), map_location="cpu", weights_only=True)
        data = json.loads(entries["data"])
    except (pickle.UnpicklingError, RuntimeError, ValueError, EOFError) as err:
        raise PolicyLoadError(f"{path}: refused, its policy.pth or data entry is not plain tensors/JSON "
                              f"({type(err).__name__}: {str(err).splitlines()[0][:80]}); {fix}") from err
    if not isinstance(data, dict) or not isinstance(weights, dict) or \
            not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise PolicyLoadError(f"{path}: policy.pth must hold a dict of tensors and data a JSON object; {fix}")
    return weights, data


def _build_actor_critic(weights: dict, data: dict, device: str):
    """sb3 `ActorCriticPolicy` for the privileged-state env, sized from `weights`; ValueError if it does not fit."""
    import gymnasium as gym
    from stable_baselines3.common.policies import ActorCriticPolicy

    kwargs = data.get("policy_kwargs", {})
    if not isinstance(kwargs, dict) or ":serialized:" in kwargs:
        raise ValueError("its policy_kwargs are pickled (custom activation or feature extractor), which is never "
                         "unpickled; only the default MlpPolicy with a plain net_arch is supported")
    unknown = sorted(set(kwargs) - _SB3_INERT_KWARGS)
    if unknown or data.get("use_sde", False) is not False:
        raise ValueError(f"unsupported policy settings {unknown or ['use_sde']}; only the default MlpPolicy "
                         "with a plain net_arch is supported")
    if any(getattr(weights.get(name), "ndim", 0) != 2 for name in ("action_net.weight", _MLP.format("policy", 0))):
        raise ValueError("its weights are not an MlpPolicy actor-critic (no action_net / mlp_extractor matrices)")
    n_in = weights[_MLP.format("policy", 0)].shape[1]
    if n_in != STATE_DIM:
        raise ValueError(f"it takes {n_in}-d observations, the privileged state has {STATE_DIM}")
    n_act = weights["action_net.weight"].shape[0]
    drive = next((d for d, dims in LAYOUT_DIMS.items() if len(dims) == n_act), None)
    if drive is None:
        raise ValueError(f"it has a {n_act}-d action space; expected 2 (diff) or 3 (omni)")
    limits = action_limits(drive)
    net_arch = {"pi": _layer_sizes(weights, "policy"), "vf": _layer_sizes(weights, "value")}
    policy = ActorCriticPolicy(gym.spaces.Box(-STATE_BOUND, STATE_BOUND, (STATE_DIM,), np.float32),
                               gym.spaces.Box(-limits, limits, dtype=np.float32), lambda _: 0.0, net_arch=net_arch)
    try:
        policy.load_state_dict(weights)
    except RuntimeError as err:
        raise ValueError(f"its weights do not fit an MlpPolicy ({' '.join(str(err).split())[:160]})") from err
    policy.set_training_mode(False)
    return policy.to(device), drive


def _layer_sizes(weights: dict, net: str) -> list[int]:
    """Hidden sizes of the `policy`/`value` MLP: its Linear layers sit at indices 0, 2, 4... (activations between)."""
    sizes: list[int] = []
    while (w := weights.get(_MLP.format(net, 2 * len(sizes)))) is not None:
        sizes.append(int(w.shape[0]))
    return sizes


def __getattr__(name: str):
    """Names that moved or are gone since the reorganisation (`mobile_vla_sim.moved`)."""
    return moved_name(__name__, name)
