"""Small helpers shared by several test modules."""

from __future__ import annotations


def run_expert_episode(env, expert, seed: int, task: str | None = None, expert_task: str | None = None) -> dict:
    """Roll `expert` through one episode of `env` (reset with `seed`, `task`); returns the final info.

    `expert_task` makes the expert go the other way than the env's task (to test wrong-side detection).
    """
    obs, info = env.reset(seed=seed, options={"task": task} if task else None)
    expert.reset(expert_task)
    done = False
    while not done:
        obs, _, terminated, truncated, info = env.step(expert.act(obs))
        done = terminated or truncated
    return info
