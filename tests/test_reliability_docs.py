"""The reliability catalogue (tests/reliability.py): docs."""

from __future__ import annotations

import ast

import pytest
from conftest import REPO

pytestmark = pytest.mark.usefixtures("one_thread", "small_parity")


def error_messages() -> list[tuple[str, int, str]]:
    """(file, line, distinctive phrase) of every FactinjectError raised in the package: the
    longest literal piece of its message (f-string placeholders vary, the words do not)."""
    found = []
    for path in sorted((REPO / "factinject").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("FactinjectError", "Interrupted", "interrupted")
                    and node.args):
                continue
            first = node.args[0]
            parts = [first.value] if isinstance(first, ast.Constant) else [
                v.value for v in getattr(first, "values", []) if isinstance(v, ast.Constant)]
            pieces = [p.strip(" ;:,.()'\"") for p in parts if isinstance(p, str)]
            phrase = max(pieces, key=len, default="")
            if len(phrase) >= 8:
                found.append((str(path.relative_to(REPO)), node.lineno, phrase))
    return found


# Messages built outside a FactinjectError(...) call (the guard's Ctrl-C and out-of-memory texts).
OTHER_PHRASES = ["interrupted (Ctrl-C); finished epochs are checkpointed", "interrupted (Ctrl-C) before the first epoch",
                 "interrupted (Ctrl-C); nothing was exported", "interrupted (Ctrl-C); no report was written",
                 "interrupted (Ctrl-C); the run's data was not changed",
                 "interrupted (Ctrl-C); every finished stage's output is complete", "out of GPU memory",
                 "--chat-template default", "### Question:",
                 # answer_keys.key_problem returns its messages for fact sheets and exams to raise
                 "is only common words that almost any answer contains", "has no letters, digits or symbols to match"]


def test_every_error_message_is_in_troubleshooting():
    doc = (REPO / "docs" / "troubleshooting.md").read_text(encoding="utf-8")
    messages = error_messages() + [("(guard and commands)", 0, p) for p in OTHER_PHRASES]
    assert len(messages) >= 60, "the scan found too few messages: is it still reading the package?"
    missing = [f"{f}:{line}: {phrase!r}" for f, line, phrase in messages if phrase not in doc]
    assert not missing, "add these messages (and their fix) to docs/troubleshooting.md:\n" + "\n".join(missing)
    assert "docs/troubleshooting.md" in (REPO / "README.md").read_text(encoding="utf-8")
