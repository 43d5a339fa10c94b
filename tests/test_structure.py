"""How the package hangs together: heavy libraries only in the engines, the training
stage free of engines, and no import cycles."""

from __future__ import annotations

import ast

from conftest import REPO

PACKAGE = REPO / "factinject"
HEAVY = ("torch", "transformers", "peft", "trl", "datasets", "accelerate", "bitsandbytes", "unsloth", "vllm")


def module_name(path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imports(path, top_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def test_heavy_libraries_are_imported_at_the_top_only_by_engines():
    offenders = {name: sorted(i for i in imports(path, True) if i.split(".")[0] in HEAVY)
                 for name, path in MODULES.items() if not name.startswith("factinject.backends.")}
    assert not {k: v for k, v in offenders.items() if v}, "import heavy libraries inside the functions that need them"


def test_the_training_stage_imports_no_engine():
    for name in ("factinject.train", "factinject.guard", "factinject.export", "factinject.probe_cmd",
                 "factinject.jobs", "factinject.engines", "factinject.targets"):
        engines = sorted(i for i in imports(MODULES[name], False)
                         if i.startswith("factinject.backends"))
        assert not engines, f"{name} imports {engines}: jobs reach the engines through factinject.jobs"


def test_no_import_cycles():
    graph = {}
    for name, path in MODULES.items():
        graph[name] = {i for i in imports(path, True) if i in MODULES and i != name}
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [node])
