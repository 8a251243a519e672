"""A PPO reference policy on the privileged state (stable-baselines3), scored like any other policy.

The camera image is not used, so the env renders the smallest image to stay cheap; the task one-hot in the
state tells the agent which side to take.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np

from mobile_vla_sim.envs.difficulty import DIFFICULTIES
from mobile_vla_sim.eval.episodes import parse_choice
from mobile_vla_sim.io import AtomicFile

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
    out: Path
    timesteps: int = 200_000
    difficulty: str = "easy"
    drive: str = "diff"
    seed: int = 0
    n_envs: int = 4
    n_steps: int = 256  # PPO rollout length per env between updates
    device: str = "cpu"


def make_state_env(difficulty: str, drive: str = "diff") -> gym.Env:
    """The nav env (task sampled per episode) with only the state observation."""
    import mobile_vla_sim  # noqa: F401  (registers the env)

    return StateOnly(gym.make("MobileVLA/Nav-v0", task=None, difficulty=difficulty, drive=drive,
                              image_size=RL_IMAGE_SIZE))


def _progress_callback(total: int, enabled: bool):
    from stable_baselines3.common.callbacks import BaseCallback
    from tqdm.auto import tqdm

    class TqdmCallback(BaseCallback):
        def _on_training_start(self) -> None:
            self.bar = tqdm(total=total, desc="train-rl PPO", unit="step", disable=not enabled)

        def _on_step(self) -> bool:
            self.bar.update(self.training_env.num_envs)
            return True

        def _on_training_end(self) -> None:
            self.bar.close()

    return TqdmCallback()


def train_rl(cfg: RLConfig, progress: bool = True) -> tuple[Path, bool]:
    """Train PPO and save it to `cfg.out` (.zip); on Ctrl-C the model so far is saved. Returns (path, interrupted)."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    (difficulty,) = parse_choice(cfg.difficulty, tuple(DIFFICULTIES), "difficulty")[:1] or ("easy",)
    if cfg.timesteps < 1:
        raise ValueError(f"--timesteps must be at least 1 (got {cfg.timesteps})")
    out = Path(cfg.out)
    if out.suffix != ".zip":
        raise ValueError(f"--out must end in .zip (stable-baselines3 format), got {out}")
    env = make_vec_env(make_state_env, n_envs=cfg.n_envs, seed=cfg.seed,
                       env_kwargs={"difficulty": difficulty, "drive": cfg.drive})
    model = PPO("MlpPolicy", env, n_steps=cfg.n_steps, batch_size=min(256, cfg.n_steps * cfg.n_envs), gae_lambda=0.95, gamma=0.99, ent_coef=0.0,
                seed=cfg.seed, device=cfg.device, verbose=0)
    interrupted = False
    try:
        model.learn(total_timesteps=cfg.timesteps, callback=_progress_callback(cfg.timesteps, progress))
    except KeyboardInterrupt:
        interrupted = True
    finally:
        env.close()
    with AtomicFile(out, keep_suffix=True) as tmp:  # sb3 appends .zip to a name without it
        model.save(tmp)
    return out, interrupted
