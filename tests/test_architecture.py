"""The layer diagram of ARCHITECTURE.md holds: imports flow envs -> datasets -> policies -> eval, with no cycles.

Every `import` statement of the package counts, also the lazy ones inside functions: a lazy upward import is still
an upward dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import mobile_vla_sim

PACKAGE = Path(mobile_vla_sim.__file__).parent
#: Layer of each subpackage; a module may import its own layer and lower ones (serving is a policy transport: the
#: policies layer, since `load_policy` builds its client); study (the frozen-vs-LoRA grid) runs eval's jobs. Top-level
#: modules (config, errors, paths, io, backends) are the base layer; cli and quickstart sit on top of everything.
#: calibrate (fitting the sim's look to real frames) uses envs, datasets and policies, and only the cli uses it.
LAYERS = {"base": 0, "envs": 1, "datasets": 2, "policies": 3, "serving": 3, "eval": 4, "calibrate": 4, "study": 5,
          "top": 6}
TOP = {"cli", "quickstart"}


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:
        return LAYERS["base"]
    if parts[1] in TOP:
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


def test_no_upward_import():
    upward = [(m, d) for m, deps in _imports().items() for d in deps
              if _layer(d) > _layer(m) and not (m == "mobile_vla_sim" and d.endswith(".envs"))]
    assert upward == []


def test_no_import_cycle_between_modules():
    graph = {m: {d for d in deps if not (m.startswith(d + ".") or d == "mobile_vla_sim")}
             for m, deps in _imports().items()}
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
