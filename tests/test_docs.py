"""Documentation that quotes program output must match the program."""

from __future__ import annotations

import importlib.util

from conftest import REPO


def _load(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_factsheet_doc_sample_is_current():
    sample = _load(REPO / "bench" / "sample_questions.py")
    doc = sample.DOC.read_text(encoding="utf-8")
    assert sample.render_doc(doc) == doc, "run: python bench/sample_questions.py --write"


def test_readme_has_both_setup_commands_and_ci_runs_the_test_one():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "<!-- main-command -->" in readme and "<!-- test-command -->" in readme
    assert "pip install torch==2.13.0" in readme.split("<!-- test-command -->")[1].split("```")[1]
    assert "test-command" in (REPO / ".ci" / "run").read_text()


def test_project_files_speak_to_users_without_development_history():
    import re

    history = re.compile(r"\b(session[ -]?\d|issue[ -]?#?\d+|round \d+:)", re.IGNORECASE)
    files = [REPO / "README.md", *(REPO / "docs").glob("*.md"), *(REPO / "factinject").rglob("*.py"),
             *(REPO / "bench").glob("*.py"), *(REPO / "recipes").glob("*.yaml"), *(REPO / "tests").glob("*.py")]
    found = [f"{path.relative_to(REPO)}:{number}: {line.strip()[:80]}" for path in files
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
             if history.search(line) and path.name != "test_docs.py"]
    assert not found, "history belongs in git and docs/changelog.md:\n" + "\n".join(found)
