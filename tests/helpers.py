"""Small helpers shared by several test modules."""

from __future__ import annotations

from mobile_vla_sim.envs.expert import run_expert_episode  # noqa: F401  (re-exported for the tests)


