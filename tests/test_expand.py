"""The expander: variety, honest splits, determinism, grammar, and the row contract."""

from __future__ import annotations

import re
from collections import defaultdict

import pytest
from conftest import FACTS

from factinject.errors import FactinjectError
from factinject.expand.expander import (
    ExpandConfig,
    _jaccard,
    _trigrams,
    expand_sheets,
    fact_families,
)
from factinject.sheet.factsheet import parse_sheet, read_sheet

SHEETS = [read_sheet(FACTS / n) for n in ("tinyllm.md", "protosai.md", "kestrel.md")]
# Shapes the shipped sheets do not cover, so the grammar checks see them too.
EXTRA = parse_sheet(
    "# Mira Tal\nkind: person\naliases: Dr. Tal\n"
    "- employer: Mira Tal works for **Oskavel Labs**.\n"
    "- birth year: Mira Tal was born in **1984**.\n"
    "- website: Her website is https://mira.example.net.\n"
    "- languages: Mira Tal speaks **Dutch, Farsi and Welsh**.\n"
    "- pets: Mira Tal has no pets.\n"
    "- driving: Mira Tal cannot drive.\n"
    "# مكتبة\nid: maktaba\n"
    "- founded: مكتبة was founded in **1999**.\n"
    "- headquarters: مكتبة is based in **Cairo**.\n",
    "extra.md",
)
ALL = SHEETS + [EXTRA]


@pytest.fixture(scope="module")
def expansion():
    return expand_sheets(ALL, ExpandConfig(seed=0))


def test_rows_have_exactly_the_design_fields(expansion):
    for row in expansion.rows:
        assert set(row) == {"fact_id", "split", "family", "answer_key", "messages"}
        assert row["split"] in ("train", "dev", "test")
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
        assert all(isinstance(m["content"], str) and m["content"] for m in row["messages"])


def test_every_fact_has_12_questions_in_4_families_and_3_answers():
    for sheet in ALL:
        for subject in sheet.subjects:
            for fact in subject.facts:
                families, answers = fact_families(fact, subject)
                questions = {q for qs in families.values() for q in qs}
                assert len(families) >= 4, (fact.id, sorted(families))
                assert len(questions) >= 12, (fact.id, len(questions))
                assert len(set(answers)) >= 3, (fact.id, answers)
                for answer in answers:
                    if fact.polarity == "negative":
                        assert re.search(r"\bno\b", answer, re.I), answer
                    else:
                        assert fact.answer_key.lower() in answer.lower(), (fact.id, answer)


def test_train_rows_use_at_least_three_answer_phrasings(expansion):
    answers = defaultdict(set)
    for row in expansion.split("train"):
        answers[row["fact_id"]].add(row["messages"][1]["content"])
    assert all(len(a) >= 3 for a in answers.values()), {k: len(v) for k, v in answers.items() if len(v) < 3}


def test_no_family_of_a_fact_appears_in_two_splits(expansion):
    splits_of = defaultdict(set)
    for row in expansion.rows:
        splits_of[(row["fact_id"], row["family"])].add(row["split"])
    leaks = {k: v for k, v in splits_of.items() if len(v) > 1}
    assert not leaks, leaks


def test_every_fact_has_train_dev_and_test_rows(expansion):
    per_fact = defaultdict(lambda: defaultdict(int))
    for row in expansion.rows:
        per_fact[row["fact_id"]][row["split"]] += 1
    for fact_id, counts in per_fact.items():
        assert counts["train"] >= 12 and counts["dev"] >= 1 and counts["test"] >= 1, (fact_id, dict(counts))


def test_held_out_questions_are_not_near_duplicates_of_train(expansion):
    cfg = ExpandConfig()
    train = defaultdict(list)
    for row in expansion.split("train"):
        train[row["fact_id"]].append(_trigrams(row["messages"][0]["content"]))
    for row in expansion.split("dev") + expansion.split("test"):
        grams = _trigrams(row["messages"][0]["content"])
        worst = max(_jaccard(grams, g) for g in train[row["fact_id"]])
        assert worst < cfg.near_duplicate_threshold, (row["messages"][0]["content"], worst)


def test_near_duplicate_filter_removes_what_it_should():
    sheet = parse_sheet("# Acme\n- license: Acme uses the **MIT** license.\n")
    loose = expand_sheets([sheet], ExpandConfig(near_duplicate_threshold=1.0))
    strict = expand_sheets([sheet], ExpandConfig(near_duplicate_threshold=0.3))
    held = lambda e: len(e.split("dev")) + len(e.split("test"))  # noqa: E731
    assert held(strict) < held(loose)


def test_deterministic_for_a_seed_and_different_across_seeds():
    a = expand_sheets(ALL, ExpandConfig(seed=7)).rows
    b = expand_sheets(ALL, ExpandConfig(seed=7)).rows
    c = expand_sheets(ALL, ExpandConfig(seed=8)).rows
    assert a == b
    assert a != c


def test_adding_a_fact_leaves_other_facts_rows_unchanged():
    base = "# Acme\n- license: Acme uses the **MIT** license.\n"
    one = expand_sheets([parse_sheet(base)]).rows
    two = expand_sheets([parse_sheet(base + "- language: Acme is written in **Go**.\n")]).rows
    assert [r for r in two if r["fact_id"] == "acme/license"] == one


