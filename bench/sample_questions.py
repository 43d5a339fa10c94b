"""Print 30 randomly drawn generated questions (for docs/factsheets.md).

    python bench/sample_questions.py            # prints the markdown table
    python bench/sample_questions.py --write    # rewrites the block in docs/factsheets.md

tests/test_docs.py checks that the block in the docs is exactly this output, so the
sample a reader judges is what the current expander really produces.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from factinject.expand.expander import ExpandConfig, expand_sheets
from factinject.sheet.factsheet import read_sheet

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "factsheets.md"
BEGIN, END = "<!-- sample:begin -->", "<!-- sample:end -->"


def sample_table(n: int = 30, seed: int = 2026) -> str:
    sheets = [read_sheet(p) for p in sorted((REPO / "facts").glob("*.md"))]
    rows = expand_sheets(sheets, ExpandConfig(seed=0)).rows
    picked = random.Random(seed).sample(rows, n)
    lines = ["| split | family | question | answer key |", "|---|---|---|---|"]
    for r in picked:
        q = r["messages"][0]["content"].replace("|", "\\|")
        lines.append(f"| {r['split']} | {r['family']} | {q} | {r['answer_key']} |")
    return "\n".join(lines)


def render_doc(doc: str) -> str:
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{sample_table()}\n{END}{tail}"


if __name__ == "__main__":
    if "--write" in sys.argv:
        DOC.write_text(render_doc(DOC.read_text(encoding="utf-8")), encoding="utf-8")
    else:
        print(sample_table())
