"""Recipes: every shipped recipe validates; bad ones fail with file, line and a hint."""

from __future__ import annotations

import pytest

from conftest import REPO
from factinject.errors import FactinjectError
from factinject.recipe import Recipe, load_recipe

RECIPES = sorted((REPO / "recipes").glob("*.yaml"))


def test_the_required_recipes_exist():
    names = {p.name for p in RECIPES}
    assert {"testbed-cpu.yaml", "llama-3.1-8b-instruct.yaml", "qwen2.5-7b-instruct.yaml", "qwen2.5-0.5b-instruct.yaml"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_recipe_validates_and_opens_with_its_command(path):
    recipe = load_recipe(path)
    assert isinstance(recipe, Recipe)
    first = path.read_text().splitlines()[0]
    assert first == f"# factinject train --recipe recipes/{path.name}", first
    assert "lm_head" not in recipe.lora.target_modules and "embed_tokens" not in recipe.lora.target_modules


@pytest.mark.parametrize(
    "text, needle, line, fix",
    [
        ("train:\n  epoch: 3\n", "unknown key 'train.epoch'", 2, "did you mean 'epochs'"),
        ("lora:\n  rank: 8\n", "unknown key 'lora.rank'", 2, "known keys here: r, alpha"),
        ("trian:\n  epochs: 3\n", "unknown key 'trian'", 1, "did you mean 'train'"),
        ("lora:\n  r: 0\n", "lora.r", 2, None),
        ("train:\n  learning_rate: -0.1\n", "train.learning_rate", 2, None),
        ("train:\n  batch_size: many\n", "train.batch_size", 2, None),
        ("train:\n  epochs: zero\n", "train.epochs", 2, None),
        ("model:\n  backend: tpu\n", "model.backend", 2, None),
        ("- just\n- a list\n", "must be a mapping", None, None),
        ("train:\n  epochs: [1\n", "not valid YAML", 3, None),
    ],
)
def test_bad_recipes_are_named_precisely(tmp_path, text, needle, line, fix):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(FactinjectError) as info:
        load_recipe(path)
    err = info.value
    assert needle in err.what, err.render()
    assert err.where == str(path) and err.line == line, err.render()
    if fix:
        assert fix in err.fix


def test_flags_override_recipe_fields_and_are_validated():
    recipe = load_recipe(REPO / "recipes" / "testbed-cpu.yaml").with_overrides(**{"train.epochs": 3, "lora.r": None})
    assert recipe.train.epochs == 3 and recipe.lora.r == 16
    with pytest.raises(FactinjectError, match="train.learning_rate"):
        recipe.with_overrides(**{"train.learning_rate": 0})
