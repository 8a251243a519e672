"""`load_policy(spec)`: one entry point from a command-line policy name or path to a `Policy`."""

from __future__ import annotations

from pathlib import Path

from mobile_vla_sim.policies.base import Policy
from mobile_vla_sim.errors import PolicyLoadError
from mobile_vla_sim.policies.baselines import AlwaysSidePolicy, ConstantPolicy, ExpertPolicy, RandomPolicy, SB3Policy

POLICY_SPECS = ("expert", "random", "constant", "always-left", "always-right", "sb3:PATH.zip", "PATH.ckpt")


def load_policy(spec: str, drive: str = "diff", device: str = "cpu", offline_data: str | Path | None = None,
                seed: int = 0) -> Policy:
    """Build the policy named by `spec` for env layout `drive`; raise a one-line `PolicyLoadError` otherwise."""
    name = spec.strip()
    if name == "expert":
        return ExpertPolicy(drive=drive, seed=seed)
    if name == "random":
        return RandomPolicy(drive=drive, seed=seed)
    if name == "constant":
        return ConstantPolicy.mean_action(drive=drive, offline_data=offline_data)
    if name in ("always-left", "always-right"):
        return AlwaysSidePolicy(name.split("-")[1], drive=drive, seed=seed)
    if name.startswith("sb3:"):
        return _check_drive(SB3Policy(name[4:], device=device), drive, name)
    if name.endswith(".ckpt"):
        from mobile_vla_sim.policies.checkpoint import load_policy_checkpoint

        return _check_drive(load_policy_checkpoint(name, device), drive, name)
    raise PolicyLoadError(f"unknown policy {spec!r}: use one of {', '.join(POLICY_SPECS)}")


def _check_drive(policy: Policy, drive: str, spec: str) -> Policy:
    """A policy emitting another action layout would be fed to the wrong action space: refuse it."""
    if policy.drive != drive:
        raise PolicyLoadError(f"{spec} emits {policy.drive!r} actions but the env uses drive {drive!r}; "
                              f"re-run with --drive {policy.drive}")
    return policy
