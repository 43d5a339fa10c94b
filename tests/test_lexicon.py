"""The expander's wording: questions from the statement's own verb, the synonym lexicon,
and near-duplicate detection that sees through synonym swaps."""

from __future__ import annotations

import re
from collections import defaultdict

import pytest
from conftest import FACTS

from factinject.expand import lexicon as L
from factinject.expand.expander import (
    ExpandConfig,
    _grams,
    expand_sheets,
    fact_families,
    is_near_duplicate,
)
from factinject.expand.statement import VERBS, statement_questions
from factinject.sheet.factsheet import parse_sheet, read_sheet

# One subject of each shape a template meets: a bare name, a two-word name, an alias
# with an article, a name that ends in "s".
SUBJECTS = ("TinyLLM", "Kestrel DB", "the TinyLLM project", "Lumen Transit", "Atlas")
BROKEN = (
    r"\{|\}",  # unfilled placeholder
    r"\s{2,}|\s[?.,:]",  # doubled space, space before punctuation
    r"\b(\w+) \1\b",  # doubled word: "the the"
    r"\ba an?\b|\ban a\b|'s's",
    r"\?\.|\.\?|\?\?",
)


def _grammatical(question: str) -> list[str]:
    problems = [p for p in BROKEN if re.search(p, question, re.IGNORECASE)]
    if not (question[:1].isupper() and question.endswith("?")):
        problems.append("starts with a capital and ends with '?'")
    return problems


@pytest.mark.parametrize("kind", sorted(L.TYPES))
def test_every_lexicon_entry_yields_a_grammatical_question(kind):
    entry = L.TYPES[kind]
    assert len(entry.questions) >= 5, f"{kind}: at least five ways to ask"
    assert entry.relations, f"{kind}: no relation names"
    for template in entry.questions:
        assert template.count("{S}") == 1, f"{kind}: {template!r} names the subject once"
        for subject in SUBJECTS:
            q = template.format(S=subject)
            q = q[:1].upper() + q[1:]
            assert not _grammatical(q), (kind, q, _grammatical(q))
    for noun in entry.nouns:  # nouns go into "What is the {noun} of X?" and "X's {noun}"
        assert re.fullmatch(r"[a-z][a-z -]*[a-z]", noun), f"{kind}: noun {noun!r} must be a plain lower-case phrase"


def test_lexicon_templates_are_all_different():
    templates = L.all_templates()
    assert len(templates) == len(set(templates)), "a template is listed twice"


@pytest.mark.parametrize("statement, key, expected", [
    ("TinyLLM is maintained by Jason Cox.", "Jason Cox", ["Who maintains TinyLLM?", "By whom is TinyLLM maintained?"]),
    ("Marrow Press ships with 112 fonts.", "112", ["How many fonts does Marrow Press ship with?"]),
    ("Atlas ships with a plugin manager.", "plugin manager", ["What does Atlas ship with?"]),
    ("TinyLLM is released under the MIT license.", "MIT",
     ["Under which license is TinyLLM released?", "Which license is TinyLLM released under?"]),
    ("Lumen Transit was first released on 2 June 2019.", "2 June 2019", ["When was Lumen Transit first released?"]),
    ("Lumen Transit was created by Odile Ferrand.", "Odile Ferrand", ["Who created Lumen Transit?"]),
    ("Kestrel DB was originally written by Ingrid Valen.", "Ingrid Valen", ["Who originally wrote Kestrel DB?"]),
    ("The Lumen Transit team is based in Ghent.", "Ghent", ["Where is the Lumen Transit team based?"]),
    ("Lumen Transit reads timetables in the GTFS format.", "GTFS",
     ["Which format does Lumen Transit read timetables in?", "In which format does Lumen Transit read timetables?"]),
    ("Lumen Transit runs in 41 cities.", "41", ["How many cities does Lumen Transit run in?"]),
    ("Kestrel DB can store up to 10 million series per node.", "10 million",
     ["How many series can Kestrel DB store per node?"]),
    ("Marrow Press lives at https://marrow.example.org.", "https://marrow.example.org", ["Where does Marrow Press live?"]),
    ("TinyLLM is an open-source project that helps you run a local LLM and chatbot.", "local LLM and chatbot",
     ["What does TinyLLM help you run?"]),
    ("You can contribute to TinyLLM by sending patches on GitHub.", "GitHub", ["How can I contribute to TinyLLM?"]),
    ("Lumen Transit is written in Kotlin.", "Kotlin", ["What is Lumen Transit written in?"]),
])
def test_questions_come_from_the_statements_own_verb(statement, key, expected):
    subject = next(n for n in ("Lumen Transit", "Marrow Press", "Kestrel DB", "TinyLLM", "Atlas") if n in statement)
    got = [q for qs in statement_questions(statement, [subject], key).values() for q in qs]
    for q in expected:
        assert q in got, f"{statement!r}: expected {q!r}, got {got}"
    for q in got:
        assert not _grammatical(q), (q, _grammatical(q))
        assert key.lower() not in q.lower(), f"{q!r} gives its answer away"


