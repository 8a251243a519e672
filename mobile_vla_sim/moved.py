"""Import paths from before the package was reorganised (December 2026), kept working or failing in one line.

A moved module is imported under its old name as the module itself (`mobile_vla_sim.eval.probe` is
`mobile_vla_sim.probe`); a moved name is looked up at its new place; a name that is gone raises an ImportError naming
what replaces it. Both warn once with the new place, so code can be updated at leisure.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from typing import Any

#: Old module path -> new module path.
MODULES = {
    "mobile_vla_sim.policies.base": "mobile_vla_sim.policy",
    "mobile_vla_sim.eval.probe": "mobile_vla_sim.probe",
    "mobile_vla_sim.eval.probe_report": "mobile_vla_sim.probe.report",
    "mobile_vla_sim.eval.compare": "mobile_vla_sim.analysis.compare",
    "mobile_vla_sim.eval.similarity": "mobile_vla_sim.analysis.similarity",
    "mobile_vla_sim.eval.probing": "mobile_vla_sim.analysis.features",
    "mobile_vla_sim.eval.agree": "mobile_vla_sim.analysis.agree",
    "mobile_vla_sim.serving.client": "mobile_vla_sim.policies.remote.ws",
    "mobile_vla_sim.serving.protocol": "mobile_vla_sim.policies.remote.wire",
    "mobile_vla_sim.envs.instructions": "mobile_vla_sim.envs.tasks.detour",  # its sets are the detour family's
}
#: (old module, name) -> the module that has it now, or a sentence saying what replaces a name that is gone.
NAMES = {
    ("mobile_vla_sim.policies.baselines", "ExpertPolicy"): "mobile_vla_sim.envs.expert",
    ("mobile_vla_sim.policies.baselines", "AlwaysSidePolicy"): "mobile_vla_sim.envs.expert",
    ("mobile_vla_sim.envs.engine", "next_actions"): "mobile_vla_sim.policy",
    ("mobile_vla_sim.envs.engine", "BatchPolicy"): "is gone: implement mobile_vla_sim.policy.Policy",
    ("mobile_vla_sim.eval.run", "derive"): "is gone: use dataclasses.replace (the deployment stack is the "
                                           "declared field `deploy`)",
    ("mobile_vla_sim.eval.run", "recorded_config"): "is gone: results record mobile_vla_sim.config.to_dict(cfg)",
    ("mobile_vla_sim.eval.rollout", "run_episodes"): "is gone: use mobile_vla_sim.eval.rollout.eval_policy(policy, "
                                                     "specs, env, pool=PoolConfig(...)) (its `.results`)",
    ("mobile_vla_sim.policies.deploy", "load_deploy"): "is gone: use DeployConfig.from_yaml(path)",
    ("mobile_vla_sim.envs.scenario", "sample_scenario"): "is gone: use get_family(name).sample_scenario(rng, level, "
                                                         "task) (mobile_vla_sim.envs.tasks)",
    ("mobile_vla_sim.envs.difficulty", "get_difficulty"): "is gone: use get_family(name).difficulty(level)",
    ("mobile_vla_sim.envs.difficulty", "DISTANCE_M"): "mobile_vla_sim.envs.tasks.detour",
    ("mobile_vla_sim.datasets.hdf5_format", "episode_file_name"): "is gone: use get_family(name).file_name(...)",
    ("mobile_vla_sim.eval.metrics", "wilson_interval"): "mobile_vla_sim.eval.stats",
    ("mobile_vla_sim.eval.metrics", "paired_difference_interval"): "mobile_vla_sim.eval.stats",
    ("mobile_vla_sim.analysis.similarity", "mcnemar_exact"): "mobile_vla_sim.eval.stats",
    ("mobile_vla_sim.analysis.similarity", "McNemarResult"): "mobile_vla_sim.eval.stats",
}


def moved_name(module: str, name: str) -> Any:
    """A module's `__getattr__` for names that moved: the object from its new place, or a one-line ImportError."""
    where = NAMES.get((module, name))
    if where is None:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    if " " in where:
        raise ImportError(f"{module}.{name} {where}")
    warnings.warn(f"{module}.{name} moved to {where}.{name}; import it from there", DeprecationWarning, stacklevel=3)
    return getattr(importlib.import_module(where), name)


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old module path and hands out the module at its new path."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname not in MODULES:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: Any) -> Any:
        new = MODULES[spec.name]
        warnings.warn(f"{spec.name} moved to {new}; import it from there", DeprecationWarning, stacklevel=2)
        return importlib.import_module(new)

    def exec_module(self, module: Any) -> None:
        """The module is the new one, already executed."""


def install() -> None:
    """Make the old module paths importable (once per process)."""
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.append(_Alias())
