"""The user's exam from the command line: picked up next to the sheet or given with
--questions, checked before anything is written, recorded by path and hash, and
probed on an untrained run next to a note that says what to run."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from click.testing import CliRunner

from factinject.cli import main

SHEET = "# Zorblat\naliases: the Zorblat tool\n- colour: Zorblat is painted **teal**.\n- maker: Zorblat is made by **Quentin Ruhl**.\n"
EXAM = ('{"question": "What colour is Zorblat?", "answer_key": "teal", "fact_id": "zorblat/colour"}\n'
        '{"question": "Who builds the Zorblat tool?", "answer_key": "Quentin Ruhl"}\n'
        '{"question": "What does Zorblat weigh?", "answer_key": "12 kg"}\n')


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def written(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_a_bad_exam_next_to_the_sheet_stops_run_before_anything_is_written(workdir):
    (workdir / "zorblat.md").write_text(SHEET, encoding="utf-8")
    (workdir / "zorblat.exam.jsonl").write_text(EXAM.replace('"answer_key": "12 kg"', '"answer_key": "the"'),
                                                encoding="utf-8")
    result = invoke("run", "zorblat.md")
    assert result.exit_code == 2, result.output
    assert "zorblat.exam.jsonl:3: the key 'the' is only common words" in result.output and "fix:" in result.output
    assert written(workdir) == ["zorblat.exam.jsonl", "zorblat.md"], "nothing may be written"


def test_run_questions_naming_an_unknown_fact_fails_before_training(workdir):
    (workdir / "zorblat.md").write_text(SHEET, encoding="utf-8")
    (workdir / "mine.jsonl").write_text('\ufeff{"question": "Size?", "answer_key": "huge", "fact_id": "zorblat/size"}\r\n',
                                        encoding="utf-8")
    result = invoke("run", "zorblat.md", "--questions", "mine.jsonl")
    assert result.exit_code == 2, result.output
    assert "mine.jsonl:1: fact_id 'zorblat/size' is not a fact of this run" in result.output
    assert "zorblat/colour" in result.output.split("fix:")[1]
    assert written(workdir) == ["mine.jsonl", "zorblat.md"]


def test_probe_of_an_untrained_run_picks_up_the_exam_and_says_what_to_run(workdir):
    (workdir / "zorblat.md").write_text(SHEET, encoding="utf-8")
    exam = workdir / "zorblat.exam.jsonl"
    exam.write_bytes(b"\xef\xbb\xbf" + EXAM.replace("\n", "\r\n").encode())  # a BOM and CRLF, as Windows editors write
    assert invoke("expand", "zorblat.md", "--per-family", 2).exit_code == 0
    result = invoke("probe", "--world-limit", 5)
    assert result.exit_code == 0, result.output
    assert "exam: zorblat.exam.jsonl (3 questions)" in result.output
    assert "no trained adapter yet" in result.output and "factinject train --run exports/zorblat" in result.output
    run = workdir / "exports" / "zorblat"
    report = json.loads((run / "reports" / "report.json").read_text(encoding="utf-8"))
    record = {"path": "zorblat.exam.jsonl", "sha256": hashlib.sha256(exam.read_bytes()).hexdigest(), "questions": 3}
    assert report["exam"] == [record]
    assert json.loads((run / "manifest.json").read_text(encoding="utf-8"))["probe"]["exam"] == [record]
    assert report["after"] is None and "factinject train" in report["next_step"]
    assert report["before"]["exam"]["n"] == 3
    assert set(report["facts"]["zorblat/colour"]["before"]) == {"recall_trained", "recall_heldout", "recall_exam"}
    # The base model knows none of it: every exam question is a miss, shown with its answer, per fact.
    groups = report["misses"]["exam"]
    assert set(groups) == {"zorblat/colour", "zorblat/maker", ""}, groups  # matched by fact_id, by key + alias, none
    assert all(m["answer"] for rows in groups.values() for m in rows)
    page = (run / "reports" / "report.html").read_text(encoding="utf-8")
    assert "What does Zorblat weigh?" in page and "Not trained yet" in page
    rows = [json.loads(line) for line in (run / "reports" / "answers.jsonl").read_text(encoding="utf-8").splitlines()]
    exam_rows = [r for r in rows if r["set"] == "exam"]
    assert [r["fact_id"] for r in exam_rows] == ["zorblat/colour", "zorblat/maker", None]
    assert all(r["correct_before"] is False and r["correct_after"] is None for r in exam_rows)
    assert {r["set"] for r in rows} == {"trained", "heldout", "exam", "locality", "retention", "bleed", "misspelling"}


def test_probe_questions_overrides_the_exam_next_to_the_sheet(workdir):
    (workdir / "zorblat.md").write_text(SHEET, encoding="utf-8")
    (workdir / "zorblat.exam.jsonl").write_text(EXAM, encoding="utf-8")
    (workdir / "other.jsonl").write_text('{"question": "Zorblat colour?", "answer_key": "teal"}\n{"question": "x"}\n',
                                         encoding="utf-8")
    assert invoke("expand", "zorblat.md", "--per-family", 2).exit_code == 0
    before = written(workdir / "exports")
    result = invoke("probe", "--questions", "other.jsonl")
    assert result.exit_code == 2 and "other.jsonl:2: a row needs 'question' and 'answer_key'" in result.output
    assert written(workdir / "exports") == before, "a bad exam writes no report"