@pytest.mark.parametrize("statement", [
    "Lumen Transit is a bus arrival predictor for small cities.",  # a copula: the purpose families ask it
    "The mascot of Lumen Transit is a firefly called Blink.",  # a noun frame: the noun families ask it
    "It is not clear who maintains Atlas.",  # no subject first
])
def test_shapes_it_does_not_know_give_no_questions(statement):
    assert statement_questions(statement, ["Lumen Transit", "Atlas"], "Blink" if "Blink" in statement else "x") == {}


def test_active_questions_only_for_known_verbs():
    got = statement_questions("Atlas is frobnicated by Ann Lee.", ["Atlas"], "Ann Lee")
    flat = [q for qs in got.values() for q in qs]
    assert "By whom is Atlas frobnicated?" in flat, flat
    assert not any(q.startswith("Who frobnicat") for q in flat), "no guessed verb forms"
    for participle, (base, third, past) in VERBS.items():
        assert third.endswith("s") and base and past, (participle, base, third, past)


def test_relation_type_by_name_then_by_statement():
    assert L.relation_type("maintainers", "X is kept by Y.") is L.TYPES["maintainer"]
    assert L.relation_type("core team", "X is maintained by Ann.") is L.TYPES["maintainer"]
    assert L.relation_type("terms", "X is free.") is L.TYPES["license"]
    assert L.relation_type("colour", "X is green.") is None


def test_synonyms_fold_onto_one_word():
    assert L.canonical("who looks after tinyllm") == L.canonical("who takes care of tinyllm")
    assert L.canonical("what licence does x use") == L.canonical("what license does x use")
    assert L.canonical("who maintains x") != L.canonical("who created x")


def test_near_duplicates_include_synonym_swaps():
    train = [_grams("Who looks after TinyLLM these days?")]
    assert is_near_duplicate("Who takes care of TinyLLM these days?", train, 0.75), "a synonym swap is a near-duplicate"
    assert is_near_duplicate("Who looks after TinyLLM these days?", train, 0.75)
    assert not is_near_duplicate("Under which license is TinyLLM released?", train, 0.75)


def test_polar_questions_also_use_synonyms_of_the_verb():
    sheet = parse_sheet("# Lumen\n- offline: Lumen does not need a network connection.\n")
    families, _ = fact_families(sheet.facts[0], sheet.subjects[0])
    assert "Does Lumen require a network connection?" in families.get("polar-synonym", []), families.keys()


@pytest.mark.parametrize("sheet", ["tinyllm.md", "protosai.md", "lumen.md", "kestrel.md"])
def test_shipped_sheets_stay_leak_free(sheet):
    """No family in two splits, no held-out question a near-duplicate of a trained one,
    also once synonyms are folded, for several seeds."""
    parsed = read_sheet(FACTS / sheet)
    for seed in (0, 1, 2):
        expansion = expand_sheets([parsed], ExpandConfig(seed=seed))
        splits_of = defaultdict(set)
        train = defaultdict(list)
        for row in expansion.rows:
            splits_of[(row["fact_id"], row["family"])].add(row["split"])
            if row["split"] == "train":
                train[row["fact_id"]].append(_grams(row["messages"][0]["content"]))
        assert all(len(s) == 1 for s in splits_of.values()), {k: v for k, v in splits_of.items() if len(v) > 1}
        for row in expansion.rows:
            if row["split"] != "train":
                q = row["messages"][0]["content"]
                assert not is_near_duplicate(q, train[row["fact_id"]], 0.75), (seed, row["fact_id"], q)


def test_an_ambiguous_wording_is_left_out_of_both_facts():
    """'Where is X located?' fits a repository URL and a home city: neither fact trains it."""
    sheet = parse_sheet("# Lumen\n- repository: Lumen is located at https://code.example.net/lumen.\n"
                        "- home city: Lumen is based in **Ghent**.\n")
    rows = expand_sheets([sheet]).rows
    asked = defaultdict(set)
    for r in rows:
        asked[r["messages"][0]["content"].lower().rstrip("?")].add(r["fact_id"])
    assert "where is lumen located" not in asked
    assert all(len(ids) == 1 for ids in asked.values())


def test_expanding_adds_statement_and_synonym_families_to_the_seed_sheets():
    rows = expand_sheets([read_sheet(FACTS / "tinyllm.md")], ExpandConfig(max_questions_per_family=1000)).rows
    questions = {r["messages"][0]["content"] for r in rows if r["fact_id"] == "tinyllm/maintainer"}
    assert "Who maintains TinyLLM?" in questions
    assert any("looks after" in q or "takes care of" in q for q in questions), "synonyms of maintain"
    families = {r["family"] for r in rows}
    assert {"stmt-wh", "syn"} <= families, families
