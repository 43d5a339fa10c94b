"""pyproject.toml says what the code uses: every third-party package that factinject
imports (at the top or inside a backend) is declared, in the core or in an extra, and
every core dependency is imported somewhere, or listed below with why it is needed."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Declared without being imported by factinject, each for a reason.
NEEDED_UNIMPORTED = {
    "accelerate": "transformers' Trainer needs it and transformers does not require it",
}
# Import names of packages that are not installed in every environment (their extras).
IMPORT_NAMES = {"unsloth": "unsloth", "unsloth_zoo": "unsloth-zoo", "vllm": "vllm", "xformers": "xformers",
                "yaml": "pyyaml", "gguf": "gguf", "xllamacpp": "xllamacpp"}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(spec: str) -> str:
    return normalise(re.split(r"[<>=!~;\[ ]", spec, maxsplit=1)[0])


def imported_distributions() -> dict[str, set[str]]:
    """{distribution: the files that import it} over factinject/, lazy imports included."""
    installed = packages_distributions()
    found: dict[str, set[str]] = {}
    for path in (REPO / "factinject").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top == "factinject":
                    continue
                dist = IMPORT_NAMES.get(top) or (installed.get(top) or [top])[0]
                found.setdefault(normalise(dist), set()).add(str(path.relative_to(REPO)))
    return found


def declared() -> tuple[set[str], set[str]]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    core = {requirement_name(d) for d in project["dependencies"]}
    extras = {requirement_name(d) for deps in project["optional-dependencies"].values() for d in deps
              if not d.startswith("factinject")}
    return core, extras


def test_every_imported_package_is_declared():
    core, extras = declared()
    used = imported_distributions()
    undeclared = {d: sorted(files)[:3] for d, files in used.items() if d not in core | extras}
    assert not undeclared, f"imported but not in pyproject.toml: {undeclared}"


def test_every_core_dependency_is_used():
    core, _ = declared()
    unused = core - set(imported_distributions()) - set(NEEDED_UNIMPORTED)
    assert not unused, f"declared in pyproject.toml but never imported: {sorted(unused)}"


def test_the_scan_sees_lazy_imports():
    """The scan reads imports inside functions (the backends' heavy imports) and maps
    import names to distributions (huggingface_hub -> huggingface-hub)."""
    used = imported_distributions()
    assert "vllm" in used and "factinject/backends/vllm.py" in used["vllm"]
    assert "huggingface-hub" in used and "packaging" in used
    core, extras = declared()
    assert "jsonlines" not in core and "transformers" in core
