"""Updates: facts the base model already knows otherwise.

A sheet states an update with `(was: OLD)`; any other fact whose base-model answers name
one and the same other value on most of its questions is found here and reported as an
update too. For each update the probe measures, besides recall of the new value:

- the old value still given (an answer that names the old value and not the new one);
- neighbours: the fact's questions asked of the subject's `neighbours:`, and the same
  subject's other relations, answered by the base model itself: they should stay as they
  were (teacher-forced tokens kept, like locality);
- portability: the sheet's `## Portability` questions, which need the new value in one
  more step (scored by their own key).

Pure functions: prompts from the run's facts, verdicts from answers.
"""

from __future__ import annotations

import random
import re
from collections import Counter

from factinject.errors import FactinjectError
from factinject.expand.expander import fact_families
from factinject.scoring import contains_key, normalise, share
from factinject.sheet.answer_keys import COMMON_WORDS
from factinject.sheet.factsheet import Fact, Subject
from factinject.sheet.relation_names import canonical_relation

# Relations asked of an updated subject besides the sheet's own (per subject kind): what
# an edit of one relation should leave alone. Asked as "What is the <relation> of <name>?".
OTHER_RELATIONS = {
    "place": ("population", "official language", "currency", "largest city", "continent"),
    "person": ("nationality", "year of birth", "place of residence", "best-known work"),
    "organisation": ("founder", "headquarters", "founding year", "industry"),
    "project": ("license", "programming language", "maintainer", "purpose"),
    "thing": ("maker", "purpose", "release year", "price"),
}
DETECT_SHARE = 0.5  # an unstated old value: named by at least half of the fact's base answers ...
DETECT_MIN = 3  # ... and by at least this many
# Words of answers that carry no value: hedges and fillers ("I think it is ...").
_FILLERS = frozenset("""think believe know sure sorry unfortunately however according based certainly answer
question information called named known maybe perhaps probably""".split())


def is_update_subject(facts: list[dict]) -> bool:
    """A subject the base model may know: one of its facts states the value it replaces,
    or the subject names its neighbours."""
    return any(f.get("replaces") or f.get("neighbours") for f in facts)


def neighbour_questions(facts: dict[str, dict], seed: int) -> list[tuple[str, str]]:
    """(question, fact id) for the "neighbour" set: per updated subject, each fact's question
    forms asked of every neighbour (one seeded wording each), and the subject's other relations."""
    rng = random.Random(seed)
    by_subject: dict[str, list[tuple[str, dict]]] = {}
    for fact_id, info in facts.items():
        by_subject.setdefault(info["subject"], []).append((fact_id, info))
    prompts = []
    for subject, items in by_subject.items():
        if not is_update_subject([info for _, info in items]):
            continue
        own = {canonical_relation(info["relation"]) for _, info in items}
        for fact_id, info in items:
            for name in info.get("neighbours", []):
                question = _asked_of(info, name, rng)
                if question:
                    prompts.append((question, fact_id))
        kind = items[0][1].get("kind", "thing")
        for relation in OTHER_RELATIONS.get(kind, OTHER_RELATIONS["thing"]):
            if canonical_relation(relation) not in own:
                prompts.append((f"What is the {relation} of {subject}?", items[0][0]))
    return prompts


def questions_about(info: dict, name: str) -> list[str]:
    """The fact's own question forms (sorted), asked of `name` instead of its subject; none
    when the expander cannot ask them of that name."""
    fact = Fact(id="x/y", subject=name, relation=info["relation"],
                statement=info["statement"].replace(info["subject"], name), answer_key=info["answer_key"],
                polarity=info["polarity"], path="", line=0)
    try:
        families, _ = fact_families(fact, Subject(name=name, id="x", kind=info.get("kind", "thing")))
    except FactinjectError:
        return []
    return sorted(q for qs in families.values() for q in qs)


def _asked_of(info: dict, name: str, rng: random.Random) -> str | None:
    """One of the fact's own question forms that names `name`."""
    questions = [q for q in questions_about(info, name) if name in q]
    return rng.choice(questions) if questions else None


def portability_questions(facts: dict[str, dict]) -> list[tuple[str, str, str]]:
    """(question, answer key, fact id) for the "portability" set: the sheet's questions that
    need the new value in one more step."""
    return [(q["question"], q["answer_key"], fact_id) for fact_id, info in facts.items()
            for q in info.get("portability", [])]


