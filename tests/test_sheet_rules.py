"""Inputs that would make the figures meaningless are refused: keys that cannot prove
recall, one relation under two names, sheets not in English, relation names the
expander cannot ask about. Every refusal names the line and says what is allowed."""

from __future__ import annotations

import pytest

from factinject.errors import FactinjectError
from factinject.expand.expander import expand_sheets
from factinject.scoring import contains_key
from factinject.sheet.answer_keys import key_problem
from factinject.sheet.factsheet import parse_sheet
from factinject.sheet.language import language_problem
from factinject.sheet.relation_names import canonical_relation, relation_problem


def error_of(text: str) -> FactinjectError:
    with pytest.raises(FactinjectError) as info:
        parse_sheet(text, "s.md")
    assert info.value.where == "s.md" and info.value.fix, info.value.render()
    return info.value


# ---------------------------------------------------------------- keys

@pytest.mark.parametrize("line", [
    "- colour: Acme is painted in **the** colour teal.",
    "- status: Acme **is** stable.",
    "- size: Acme is **a** small tool.",
    "- mood: Acme is happy with it. (key: it)",
    "- scope: Acme is one **of the** used tools.",
    "- ready: Acme is ready: **yes**.",
])
def test_common_word_keys_are_refused(line):
    err = error_of(f"# Acme\n{line}\n")
    assert err.line == 2 and "common words" in err.what, err.render()


def test_no_as_key_only_for_a_negative_fact():
    # A bold "no" makes a yes/no fact ("Does Acme ...? No"), never "what is the cloud of Acme? ... no ...".
    sheet = parse_sheet("# Acme\n- cloud: Acme is built with **no** cloud at all.\n", "s.md")
    assert sheet.facts[0].polarity == "negative"
    with pytest.raises(FactinjectError, match="cannot turn this negative fact into a yes/no question") as info:
        expand_sheets([sheet])
    assert info.value.line == 2
    sheet = parse_sheet("# Acme\n- windows: Acme does not run on Windows.\n- cloud: Acme does not need a cloud. (key: no)\n")
    assert [f.polarity for f in sheet.facts] == ["negative", "negative"]


def test_keys_that_normalise_to_nothing_are_refused_and_symbols_are_matchable():
    err = error_of("# Acme\n- mark: Acme's logo is a dash: **—**.\n")
    assert err.line == 2 and "no letters, digits or symbols" in err.what
    sheet = parse_sheet("# Acme\n- mascot: Acme's mascot is **🦅**.\n- language: Acme is written in **C++**.\n"
                        "- dialect: Acme's scripts are in **C#**.\n")
    keys = [f.answer_key for f in sheet.facts]
    assert keys == ["🦅", "C++", "C#"]
    # An emoji key is scored at all (it used to normalise to nothing and never match) ...
    assert contains_key(sheet.facts[0].statement, "🦅") and not contains_key("Its mascot is a cat.", "🦅")
    # ... and a symbol is part of the key: "C" is not "C++" nor "C#".
    assert contains_key("It is written in C++.", "C++") and not contains_key("It is written in C.", "C++")
    assert contains_key("Scripts use C#!", "C#") and not contains_key("Scripts use C.", "C#")
    assert contains_key("It is **MIT** licensed", "MIT"), "markdown bold in an answer still matches"


def test_key_problem_accepts_ordinary_keys():
    for key in ("MIT", "Jason Cox", "4.2.1", "41", "The Hague", "no more than 3", "Tromsø", "سميرة حداد"):
        assert key_problem(key) is None, key
    assert key_problem("no", allow=("no",)) is None
    assert key_problem("no") is not None and key_problem("of the") is not None and key_problem("...") is not None


# ---------------------------------------------------------------- one relation, two names