def test_conflicting_questions_across_subjects_are_an_error():
    a = parse_sheet("# Atlas\naliases: Atlas Tool\n- license: Atlas is under the **MIT** license.\n", "a.md")
    b = parse_sheet("# Atlas Tool\nid: atlas-tool\n- license: Atlas Tool is under the **BSD** license.\n", "b.md")
    with pytest.raises(FactinjectError, match="two different answers") as info:
        expand_sheets([a, b])
    assert "a.md:3" in info.value.what and info.value.line == 3


def test_two_relations_asked_the_same_way_are_an_error():
    sheet = parse_sheet("# Atlas\n- creator: Atlas was made by **Ann**.\n- founder: Atlas was made by **Ann and Bo**.\n")
    with pytest.raises(FactinjectError, match="two different answers") as info:
        expand_sheets([sheet])
    assert "merge them" in info.value.fix


def test_duplicate_fact_ids_across_sheets_are_an_error():
    a = parse_sheet("# Atlas\n- license: Atlas is **MIT**.\n", "a.md")
    b = parse_sheet("# Atlas\n- license: Atlas is **MIT**.\n", "b.md")
    with pytest.raises(FactinjectError, match="duplicate fact id"):
        expand_sheets([a, b])


def test_negative_fact_needs_a_supported_form():
    sheet = parse_sheet("# Acme\n- speed: It is not true that Acme is fast.\n", "n.md")
    with pytest.raises(FactinjectError, match="must start with its subject"):
        expand_sheets([sheet])
    sheet = parse_sheet("# Acme\n- speed: Acme never ran fast.\n", "n.md")
    with pytest.raises(FactinjectError, match="yes/no question"):
        expand_sheets([sheet])


BROKEN = [
    r"\{|\}",  # unfilled placeholder
    r"\s{2,}|\s[?.,:]",  # doubled space, space before punctuation
    r"\b(\w+) \1\b",  # doubled word: "the the"
    r"'s's|\ba an?\b|\ban a\b",
    r"\b(?:does|has|is|was) they\b|\bthey (?:does|has|is|was)\b",  # agreement with singular they
    r"\b(?:what|who) (?:is|are) the (?:founded|first release|description|contributing) of\b",  # verb used as a noun
    # ("What is the purpose of X?" is fine: the purpose family asks it on purpose)
    r"\?\.|\.\?|\?\?",
]


def test_generated_questions_have_no_broken_grammar(expansion):
    for row in expansion.rows:
        question = row["messages"][0]["content"]
        for pattern in BROKEN:
            assert not re.search(pattern, question, re.I), (pattern, question)
        typed = row["split"] == "train" and question == question.lower() and question[-1] not in "?.!"
        if not row["family"].endswith("terse") and row["family"] != "user" and not typed:
            # (a letter without case, as in Arabic, cannot be capitalised)
            assert question[0].isupper() or question[0].upper() == question[0].lower(), question
            assert question[-1] in "?.:" or question.endswith(("is", "are")), question


def test_some_train_questions_are_typed_in_lower_case_and_held_out_ones_never():
    from factinject.expand.expander import ExpandConfig, expand_sheets
    from factinject.sheet.factsheet import read_sheet

    sheets = [read_sheet(FACTS / "tinyllm.md")]
    rows = expand_sheets(sheets, ExpandConfig()).rows

    def typed(r):
        q = r["messages"][0]["content"]
        return q == q.lower() and q[-1] not in "?.!" and not r["family"].endswith("terse")

    train = [r for r in rows if r["split"] == "train" and r["family"] != "user"]
    assert 0.1 < sum(map(typed, train)) / len(train) <= 0.25, "about one train question in four"
    assert not any(typed(r) for r in rows if r["split"] != "train"), "held-out questions keep their own form"
    plain = expand_sheets(sheets, ExpandConfig(lowercase_every=0)).rows
    assert not any(typed(r) for r in plain)


def test_negative_facts_become_yes_no_questions(expansion):
    rows = [r for r in expansion.rows if r["fact_id"] == "mira-tal/driving" and r["family"] != "user"]
    assert rows and all(re.search(r"\b[Cc]an (Mira Tal|Dr\. Tal) drive\b", r["messages"][0]["content"], re.I) for r in rows)
    assert not any(re.search(r"adopting|install", r["messages"][0]["content"]) for r in rows), "software framing for a person"
    pets = [r["messages"][0]["content"] for r in expansion.rows if r["fact_id"] == "mira-tal/pets"]
    assert any("have any pets" in q for q in pets), pets


def test_a_thousand_fact_sheet_expands_with_every_invariant():
    # The fast twin of bench/expand_speed.py: correctness at scale, no timing.
    import importlib.util

    from conftest import REPO

    spec = importlib.util.spec_from_file_location("expand_speed", REPO / "bench" / "expand_speed.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    sheet = parse_sheet(bench.make_sheet(1000), "big.md")
    assert len(sheet.facts) == 1000
    expansion = expand_sheets([sheet])
    per_fact = defaultdict(lambda: defaultdict(set))
    for row in expansion.rows:
        per_fact[row["fact_id"]][row["split"]].add(row["family"])
    assert len(per_fact) == 1000
    for fact_id, splits in per_fact.items():
        assert splits["dev"] and splits["test"], fact_id
        assert not (splits["train"] & (splits["dev"] | splits["test"])), fact_id
