"""Task families, one module each: `detour` (go around the box on the instructed side to the bottle) and `reach`
(the real project's 2026 task: reach the target at left / centre / right). `get_family` turns `--task-family` into
one: a built-in name or `package.module:ClassName` for a lab's own (`template.py` is a minimal one)."""

from __future__ import annotations

import functools
import importlib
import re

from mobile_vla_sim.envs.tasks.base import TaskFamily
from mobile_vla_sim.envs.tasks.detour import Detour
from mobile_vla_sim.envs.tasks.reach import Reach
from mobile_vla_sim.errors import ConfigError

#: The built-in families by name.
FAMILIES: dict[str, type[TaskFamily]] = {cls.name: cls for cls in (Detour, Reach)}
#: The family of every command unless `--task-family` says otherwise (the task of the project's earlier releases).
DEFAULT_FAMILY = Detour.name
_PLUGIN_RE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")


@functools.lru_cache(maxsize=None)
def get_family(spec: str | None = DEFAULT_FAMILY) -> TaskFamily:
    """The family named by `spec`: a built-in name, or `package.module:ClassName` (a `TaskFamily` subclass); None:
    the default family."""
    spec = spec or DEFAULT_FAMILY
    if spec in FAMILIES:
        return FAMILIES[spec]()
    if not _PLUGIN_RE.match(spec):
        raise ConfigError(f"unknown task family {spec!r}: use one of {', '.join(FAMILIES)} or package.module:ClassName")
    module_name, _, class_name = spec.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"cannot load task family {spec} ({type(err).__name__}: {err}); put its module on "
                          "PYTHONPATH or pip install it") from None
    if not (isinstance(cls, type) and issubclass(cls, TaskFamily)):
        raise ConfigError(f"{spec} is not a TaskFamily subclass (mobile_vla_sim.envs.tasks.base.TaskFamily)")
    return cls()


__all__ = ["DEFAULT_FAMILY", "FAMILIES", "TaskFamily", "get_family"]
