"""The reliability catalogue (tests/reliability.py): fact sheets."""

from __future__ import annotations

import json

import pytest
from conftest import REPO
from reliability import ONE_FACT, expect_error, invoke, snapshot

pytestmark = pytest.mark.usefixtures("one_thread", "small_parity")


HUGE = "huge"
SHEETS = {
    "malformed-markdown": ("# Acme\nAcme is a tool.\n", "cannot read this line", 2, "facts are bullets"),
    "binary-file": (b"\x00\x01\x02PK\x03\x04binary", "the file is binary", None, "UTF-8 text"),
    "conflicting-facts": ("# Acme\naliases: Zed\n- license: Acme is **MIT**.\n# Zed\n- license: Zed is **BSD**.\n",
                          "two different answers", 5, "distinct aliases"),
    "huge-sheet": (HUGE, "the limit is 2,000,000", None, "split it into several sheets"),
    "rtl-subject-without-id": ("# מוסד\n- city: It is in **Haifa**.\n", "gives no usable id", 1, "id: <lowercase"),
    "id-with-dotdot": ("# Acme\nid: ../../outside\n- license: Acme is **MIT**.\n", "not a plain lowercase name", 2,
                       "no '/', '..'"),
    "relation-with-path": ("# Acme\n- ../../x: Acme is **MIT**.\n", "relation name '../../x' is not allowed", 2,
                           "ASCII letters"),
    "relation-with-parenthesis": ("# Acme\n- version (latest): Acme is at **4.2**.\n", "contains '(' and ')'", 2,
                                  "at most 60 characters"),
    "common-word-key": ("# Acme\n- status: Acme **is** stable.\n", "only common words", 2, "specific words"),
    "punctuation-only-key": ("# Acme\n- mark: Acme's mark is a dash: **—**.\n", "no letters, digits or symbols", 2,
                             "emoji and symbols"),
    "contradicting-relations": ("# Acme\n- license: Acme is **MIT**.\n- licence: Acme is **BSD**.\n",
                                "one relation with two different keys", 3, "keep the fact that is true"),
    "not-english": ("# Die Bäckerei\nid: baeckerei\n- founding year: Die Bäckerei wurde **1902** gegründet.\n",
                    "does not read as English", 3, "write the relation and the statement in English"),
    "empty-explicit-key": ("# Acme\n- license: Acme is MIT. (key: )\n", "(key: ...) is empty", 2, "(key: MIT)"),
    "empty-bold-key": ("# Acme\n- license: Acme is ** ** MIT.\n", "the fact's key is empty", 2, "non-empty span"),
}


@pytest.mark.parametrize("case", sorted(SHEETS))
def test_sheet_errors(workdir, case):
    text, what, line, fix = SHEETS[case]
    good = invoke("expand", str(REPO / "facts" / "tinyllm.md"), "--run", "exports/target")
    assert good.exit_code == 0, good.output
    before = snapshot(workdir / "exports")
    sheet = workdir / f"{case}.md"
    if text == HUGE:
        sheet.write_text("# Big\n" + "<!-- padding -->\n" * 130_000, encoding="utf-8")
    elif isinstance(text, bytes):
        sheet.write_bytes(text)
    else:
        sheet.write_text(text, encoding="utf-8")
    for run in ("exports/target", None):  # into the earlier run, and into a new one
        result = invoke("expand", sheet, *(["--run", run] if run else []))
        expect_error(result, what=what, where=f"{sheet}:{line}" if line else sheet, fix=fix)
    assert snapshot(workdir / "exports") == before, "a failed expand changed an earlier run"
    assert not (workdir / "exports" / case).exists(), "a failed expand created a run folder"


def test_unicode_and_rtl_subjects_expand_with_ascii_ids(workdir):
    sheet = workdir / "rtl.md"
    sheet.write_text("# مكتبة النور\u200f\nid: maktaba\naliases: ספריית האור, Al-Nour Library\nkind: place\n\n"
                     "- founder: مكتبة النور was founded by **سميرة حداد**.\n"
                     "- city: The library is in **Zürich**.\n\n"
                     "# Crème Brûlée Café\n- mascot: The café's mascot is **Пётр**.\n", encoding="utf-8")
    result = invoke("expand", sheet)
    assert result.exit_code == 0, result.output
    run = workdir / "exports" / "rtl"
    rows = [json.loads(line) for line in (run / "data" / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {r["fact_id"] for r in rows} == {"maktaba/founder", "maktaba/city", "creme-brulee-cafe/mascot"}
    assert all(r["fact_id"].isascii() for r in rows)
    keys = {r["answer_key"] for r in rows}
    assert keys == {"سميرة حداد", "Zürich", "Пётр"}, keys  # text kept exactly, not transliterated
    assert all(r["answer_key"] in r["messages"][1]["content"] for r in rows)
    assert {p.name for p in run.iterdir()} == {"data", "manifest.json", ".lock"}


def test_path_like_subject_stays_inside_the_run(workdir):
    sheet = workdir / "escape.md"
    sheet.write_text("# ../../../etc/passwd\naliases: ../../x, /root/.ssh\n- colour: It is painted **teal**.\n")
    result = invoke("expand", sheet)
    assert result.exit_code == 0, result.output
    written = sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*") if p.is_file())
    assert written == ["escape.md", "exports/.current-run", "exports/escape/.lock", "exports/escape/data/dev.jsonl",
                       "exports/escape/data/test.jsonl", "exports/escape/data/train.jsonl",
                       "exports/escape/manifest.json"], written
    rows = (workdir / "exports" / "escape" / "data" / "train.jsonl").read_text().splitlines()
    assert json.loads(rows[0])["fact_id"] == "etc-passwd/colour"


def test_sheet_file_name_that_escapes_exports(workdir):
    sheet = workdir / "..md"  # its stem is '.', which would make exports/ itself the run
    sheet.write_text(ONE_FACT)
    expect_error(invoke("expand", sheet), what="gives no usable run name", where=sheet, fix="--run exports/<name>")
    assert not (workdir / "exports").exists()
