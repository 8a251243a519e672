"""`load_policy(spec)`: one entry point from a command-line policy name, path, plugin or server URL to a `Policy`."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from typing import Any, Sequence

from mobile_vla_sim.config import REDACTED, SECRET_KEY
from mobile_vla_sim.errors import ConfigError, PolicyLoadError
from mobile_vla_sim.envs.expert import AlwaysSidePolicy, ExpertPolicy
from mobile_vla_sim.envs.tasks import DEFAULT_FAMILY, TaskFamily, get_family
from mobile_vla_sim.policies.baselines import ConstantPolicy, RandomPolicy, SB3Policy
from mobile_vla_sim.policy import Policy

POLICY_SPECS = ("expert", "random", "constant", "always-TASK (always-left, ...)", "sb3:PATH.zip", "PATH.ckpt",
                "package.module:factory", "ws://HOST:PORT", "http://HOST:PORT")
#: `package.module:factory`: dotted Python identifiers, a colon, one identifier (so never `sb3:ppo.zip`).
PLUGIN_RE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")
#: What a plugin's factory must return: the parts of the `Policy` interface eval calls.
REQUIRED_METHODS = ("reset", "act_batch")


def parse_policy_args(items: Sequence[str]) -> dict[str, Any]:
    """`--policy-arg KEY=VALUE` options -> keyword arguments; a value is JSON when it parses (3, 0.5, true,
    [1, 2], "x"), else the plain string."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise ConfigError(f"--policy-arg must be KEY=VALUE with KEY a Python identifier, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def load_policy(spec: str, drive: str | None = None, device: str = "cpu", offline_data: str | Path | None = None,
                seed: int = 0, policy_args: dict[str, Any] | None = None, dtype: str | None = None,
                task_family: str | None = None) -> Policy:
    """Build the policy named by `spec` for env layout `drive` (None: the policy's own, diff for baselines); raise a
    one-line `PolicyLoadError` otherwise.

    `policy_args` go to a plugin's factory or to a remote client (ws://: `token`, `timeout`, `reply_timeout`;
    http://, the real project's inference server: `api_key`, `timeout`, `image_format`); other policies take none.
    `dtype` overrides a `.ckpt` backbone's trained dtype (ours, or a PyTorch Lightning one: `policies.checkpoint`
    tells them apart). `task_family`: the task family the scripted experts do (None: the default family).
    """
    policy = _load(spec.strip(), drive or "diff", device, offline_data, seed, dict(policy_args or {}), dtype,
                   get_family(task_family or DEFAULT_FAMILY))
    if drive is not None:
        try:
            check_drive(policy, drive, spec)
        except PolicyLoadError:
            policy.close()
            raise
    return policy


def _load(name: str, drive: str, device: str, offline_data: str | Path | None, seed: int,
          policy_args: dict[str, Any], dtype: str | None, family: TaskFamily) -> Policy:
    if dtype is not None and not name.endswith(".ckpt"):
        raise PolicyLoadError(f"--dtype applies only to a .ckpt policy, not to {name!r}; drop it")
    if name.startswith(("ws://", "wss://")):
        from mobile_vla_sim.policies.remote.ws import RemotePolicy

        return RemotePolicy(name, drive=drive, **_client_args(name, policy_args))
    if name.startswith(("http://", "https://")):
        from mobile_vla_sim.policies.remote.http import HTTPPolicy

        return HTTPPolicy.from_args(name, policy_args)
    if PLUGIN_RE.match(name) and not name.startswith("sb3:"):
        return load_plugin(name, drive=drive, device=device, policy_args=policy_args)
    if policy_args:
        raise PolicyLoadError(f"--policy-arg only applies to package.module:factory plugins and ws:// or http:// "
                              f"servers, not to {name!r}; drop it")
    if name == "expert":
        return ExpertPolicy(drive=drive, seed=seed, family=family)
    if name == "random":
        return RandomPolicy(drive=drive, seed=seed)
    if name == "constant":
        return ConstantPolicy.mean_action(drive=drive, offline_data=offline_data)
    if name.startswith("always-") and name[len("always-"):] in family.tasks:
        return AlwaysSidePolicy(name[len("always-"):], drive=drive, seed=seed, family=family)
    if name.startswith("sb3:"):
        return SB3Policy(name[4:], device=device)
    if name.endswith(".ckpt"):
        from mobile_vla_sim.policies.checkpoint import load_policy_checkpoint

        return load_policy_checkpoint(name, device, dtype=dtype)
    raise PolicyLoadError(f"unknown policy {name!r}: use one of {', '.join(POLICY_SPECS)}")


