"""The user's own exam: questions they wrote, probed before and after like every other set.

An exam file is JSONL, one question a line::

    {"question": "Who looks after TinyLLM?", "answer_key": "Jason Cox", "fact_id": "tinyllm/maintainer"}
    {"question": "Can I use TinyLLM at work?", "expected": "MIT", "aliases": ["MIT license"]}

`answer_key` (or its synonym `expected`) is what the answer must contain; `aliases`
are other accepted answers; `fact_id` ties the question to a fact of the run. A
question without `fact_id` is matched to the fact whose key it asks for and whose
subject (or an alias) it names. `<sheet>.exam.jsonl` next to a sheet is picked up by
`factinject run` and `probe` without `--questions`.

Reading is strict and names the line of any problem: a typo in a field name would
otherwise drop a question or an alias without a word.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from factinject.errors import FactinjectError
from factinject.scoring import contains_key, normalise
from factinject.sheet.answer_keys import key_problem
from factinject.sheet.factsheet import read_sheet

EXAM_SUFFIX = ".exam.jsonl"
FIELDS = ("question", "answer_key", "expected", "fact_id", "aliases")
FACT_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*/[a-z0-9][a-z0-9-]*$")
EXAMPLE = '{"question": "Who maintains TinyLLM?", "answer_key": "Jason Cox", "fact_id": "tinyllm/maintainer"}'
YES_NO = ("yes", "no")  # an exam may ask yes/no questions: there "no" or "yes" is the whole answer


@dataclass(frozen=True)
class ExamQuestion:
    question: str
    answer_key: str
    aliases: tuple[str, ...]
    fact_id: str | None
    path: str
    line: int


@dataclass(frozen=True)
class Exam:
    path: str
    sha256: str
    questions: tuple[ExamQuestion, ...]

    def record(self) -> dict:
        """What report.json and the manifest say about the exam: which file, which bytes."""
        return {"path": self.path, "sha256": self.sha256, "questions": len(self.questions)}


def exam_next_to(sheet: str | Path) -> Path | None:
    """facts/tinyllm.md -> facts/tinyllm.exam.jsonl, when that file exists."""
    sheet = Path(sheet)
    candidate = sheet.with_name(sheet.stem + EXAM_SUFFIX)
    return candidate if candidate.is_file() else None


def read_exam(path: str | Path) -> Exam:
    """Read and check one exam file (the I/O edge); a UTF-8 BOM and CRLF line ends are fine."""
    p = Path(path)
    if not p.is_file():
        raise FactinjectError("no such exam file", where=p, fix=f"pass a JSONL file of questions, one a line: {EXAMPLE}")
    data = p.read_bytes()
    if b"\x00" in data:
        raise FactinjectError("the exam file is binary (it contains NUL bytes)", where=p,
                              fix=f"pass a UTF-8 JSONL file, one question a line: {EXAMPLE}")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise FactinjectError(f"the exam file is not valid UTF-8 (byte 0x{data[err.start]:02x})", where=p,
                              line=data[: err.start].count(b"\n") + 1,
                              fix="save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)") from None
    questions = tuple(q for number, line in enumerate(text.splitlines(), start=1) if line.strip()
                      for q in [parse_exam_line(line, str(path), number)])
    if not questions:
        raise FactinjectError("the exam file has no questions", where=p,
                              fix=f"add JSONL rows with question and answer_key, e.g. {EXAMPLE}")
    check_repeated_questions(questions)
    return Exam(str(path), hashlib.sha256(data).hexdigest(), questions)


def check_repeated_questions(questions: Sequence[ExamQuestion]) -> None:
    """A question asked twice would count twice; asked twice with other keys, one of the
    two rows is wrong whatever the model says."""
    first: dict[str, ExamQuestion] = {}
    for q in questions:
        earlier = first.setdefault(normalise(q.question), q)
        if earlier is q:
            continue
        other = "" if normalise(earlier.answer_key) == normalise(q.answer_key) else \
            f" with another key ({earlier.answer_key!r}, here {q.answer_key!r})"
        raise FactinjectError(f"the same question as line {earlier.line}{other}", where=q.path, line=q.line,
                              fix="remove one of the two rows; where both answers are right, keep one row and put the "
                                  "other answer in its \"aliases\"")


def parse_exam_line(line: str, path: str, number: int) -> ExamQuestion:
    """One JSONL row -> ExamQuestion. Pure; every error names the file and the line."""
    at = {"where": path, "line": number}
    example = f"write e.g. {EXAMPLE}"
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise FactinjectError(f"not valid JSON ({err.msg})", **at, fix=f"one JSON object per line: {EXAMPLE}") from None
    if not isinstance(row, dict):
        raise FactinjectError(f"an exam row must be a JSON object, not {type(row).__name__}", **at, fix=example)
    for name in row:
        if name not in FIELDS:
            close = difflib.get_close_matches(name, FIELDS, n=1)
            raise FactinjectError(f"unknown field {name!r} in an exam row", **at,
                                  fix=f"did you mean {close[0]!r}?" if close else f"the fields are {', '.join(FIELDS)}")
    if "answer_key" in row and "expected" in row:
        raise FactinjectError("an exam row gives both 'answer_key' and 'expected'", **at,
                              fix="keep one of them (they mean the same)")
    key = row.get("answer_key", row.get("expected"))
    question = row.get("question")
    if question is None or key is None:
        raise FactinjectError("a row needs 'question' and 'answer_key' (or 'expected')", **at, fix=example)
    if not isinstance(question, str):
        raise FactinjectError(f"the question must be text, not {json.dumps(question)}", **at,
                              fix='write the question as a JSON string, e.g. "question": "Who maintains TinyLLM?"')
    if not question.strip():
        raise FactinjectError("the question is empty", **at, fix=example)
    if isinstance(key, bool) or not isinstance(key, (str, int, float)) or not str(key).strip():
        raise FactinjectError(f"the answer key must be a non-empty string, not {json.dumps(key)}", **at, fix=example)
    aliases = row.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) and a.strip() for a in aliases):
        raise FactinjectError("'aliases' must be a list of non-empty strings", **at,
                              fix='write e.g. "aliases": ["MIT license", "MIT"]')
    for candidate in (str(key), *aliases):
        problem = key_problem(candidate, allow=YES_NO)
        if problem:
            raise FactinjectError(problem[0], **at, fix=problem[1])
    fact_id = row.get("fact_id")
    if fact_id is not None and (not isinstance(fact_id, str) or not FACT_ID_RE.match(fact_id)):
        raise FactinjectError(f"fact_id {json.dumps(fact_id)} is not a fact id", **at,
                              fix="write '<subject id>/<relation id>', e.g. \"tinyllm/license\" (the ids are in the "
                                  "run's manifest.json and the report's per-fact table)")
    return ExamQuestion(question.strip(), str(key).strip(), tuple(a.strip() for a in aliases), fact_id, path, number)


def match_fact(q: ExamQuestion, facts: dict[str, dict]) -> str | None:
    """The fact an exam question asks about: its fact_id (which must be a fact of the run),
    else the one fact whose key it expects and whose subject or alias it names."""
    if q.fact_id is not None:
        if q.fact_id not in facts:
            known = ", ".join(sorted(facts)[:6]) + (", ..." if len(facts) > 6 else "")
            raise FactinjectError(
                f"fact_id {q.fact_id!r} is not a fact of this run", where=q.path, line=q.line,
                fix=f"use one of the run's fact ids ({known}), or leave fact_id out to match the question "
                    "by its key and subject")
        return q.fact_id
    key = normalise(q.answer_key)
    candidates = [fid for fid, f in facts.items()
                  if normalise(f["answer_key"]) == key or contains_key(f["answer_key"], q.answer_key)
                  or contains_key(q.answer_key, f["answer_key"])]
    named = [fid for fid in candidates
             if any(contains_key(q.question, n) for n in [facts[fid]["subject"], *facts[fid].get("aliases", [])])]
    return named[0] if len(named) == 1 else None


def exams_for(questions: str | Path | None, sheets: Sequence[str | Path]) -> list[Exam]:
    """The exams of a probe: the --questions file if given, else each sheet's
    `<sheet>.exam.jsonl` that exists. Read (and checked) up front, before any work."""
    if questions is not None:
        return [read_exam(questions)]
    return [read_exam(p) for p in dict.fromkeys(exam_next_to(s) for s in sheets) if p is not None]


def describe(exams: Sequence[Exam]) -> str | None:
    """'exam: facts/tinyllm.exam.jsonl (40 questions)', or None without an exam."""
    if not exams:
        return None
    return "exam: " + ", ".join(f"{e.path} ({len(e.questions)} question{'' if len(e.questions) == 1 else 's'})" for e in exams)


def checked_exams(questions: Path | None, sheets) -> list:
    """The run's exams, read and matched against the sheets' facts up front: an exam row
    naming a fact the sheets do not have fails before hours of training, not after."""

    exams = exams_for(questions, sheets)
    if exams:
        facts = {f.id: {"subject": sub.name, "aliases": sub.aliases, "answer_key": f.answer_key}
                 for sheet in map(read_sheet, sheets) for sub in sheet.subjects for f in sub.facts}
        for exam in exams:
            for q in exam.questions:
                match_fact(q, facts)
    return exams
