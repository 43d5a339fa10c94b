"""Answer budgets per probe set: where a verdict is decided, that a budget is a cut of
the longer answer, and that the shipped budgets change at most 1 % of the verdicts
measured on SmolLM2 (bench/results/answer_budgets.json, bench/answer_budgets.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from factinject.models.answer_cache import AnswerCache, base_answer_key, cached_generate_budgeted
from factinject.probe.budgets import (
    MAX_CHANGED,
    budget_for,
    changed_share,
    compared_positions,
    decided_at,
    locality_tokens_at,
    scored_positions,
)
from factinject.probe.sets import ProbeSet, Prompt
from factinject.recipe import PROBE_SETS, Recipe, load_recipe

MEASURED = Path(__file__).resolve().parents[1] / "bench" / "results" / "answer_budgets.json"


def pieces(*parts: str):
    """Token ids 0..n-1 standing for text pieces, and the decode that joins them."""
    return list(range(len(parts))), lambda ids: "".join(parts[i] for i in ids)


def test_a_key_is_decided_where_its_last_token_comes():
    ids, decode = pieces("The", " capital", " is", " Par", "is", ".", " It", " is", " old", ".")
    assert scored_positions(ids, "Paris", (), decode) == 5
    assert scored_positions(ids, "Rome", (), decode) == 0  # never given: any budget gives the same verdict
    assert scored_positions(ids, "Lutetia", ("capital",), decode) == 2  # an alias decides too


def test_every_cut_is_read_not_only_the_first_match():
    # "the MIT" matches whole-word after two pieces, "the MITRE" no longer: the whole
    # answer's verdict (no) is decided only after the third piece.
    ids, decode = pieces("the", " MIT", "RE", " license")
    assert scored_positions(ids, "MIT", (), decode) == 3
    assert decided_at(lambda n: n in (2, 5), 8) == 6


def test_pairs_are_decided_where_they_part_and_where_bleed_shows():
    probe = ProbeSet([], injected_keys=["Velmora"], injected_names=["Quill"])
    before, decode = pieces("Lyon", " is", " in", " France", ".", " Also", " Velmora")
    same = compared_positions([0, 1, 2, 3, 4], [0, 1, 2, 3, 4], probe, decode, unchanged=True)
    assert same == {"bleed": 0, "unchanged": 0}
    parted = compared_positions([0, 1, 2, 3, 4], [0, 1, 2, 5, 6], probe, decode, unchanged=True)
    assert parted == {"bleed": 5, "unchanged": 4}  # they part at the 4th token, the key completes at the 5th
    assert compared_positions([0, 1, 2], [0, 1, 2], probe, decode, unchanged=False) == {"bleed": 0}


def test_a_budget_changes_at_most_the_allowed_share():
    positions = list(range(1, 201))  # 200 verdicts decided after 1..200 tokens
    budget = budget_for(positions)
    assert budget == 200 and changed_share(positions, budget) == 0.0  # 1 % of 200 = 2 may change: 199, 200 > 198
    assert budget_for(positions, max_changed=0.05) == 192 and changed_share(positions, 192) <= 0.05
    assert budget_for([0, 0, 3]) == 8  # never below one step
    assert changed_share(positions, 100) == 0.5


def test_locality_over_the_first_tokens():
    forced = [{"agree_at": [1, 1, 0, 1], "kl_at": [0.0, 0.1, 0.5, 0.2]}, {"agree_at": [1, 0], "kl_at": [0.0, 0.4]}]
    assert locality_tokens_at(forced, 2) == {"tokens_kept": 0.75, "kl_per_token": pytest.approx(0.125), "tokens": 4}
    assert locality_tokens_at(forced, 64)["tokens"] == 6


def test_a_question_in_two_sets_gets_the_larger_budget():
    probe = ProbeSet([Prompt("heldout", "q1", "k"), Prompt("exam", "q1", "k"), Prompt("locality", "q2")], [], [])
    budgets = {"heldout": 24, "exam": 48, "locality": 16}
    assert probe.budgets(budgets.__getitem__) == [48, 16]


def test_recipe_budgets_default_to_the_answer_budget_and_never_exceed_it():
    recipe = Recipe.model_validate({"generate": {"max_new_tokens": 128, "budgets": {"heldout": 32}}})
    assert recipe.generate.budget("heldout") == 32 and recipe.generate.budget("locality") == 128
    capped = Recipe.model_validate({"generate": {"max_new_tokens": 64, "budgets": {"exam": 96}}})
    assert capped.generate.budget("exam") == 64  # max_new_tokens caps every answer
    with pytest.raises(ValueError, match="unrelated"):
        Recipe.model_validate({"generate": {"budgets": {"unrelated": 32}}})


def test_each_budget_has_its_own_place_in_the_answer_cache(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"\x08\0\0\0\0\0\0\0{}      ")

    def cache_for(budget):
        return AnswerCache(base_answer_key(model_folder=folder, chat_template=None, precision="float32",
                                           max_new_tokens=budget, engine="hf", versions={}, device="cpu"),
                           root=tmp_path / "answers")

    asked = []

    def generate(prompts, budgets):
        asked.append(list(zip(prompts, budgets)))
        return [f"{p}@{b}" for p, b in zip(prompts, budgets)], [True] * len(prompts)

    got = cached_generate_budgeted(cache_for, ["a", "b", "a"], [16, 64, 16], generate)
    assert got == (["a@16", "b@64", "a@16"], [True] * 3, 0) and asked == [[("a", 16), ("b", 64)]]
    again = cached_generate_budgeted(cache_for, ["a", "b", "c"], [64, 64, 16], generate)
    assert again[0] == ["a@64", "b@64", "c@16"] and again[2] == 1  # "a" at 64 is not "a" at 16
    assert asked[-1] == [("a", 64), ("c", 16)]


@pytest.mark.parametrize("refill", [False, True], ids=["batched", "refilled"])
def test_a_smaller_budget_is_a_cut_of_the_longer_answer(refill):
    """What the measurement rests on: greedy decoding with a budget of n tokens gives the
    first n tokens of the longer answer, so cutting measured answers is generating them
    with a smaller budget. Mixed budgets in one call, on both batching paths."""
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from factinject.backends.hf_generate import generate
    from factinject.testbed import load_heldout, model_dir

    model = AutoModelForCausalLM.from_pretrained(model_dir(), dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir())
    chats = [[{"role": "user", "content": r["question"] + " Say more."}] for r in load_heldout()[:24]]
    full_ids: list = []
    generate(model, tokenizer, chats, batch_size=8, max_new_tokens=40, token_ids=full_ids, refill=refill)
    budgets = [8, 12, 40] * 8
    cut_ids: list = []
    answers, finished = generate(model, tokenizer, chats, batch_size=8, max_new_tokens=budgets, token_ids=cut_ids,
                                 refill=refill)
    assert sum(len(g) >= 8 for _, g in full_ids) > 12, "most answers should be longer than the smallest budget"
    for (_, whole), (_, cut), budget in zip(full_ids, cut_ids, budgets):
        assert cut == whole[:budget]


def test_the_shipped_budgets_change_at_most_one_percent_of_the_measured_verdicts():
    """Lowering a budget in the SmolLM2 recipe below what the measurement needs fails here."""
    measured = json.loads(MEASURED.read_text(encoding="utf-8"))
    recipe = load_recipe("smollm2-135m-instruct")
    assert measured["full_budget"] == recipe.generate.max_new_tokens
    sets = measured["sets"]
    for kind in PROBE_SETS:
        budget = recipe.generate.budget(kind)
        if kind not in sets:  # a set not yet measured is never cut
            assert budget == recipe.generate.max_new_tokens, (kind, budget)
            continue
        assert sets[kind]["n"] > 0, kind
        assert changed_share(sets[kind]["positions"], budget) <= MAX_CHANGED, (kind, budget, sets[kind]["p99"])
    # the unrelated prompts' answers compared word for word, and the teacher-forced reference
    assert changed_share(sets["locality_unchanged"]["positions"], recipe.generate.budget("locality")) <= MAX_CHANGED
    assert recipe.generate.budget("teacher_forced") >= measured["locality_tokens"]["stable_from"]