def load_plugin(spec: str, drive: str = "diff", device: str = "cpu",
                policy_args: dict[str, Any] | None = None) -> Policy:
    """Import `package.module`, call `factory(drive=..., device=..., **policy_args)` and check what it returns."""
    module_name, _, factory_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # ImportError, or the user's module failing while it imports
        raise PolicyLoadError(f"cannot import {module_name!r} for --policy {spec} ({type(err).__name__}: {err}); "
                              "put its folder on PYTHONPATH or pip install it") from err
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise PolicyLoadError(f"{module_name} has no callable {factory_name!r}; --policy {spec} must name a "
                              "function returning a Policy")
    try:
        policy = factory(drive=drive, device=device, **(policy_args or {}))
    except Exception as err:
        shown = {k: REDACTED if SECRET_KEY.search(k) else v for k, v in (policy_args or {}).items()}
        raise PolicyLoadError(f"{spec}(drive={drive!r}, device={device!r}, **{shown}) raised "
                              f"{type(err).__name__}: {err}; fix the factory or its --policy-arg values") from err
    missing = [m for m in REQUIRED_METHODS if not callable(getattr(policy, m, None))]
    if missing or not isinstance(getattr(policy, "drive", None), str):
        lacks = ", ".join(missing + ([] if isinstance(getattr(policy, "drive", None), str) else ["drive"]))
        raise PolicyLoadError(f"{spec} returned a {type(policy).__name__} without {lacks}; return a "
                              "mobile_vla_sim.policy.Policy subclass (reset, act_batch, drive)")
    return policy if isinstance(policy, Policy) else _DuckPolicy(policy, spec)


class _DuckPolicy(Policy):
    """A plugin object with the interface but not the base class: its metadata where it has them, the base class's
    defaults otherwise, and `act`, `stats` and `close`."""

    def __init__(self, inner: Any, spec: str):
        self.inner, self.drive = inner, inner.drive
        self.name = getattr(inner, "name", spec)
        for key in ("inputs", "image_size", "chunk_size", "window", "max_slots", "takes_normalised_pixels",
                    "trained_env"):
            setattr(self, key, getattr(inner, key, getattr(Policy, key)))

    def reset(self, instruction: str, slot: int = 0) -> None:
        self.inner.reset(instruction, slot)

    def act_batch(self, obs, slots):
        return self.inner.act_batch(obs, slots)

    def close(self) -> None:
        if callable(getattr(self.inner, "close", None)):
            self.inner.close()


def _client_args(url: str, policy_args: dict[str, Any]) -> dict[str, Any]:
    """The remote client takes `token`, `timeout` (connecting) and `reply_timeout` only; anything else is a typo
    worth reporting."""
    unknown = set(policy_args) - {"token", "timeout", "reply_timeout"}
    if unknown:
        raise PolicyLoadError(f"{url} takes --policy-arg token=..., timeout=SECONDS and reply_timeout=SECONDS only, "
                              f"not {', '.join(sorted(unknown))}")
    return policy_args


def check_drive(policy: Policy, drive: str, spec: str) -> None:
    """A policy emitting another action layout would be fed to the wrong action space: refuse it."""
    if policy.drive != drive:
        raise PolicyLoadError(f"{spec} emits {policy.drive!r} actions but the env uses drive {drive!r}; leave "
                              f"--drive unset or pass --drive {policy.drive}")