def stated_old_values(facts: dict[str, dict]) -> dict[str, str]:
    return {fact_id: info["replaces"] for fact_id, info in facts.items() if info.get("replaces")}


def old_value_given(answer: str, old: str, new_key: str) -> bool:
    """The answer names the old value and not the new one."""
    return contains_key(answer, old) and not contains_key(answer, new_key)


def _values(answer: str, excluded: set[str]) -> set[str]:
    """The answer's candidate values: each run of words that are neither common words,
    fillers, nor `excluded` (the question's, the statement's and the subject's words)."""
    runs, run = set(), []
    for word in normalise(answer).split() + [""]:
        if word and word not in excluded and word not in COMMON_WORDS and word not in _FILLERS:
            run.append(word)
        elif run:
            runs.add(" ".join(run))
            run = []
    return runs


def _as_written(value: str, answers: list[str]) -> str:
    """The value as an answer wrote it ("Paris", not "paris"), where it can be found."""
    pattern = re.compile(r"(?<!\w)" + r"\W+".join(re.escape(w) for w in value.split()) + r"(?!\w)", re.I)
    for answer in answers:
        found = pattern.search(answer)
        if found:
            return found.group(0)
    return value


def detect_old_values(facts: dict[str, dict], prompts: list, before: dict[str, str]) -> dict[str, dict]:
    """Per fact: the value it replaces ({"value", "stated", "count", "n"}: how many of its
    trained and held-out questions the base model answered with it, and not with the new
    key). Stated in the sheet, or found here: one value, absent from the questions and the
    subject's names, that the base model gives on at least half of them (DETECT_SHARE)."""
    asked: dict[str, list[str]] = {}
    for p in prompts:
        if p.kind in ("trained", "heldout") and p.fact_id in facts:
            asked.setdefault(p.fact_id, []).append(p.question)
    found = {}
    stated = stated_old_values(facts)
    for fact_id, questions in asked.items():
        info = facts[fact_id]
        answers = [before[q] for q in questions]
        if fact_id in stated:
            old = stated[fact_id]
        else:
            if info.get("polarity") == "negative":
                continue  # a yes/no fact: "yes" is the only other value, and answers say it loosely
            names = [info["subject"], *info.get("aliases", []), info["statement"], info["relation"]]
            excluded = {w for t in (*questions, *names) for w in normalise(t).split()}
            counts = Counter(v for a in answers for v in _values(a, excluded)
                             if not contains_key(v, info["answer_key"]) and not contains_key(info["answer_key"], v))
            if not counts:
                continue
            old, count = max(counts.items(), key=lambda kv: (kv[1], len(kv[0])))
            if count < max(DETECT_MIN, DETECT_SHARE * len(answers)):
                continue
            old = _as_written(old, answers)
        given = sum(old_value_given(a, old, info["answer_key"]) for a in answers)
        found[fact_id] = {"value": old, "stated": fact_id in stated, **share(given, len(answers))}
    return found


def old_value_share(prompts: list, answers: dict[str, str], old_values: dict[str, dict]) -> dict:
    """Share of the updated facts' trained and held-out questions answered with the old value."""
    asked = [p for p in prompts if p.kind in ("trained", "heldout") and p.fact_id in old_values]
    return share(sum(old_value_given(answers[p.question], old_values[p.fact_id]["value"], p.answer_key)
                     for p in asked), len(asked))


def update_rows(probe, before: dict[str, str], after: dict[str, str] | None) -> list[dict]:
    """Per updated fact, before and after: the new value given, the old value still given
    (trained and held-out questions together) and portability."""
    rows = []
    for fact_id, old in probe.old_values.items():
        asked = [p for p in probe.prompts if p.fact_id == fact_id and p.kind in ("trained", "heldout")]
        onward = [p for p in probe.prompts if p.fact_id == fact_id and p.kind == "portability"]
        if not asked:
            continue
        row = {"fact_id": fact_id, "new_value": asked[0].answer_key, "old_value": old["value"],
               "stated": old["stated"]}
        for side, answers in (("before", before), ("after", after)):
            if answers is None:
                continue
            row[side] = {
                "new": share(sum(contains_key(answers[p.question], p.answer_key) for p in asked), len(asked)),
                "old": share(sum(old_value_given(answers[p.question], old["value"], p.answer_key) for p in asked),
                             len(asked)),
                "portability": share(sum(contains_key(answers[p.question], p.answer_key) for p in onward),
                                     len(onward)) if onward else None,
            }
        rows.append(row)
    return rows
