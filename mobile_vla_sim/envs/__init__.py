"""Simulation: task families (scenes, instructions, success, naming: `envs.tasks`), the PyBullet world, the
Gymnasium env, the scripted experts and the episode engine.

Importing this package registers `MobileVLA/Nav-v0` (one id; task, difficulty, drive... are fields of `EnvConfig`,
passed to `make_env(cfg)` or as keyword arguments of `gymnasium.make`). PyBullet is only imported when the env or the
expert is first used.
In a fresh (spawned) worker process, `gymnasium.make("mobile_vla_sim.envs:MobileVLA/Nav-v0", ...)` imports this
package, and so registers the id, before making the env.
"""

from __future__ import annotations

import gymnasium

from mobile_vla_sim.envs.config import ENV_ID, EnvConfig, make_env
from mobile_vla_sim.envs.difficulty import DIFFICULTIES, difficulty_table_markdown
from mobile_vla_sim.envs.tasks import FAMILIES, TaskFamily, get_family

if ENV_ID not in gymnasium.registry:
    gymnasium.register(id=ENV_ID, entry_point="mobile_vla_sim.envs.nav_env:NavEnv")

__all__ = ["ENV_ID", "EnvConfig", "make_env", "NavEnv", "ScriptedExpert", "DIFFICULTIES", "FAMILIES", "TaskFamily",
           "get_family", "difficulty_table_markdown"]


def __getattr__(name: str):
    """Lazy exports: keep `import mobile_vla_sim` free of PyBullet until an env is made."""
    if name == "NavEnv":
        from mobile_vla_sim.envs.nav_env import NavEnv
        return NavEnv
    if name == "ScriptedExpert":
        from mobile_vla_sim.envs.expert import ScriptedExpert
        return ScriptedExpert
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
