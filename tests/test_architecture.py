"""The layers of docs/architecture.md hold: imports flow one way, base -> envs -> datasets -> policies -> serving ->
eval -> probe / analysis -> study -> the command line, with no exception and no cycle.

Every `import` statement of the package counts, also the lazy ones inside functions: a lazy upward import is still
an upward dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import mobile_vla_sim

PACKAGE = Path(mobile_vla_sim.__file__).parent
#: Layer of each subpackage; a module may import its own layer and lower ones. Top-level modules (config, errors,
#: paths, io, policy, progress, plotting, version, backends) are the base; the package's front door (its
#: `__init__`, which registers the env), the command line and the quickstart sit on top of everything.
LAYERS = {"base": 0, "envs": 1, "datasets": 2, "policies": 3, "serving": 4, "eval": 5, "probe": 6, "analysis": 6,
          "calibrate": 6, "study": 7, "top": 8}
TOP = {"cli", "quickstart"}


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in TOP:
        return LAYERS["top"]
    return LAYERS.get(parts[1], LAYERS["base"])


def _imports() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        module = _module(path)
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                deps.add(node.module)
                deps.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
        graph[module] = {d for d in deps if d.startswith("mobile_vla_sim")}
    modules = set(graph)
    return {m: {d for d in deps if d in modules and d != m} for m, deps in graph.items()}


def test_every_subpackage_has_a_layer():
    subpackages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()} - {"assets"}
    assert subpackages <= set(LAYERS)


def test_no_upward_import():
    upward = [(m, d) for m, deps in _imports().items() for d in deps if _layer(d) > _layer(m)]
    assert upward == []


def test_no_import_cycle_between_modules():
    graph = {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in _imports().items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for d in graph.get(m, ()):
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d] if d in stack else [m, d])
            elif d not in state:
                visit(d, stack + [d])
        state[m] = 2
    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert cycles == []


def test_old_import_paths_keep_working_or_name_the_new_place():
    import importlib
    import warnings

    import pytest

    from mobile_vla_sim.moved import MODULES, NAMES

    with pytest.warns(DeprecationWarning):
        for old, new in MODULES.items():
            assert importlib.import_module(old) is importlib.import_module(new)
    for (module, name), where in NAMES.items():
        if " " in where:
            with pytest.raises(ImportError, match="is gone: "):
                getattr(importlib.import_module(module), name)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                assert getattr(importlib.import_module(module), name) is getattr(importlib.import_module(where), name)


def test_no_library_module_touches_the_matplotlib_backend():
    """pyplot selects a process-wide backend (and `matplotlib.use` switches it): reports draw on bare figures
    (`mobile_vla_sim.plotting`), so a notebook user's backend stays theirs."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [f"{node.module}.{a.name}" for a in node.names] if isinstance(node, ast.ImportFrom) else [])
            called = (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                      and node.func.attr == "use" and getattr(node.func.value, "id", "") == "matplotlib")
            if called or any(n.startswith("matplotlib.pyplot") for n in names):
                offenders.append(_module(path))
    assert not offenders, f"modules that select a matplotlib backend: {', '.join(sorted(set(offenders)))}"