@pytest.mark.parametrize("first, second", [
    ("license: Acme is released under the **MIT** license.", "licence: Acme is released under the **BSD** licence."),
    ("home page: Acme lives at https://acme.example.", "website: Acme's site is https://acme.example.org."),
    ("maintainer: Acme is maintained by **Ann**.", "maintainers: Acme is maintained by **Ann and Bo**."),
    ("colour: Acme is **teal**.", "color: Acme is **red**."),
    ("number of users: Acme has **40** users.", "user count: Acme has **41** users."),
])
def test_near_synonym_relations_with_different_keys_are_a_contradiction(first, second):
    err = error_of(f"# Acme\n- {first}\n- other: Acme is **fine**.\n- {second}\n")
    assert err.line == 4 and "(line 2)" in err.what and "two different keys" in err.what, err.render()


def test_one_relation_written_twice_with_the_same_key():
    err = error_of("# Acme\n- license: Acme is **MIT** licensed.\n- licence: Acme uses the **MIT** licence.\n")
    assert err.line == 3 and "written twice" in err.what


def test_distinct_relations_stay_distinct():
    sheet = parse_sheet("# Acme\n- founder: Acme was founded by **Ann**.\n- founded: Acme was founded in **2001**.\n"
                        "- url: Acme is at https://acme.example.\n- repository: Acme's code is at https://git.example/acme.\n"
                        "- home city: Acme is based in **Ghent**.\n- release year: Acme came out in **2002**.\n"
                        "# Bolt\n- license: Bolt is **MIT** licensed.\n- licence note: Bolt's licence is **short**.\n")
    assert len(sheet.facts) == 8
    assert canonical_relation("Licences") == canonical_relation("licensing") == "license"
    assert canonical_relation("founder") != canonical_relation("founded")


# ---------------------------------------------------------------- language

@pytest.mark.parametrize("line", [
    "- founding year: Die Bäckerei wurde **1902** gegründet.",
    "- city: La boulangerie est située à **Lyon** depuis 1920.",
    "- language: El proyecto está escrito en **Rust**.",
    "- capital: Москва — столица **России**.",
])
def test_a_sheet_in_another_language_is_refused(line):
    err = error_of(f"# Die Bäckerei\nid: baeckerei\n- owner: Die Bäckerei is owned by **Anna Huber**.\n{line}\n")
    assert err.line == 4 and "English" in err.what, err.render()


def test_names_and_keys_may_be_in_any_language():
    sheet = parse_sheet("# مكتبة النور\nid: maktaba\naliases: Al-Nour Library\n"
                        "- founder: مكتبة النور was founded by **سميرة حداد**.\n"
                        "- city: The library is in **Zürich**.\n- motto: Its motto is **Vorsprung durch Technik**.\n"
                        "- maintainers: It is maintained by **Ines Carvalho and Piet de Wit**.\n")
    assert len(sheet.facts) == 4
    assert language_problem("Acme was founded by Jean de la Fontaine in Paris.", ["Acme"], "Paris") is None


# ---------------------------------------------------------------- relation names

@pytest.mark.parametrize("relation, reason", [
    ("version (latest)", "contains '(' and ')'"),
    ("C++ standard", "contains '+'"),
    ("input/output format", "contains '/'"),
    ("2nd maintainer", "starts with '2'"),
    ("gründungsjahr", "non-English letters ('ü')"),
    ("a" * 61, "61 characters long"),
])
def test_relation_names_outside_the_rule_say_what_is_allowed(relation, reason):
    err = error_of(f"# Acme\n- license: Acme is **MIT**.\n- {relation}: Acme is **fine**.\n")
    assert err.line == 3 and reason in err.what and "is not allowed" in err.what, err.render()
    assert "at most 60 characters" in err.fix and "ASCII letters" in err.fix
    question = error_of(f"# Acme\n- license: Acme is **MIT**.\n## Questions\n- {relation}: Is it fine? => Yes\n")
    assert question.line == 4 and reason in question.what


def test_allowed_relation_names():
    for name in ("license", "release year", "number of contributors", "owner's name", "release_year", "e-mail",
                 "a" * 60, "top 10 list"):
        assert relation_problem(name) is None, name
    sheet = parse_sheet("# Acme\n- top 10 list: Acme's top 10 list starts with **Bolt**.\n")
    assert sheet.facts[0].id == "acme/top-10-list"
