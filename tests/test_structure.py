"""How the package hangs together: the import directions docs/design.md allows, heavy
libraries only in the engines, the engines declared once, and no import cycles.

Every import counts, those inside functions too: a lazy import still ties two modules."""

from __future__ import annotations

import ast
import re

from conftest import REPO

PACKAGE = REPO / "factinject"
HEAVY = ("torch", "transformers", "peft", "trl", "datasets", "accelerate", "bitsandbytes", "unsloth", "vllm")
MAX_ROOT_MODULES = 12


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


def internal(name: str) -> set[str]:
    """The package modules an import of `name` runs: the module and every package above it."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & set(MODULES)


def group(module: str) -> str:
    """'factinject.probe.stage' -> 'probe'; 'factinject.recipe' -> 'recipe'; 'factinject' -> 'factinject'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def package_map() -> dict[str, set[str]]:
    """docs/design.md's table: each package (or root module) and what it may import."""
    text = (REPO / "docs" / "design.md").read_text(encoding="utf-8")
    section = text.split("## The package", 1)[1].split("\n## ", 1)[0]
    allowed: dict[str, set[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        for name in re.findall(r"`([\w.]+)`", cells[0]):
            allowed[name] = set(re.findall(r"`([\w.]+)`", cells[2]))
    assert allowed, "docs/design.md has no package table under '## The package'"
    return allowed


def test_every_package_is_on_the_map_and_the_root_is_small():
    allowed = package_map()
    groups = {group(m) for m in MODULES} - {"factinject"}
    assert not groups - set(allowed), f"add these to docs/design.md's package table: {sorted(groups - set(allowed))}"
    assert not set(allowed) - groups, f"the package table names what is not there: {sorted(set(allowed) - groups)}"
    root = [p.name for p in PACKAGE.glob("*.py")]
    assert len(root) <= MAX_ROOT_MODULES, f"{len(root)} modules at the package root: {sorted(root)}"


def test_imports_follow_the_package_map():
    allowed = package_map()
    wrong = []
    for name, path in MODULES.items():
        here = group(name)
        if here == "factinject":
            continue
        for target in sorted(i for i in imports(path, False) if i in MODULES):
            there = group(target)
            if there == here:
                continue
            rel = target.removeprefix("factinject.")
            if there not in allowed[here] and not any(rel == a or rel.startswith(a + ".") for a in allowed[here]):
                wrong.append(f"{name} imports {target}")
    assert not wrong, "imports the package table (docs/design.md) does not allow:\n" + "\n".join(wrong)


def test_heavy_libraries_are_imported_at_the_top_only_by_engines():
    offenders = {name: sorted(i for i in imports(path, True) if i.split(".")[0] in HEAVY)
                 for name, path in MODULES.items() if not name.startswith("factinject.backends.")}
    assert not {k: v for k, v in offenders.items() if v}, "import heavy libraries inside the functions that need them"


def test_no_stage_imports_an_engine():
    for name, path in MODULES.items():
        if group(name) in ("train", "export", "probe", "expand", "sheet", "engines", "rundir", "commands"):
            engines = sorted(i for i in imports(path, False) if i.startswith("factinject.backends"))
            assert not engines, f"{name} imports {engines}: jobs reach the engines through factinject.engines.process"


def test_engines_are_declared_once():
    """The engine table is the one place that names engine modules; everything else reads it."""
    from factinject.engines import ENGINES

    for name, path in MODULES.items():
        if name == "factinject.engines":
            continue
        text = path.read_text(encoding="utf-8")
        for engine in ENGINES.values():
            assert f'"{engine.module}"' not in text, f"{name} names {engine.module}: read factinject.engines.ENGINES"
    for engine in ENGINES.values():
        assert engine.module in MODULES, f"{engine.name}: no module {engine.module}"


def test_no_import_cycles():
    # A module's own packages are being imported already when it runs: no edge to them.
    graph = {name: {m for i in imports(path, False) for m in internal(i)} - internal(name)
             for name, path in MODULES.items()}
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


# Where an internal import may sit inside a function: the commands (kept light, so
# `factinject --help` and `expand` never load a stage they do not run), the engines (each
# loads its library in a job's child process) and the testbed's build and evaluation
# scripts (they run the model), and the run record's trained recipe (the schema pulls in
# pydantic, which `factinject --help` and `expand` never need). Everywhere else imports
# sit at the top of the module.
LAZY_IMPORTS_ALLOWED = ("factinject.cli", "factinject.commands.", "factinject.backends.", "factinject.testbed.cli",
                        "factinject.testbed.pretrain", "factinject.rundir.record")


def test_internal_imports_sit_at_module_level():
    lazy = []
    for name, path in MODULES.items():
        if name.startswith(LAZY_IMPORTS_ALLOWED):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top = {id(node) for node in tree.body}
        lazy += [f"{name}:{node.lineno} imports {node.module}" for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.level == 0 and id(node) not in top
                 and (node.module or "").startswith("factinject")]
    assert not lazy, "move these imports to the top of their module:\n" + "\n".join(lazy)
