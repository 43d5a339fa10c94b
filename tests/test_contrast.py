"""Contrast prompts and replay sampling: what training asks about other names."""

from __future__ import annotations

import pytest
from conftest import FACTS

from factinject import controls
from factinject.expand.expander import ExpandConfig, expand_sheets
from factinject.expand.namesakes import namesakes
from factinject.scoring import contains_key
from factinject.sheet.factsheet import read_sheet
from factinject.train.contrast import (
    contrast_prompts,
    training_namesakes,
    training_other_names,
)


@pytest.fixture(scope="module")
def lumen():
    sheets = [read_sheet(FACTS / "lumen.md")]
    rows = expand_sheets(sheets, ExpandConfig()).rows
    facts = {f.id: {"subject": s.name, "aliases": list(s.aliases)} for sh in sheets for s in sh.subjects for f in s.facts}
    return [r for r in rows if r["split"] == "train"], facts


@pytest.mark.parametrize("name", ["TinyLLM", "Marrow Press", "Lumen Transit", "Jo", "Jason Cox"])
def test_training_namesakes_never_meet_the_probes(name):
    ours = training_namesakes(name)
    assert len(ours) >= 8
    assert not {n.lower() for n in ours} & {n.lower() for n in namesakes(name, [])}
    assert name.lower() not in {n.lower() for n in ours}


def test_training_namesakes_change_every_letter_position():
    # One-letter neighbours at every position, not just a few hand-picked edits:
    # otherwise the model learns those strings and still answers for "ProtosA".
    name = "ProtosAI"
    ours = set(training_namesakes(name))
    probe_side = set(namesakes(name, []))
    for i in range(1, len(name)):
        dropped = name[:i] + name[i + 1:]
        assert dropped in ours or dropped in probe_side, dropped
        assert any(len(n) == len(name) and sum(a != b for a, b in zip(n, name)) == 1 and n[i] != name[i] for n in ours), i
    assert any(sorted(n.lower()) == sorted(name.lower()) and n.lower() != name.lower() for n in ours), "an anagram"


def test_contrast_prompts_ask_train_questions_about_other_names(lumen):
    train, facts = lumen
    others = training_other_names(controls.other_names("testbed"))
    prompts = contrast_prompts(train, facts, others, per_fact=6, seed=3)
    assert len(prompts) >= 5 * len(facts), "about per_fact prompts for every fact"
    injected = [n for f in facts.values() for n in [f["subject"], *f["aliases"]]]
    for p in prompts:
        assert not any(contains_key(p, n) for n in injected), f"still names an injected subject: {p}"
    assert any(any(contains_key(p, o) for o in others) for p in prompts), "some ask about other subjects"
    assert prompts == contrast_prompts(train, facts, others, per_fact=6, seed=3)
    assert prompts != contrast_prompts(train, facts, others, per_fact=6, seed=4)
    assert contrast_prompts(train, facts, others, per_fact=0, seed=3) == []


def test_training_and_probe_other_names_are_disjoint():
    names = controls.other_names("testbed")
    ours = set(training_other_names(names))
    probe_side = {n for n in names if controls.pool_of(n) != "replay"}
    assert ours and probe_side and not ours & probe_side
    assert set(training_other_names(controls.GENERIC_NAMES)).isdisjoint(
        n for n in controls.GENERIC_NAMES if controls.pool_of(n) != "replay")


def test_replay_is_half_general_prompts():
    general = set(controls.general_prompts())
    replay = controls.replay_sample(controls.control_pools("testbed")["replay"], 100, seed=0)
    assert len(replay) == len(set(replay)) == 100
    assert sum(p in general for p in replay) == 50
    assert all(controls.pool_of(p) == "replay" for p in replay if p in general), "never a drift or locality prompt"
