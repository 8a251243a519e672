"""A PPO reference policy on the privileged state (stable-baselines3), scored like any other policy.

The camera image is not used, so the env renders the smallest image to stay cheap; the task one-hot in the
state tells the agent which side to take.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np

from mobile_vla_sim.config import check_knobs, knob
from mobile_vla_sim.envs.actions import LAYOUT_DIMS
from mobile_vla_sim.envs.config import EnvConfig, make_env
from mobile_vla_sim.envs.difficulty import DIFFICULTIES
from mobile_vla_sim.errors import ConfigError, OutputError
from mobile_vla_sim.paths import check_output_file
from mobile_vla_sim.policies.config import check_device
from mobile_vla_sim.io import AtomicFile
from mobile_vla_sim.progress import bar as progress_bar

#: Image side the RL env renders (unused by the agent): the cheapest the env accepts.
RL_IMAGE_SIZE = 16


class StateOnly(gym.ObservationWrapper):
    """Exposes only the privileged `state` vector: what sb3's MlpPolicy expects."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.observation_space = env.observation_space["state"]

    def observation(self, observation: dict) -> np.ndarray:
        return observation["state"]


@dataclass
class RLConfig:
    """Options of `train_rl` (the `train-rl` command)."""

    out: Path = knob(Path("ppo.zip"), "where to save the model (.zip, stable-baselines3 format)")
    timesteps: int = knob(200_000, "env steps to train for, summed over all envs", min=1)
    difficulty: str = knob("easy", "difficulty of the training episodes", choices=tuple(DIFFICULTIES))
    drive: str = knob("diff", "action layout of the env", choices=tuple(LAYOUT_DIMS))
    seed: int = knob(0, "seed of PPO and of the envs", min=0)
    n_envs: int = knob(4, "envs PPO collects from", min=1)
    n_steps: int = knob(256, "PPO rollout length per env between updates", min=1)
    device: str = knob("cpu", "torch device of the PPO networks")

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        check_knobs(self)
        if self.out.suffix != ".zip":
            raise ConfigError(f"--out must end in .zip (stable-baselines3 format), got {self.out}")
        check_output_file(self.out, "--out")
        check_device(self.device)


def make_state_env(difficulty: str, drive: str = "diff") -> gym.Env:
    """The nav env (task sampled per episode) with only the state observation."""
    return StateOnly(make_env(EnvConfig(task=None, difficulty=difficulty, drive=drive, image_size=RL_IMAGE_SIZE)))


def _progress_callback(bar):
    """sb3 callback that advances `bar` by one step per env."""
    from stable_baselines3.common.callbacks import BaseCallback

    class TqdmCallback(BaseCallback):
        def _on_step(self) -> bool:
            bar.update(self.training_env.num_envs)
            return True

    return TqdmCallback()


def train_rl(cfg: RLConfig, progress: bool = True) -> tuple[Path, bool]:
    """Train PPO and save it to `cfg.out`; on Ctrl-C the model so far is saved. Returns (path, interrupted)."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    if cfg.out.exists():  # a trained model is finished work; PPO cannot resume bit for bit, so never overwrite it
        raise OutputError(f"--out {cfg.out} already holds a model; choose another --out, or delete it to train a "
                          "new one")
    env = make_vec_env(make_state_env, n_envs=cfg.n_envs, seed=cfg.seed,
                       env_kwargs={"difficulty": cfg.difficulty, "drive": cfg.drive})
    model = PPO("MlpPolicy", env, n_steps=cfg.n_steps, batch_size=min(256, cfg.n_steps * cfg.n_envs),
                gae_lambda=0.95, gamma=0.99, ent_coef=0.0, seed=cfg.seed, device=cfg.device, verbose=0)
    interrupted = False
    try:
        with progress_bar(total=cfg.timesteps, desc="train-rl PPO", unit="step", enabled=progress) as bar:
            model.learn(total_timesteps=cfg.timesteps, callback=_progress_callback(bar))
    except KeyboardInterrupt:
        interrupted = True
    finally:
        env.close()
    with AtomicFile(cfg.out, keep_suffix=True) as tmp:  # sb3 appends .zip to a name without it
        model.save(tmp)
    return cfg.out, interrupted
