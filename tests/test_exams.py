"""The shipped hand-written exams (facts/<sheet>.exam.jsonl): complete, well-formed, and
not a copy of what the expander trains on, so exam recall measures generalisation."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from conftest import FACTS

from factinject.expand.expander import ExpandConfig, expand_sheets, normalise_question
from factinject.probe.exam import read_exam
from factinject.sheet.factsheet import read_sheet

SHEETS = ("tinyllm", "protosai", "lumen")
MIN_PER_FACT = 5
# The expander's own near-duplicate bar between held-out and trained questions.
NEAR_DUPLICATE = 0.75
MAX_NEAR_SHARE = 0.25


def _trigrams(text: str) -> frozenset[str]:
    # Surface form only: an exam question that uses a synonym of a trained question is
    # exactly what the exam is for, so synonyms are not folded here.
    t = f" {normalise_question(text)} "
    return frozenset(t[i : i + 3] for i in range(len(t) - 2))


def _jaccard(a: frozenset, b: frozenset) -> float:
    return len(a & b) / len(a | b)


@pytest.mark.parametrize("name", SHEETS)
def test_every_fact_has_at_least_five_questions_with_its_own_key(name):
    sheet = read_sheet(FACTS / f"{name}.md")
    keys = {f.id: f.answer_key for f in sheet.facts}
    exam = read_exam(FACTS / f"{name}.exam.jsonl").questions
    per_fact = Counter(p.fact_id for p in exam)
    short = {f: per_fact.get(f, 0) for f in keys if per_fact.get(f, 0) < MIN_PER_FACT}
    assert not short, f"{name}: facts with fewer than {MIN_PER_FACT} exam questions: {short}"
    unknown = set(per_fact) - set(keys)
    assert not unknown, f"{name}: exam rows name facts the sheet does not have: {unknown}"
    wrong = [(p.question, p.answer_key) for p in exam if p.answer_key != keys[p.fact_id]]
    assert not wrong, f"{name}: exam keys differ from the sheet's answer keys: {wrong}"
    dupes = [q for q, n in Counter(normalise_question(p.question) for p in exam).items() if n > 1]
    assert not dupes, f"{name}: questions asked twice: {dupes}"


@pytest.mark.parametrize("name", SHEETS)
def test_no_exam_question_is_a_key_giveaway(name):
    exam = read_exam(FACTS / f"{name}.exam.jsonl").questions
    leaks = [p.question for p in exam if p.answer_key.lower() not in ("no", "yes")
             and normalise_question(p.answer_key) in normalise_question(p.question)]
    assert not leaks, f"{name}: questions that contain their own answer: {leaks}"


@pytest.mark.parametrize("name", SHEETS)
def test_exam_is_not_what_the_expander_generates(name):
    """No exam question is a question the expander makes, and most are not
    even close to one: exam recall measures questions the model was not trained on.
    (Some near-duplicates are unavoidable: "lumen transit release date" is how people
    type, and the expander rightly trains the same words.)"""
    sheet = read_sheet(FACTS / f"{name}.md")
    generated: dict[str, list[str]] = {}
    # With no cap per family every question is kept, whatever the seed (it only decides
    # the splits and which questions are typed in lower case, which normalising undoes).
    for row in expand_sheets([sheet], ExpandConfig(max_questions_per_family=1000)).rows:
        generated.setdefault(row["fact_id"], []).append(row["messages"][0]["content"])
    exam = read_exam(FACTS / f"{name}.exam.jsonl").questions
    copies = [p.question for p in exam
              if normalise_question(p.question) in {normalise_question(q) for q in generated[p.fact_id]}]
    assert not copies, f"{name}: exam questions the expander generates itself: {copies}"
    close = []
    for p in exam:
        grams = _trigrams(p.question)
        best = max(_jaccard(grams, _trigrams(q)) for q in generated[p.fact_id])
        if best >= NEAR_DUPLICATE:
            close.append(p.question)
    assert len(close) <= MAX_NEAR_SHARE * len(exam), f"{name}: {len(close)}/{len(exam)} exam questions are near-duplicates: {close}"


def test_exam_rows_are_plain_jsonl():
    for name in SHEETS:
        for number, line in enumerate((FACTS / f"{name}.exam.jsonl").read_text(encoding="utf-8").splitlines(), 1):
            row = json.loads(line)
            assert set(row) <= {"question", "answer_key", "fact_id", "aliases"}, f"{name}:{number}: extra fields {set(row)}"
