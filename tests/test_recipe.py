"""Recipes: every shipped recipe validates; bad ones fail with file, line and a hint;
model recipes change the method only where they say so; recipes ship with the package."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest
import yaml
from conftest import REPO

from factinject.errors import FactinjectError
from factinject.recipe import (
    METHOD,
    MODEL_KEYS,
    RECIPES_DIR,
    Recipe,
    flatten,
    load_recipe,
    method_deviations,
)

RECIPES = sorted(RECIPES_DIR.rglob("*.yaml"))


def test_the_required_recipes_exist():
    names = {p.name for p in RECIPES}
    assert {"method.yaml", "testbed-cpu.yaml", "llama-3.1-8b-instruct.yaml", "qwen2.5-7b-instruct.yaml",
            "qwen2.5-0.5b-instruct.yaml", "gemma-2-9b-it.yaml"} <= names
    assert (REPO / "recipes").resolve() == RECIPES_DIR, "recipes/ is where users find them"


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(RECIPES_DIR)))
def test_every_recipe_validates_and_opens_with_its_command(path):
    recipe = load_recipe(path)
    assert isinstance(recipe, Recipe)
    first = path.read_text().splitlines()[0]
    rel = path.relative_to(RECIPES_DIR)
    assert first in (f"# factinject train --recipe recipes/{rel}",
                     f"# factinject run facts/tinyllm.md --recipe recipes/{rel}"), first
    assert "lm_head" not in recipe.lora.target_modules and "embed_tokens" not in recipe.lora.target_modules


def test_the_method_sets_every_method_key_itself():
    """No schema default leaks into a run: the method file spells out every key it owns."""
    own = set(flatten(yaml.safe_load((RECIPES_DIR / METHOD).read_text())))
    schema = {k for k in flatten(Recipe().model_dump()) if k.split(".")[0] in ("lora", "train", "stop", "generate",
                                                                            "export")}
    optional = {"generate.batch_size", "generate.max_lora_rank"}  # None means: chosen per device / from lora.r
    assert schema - optional <= own, sorted(schema - optional - own)


@pytest.mark.parametrize("path", [p for p in RECIPES if p.name != METHOD], ids=lambda p: str(p.relative_to(RECIPES_DIR)))
def test_a_model_recipe_changes_the_method_only_where_it_says_why(path):
    deviations = method_deviations(path)
    said = load_recipe(path).method_changes
    unsaid = sorted(set(deviations) - set(said))
    assert not unsaid, f"{path.name} changes the method without saying why: {unsaid} (list them under method_changes)"
    stale = sorted(set(said) - set(deviations))
    assert not stale, f"{path.name} lists method_changes it does not make: {stale}"
    assert all(isinstance(why, str) and why.strip() for why in said.values())


def test_drifting_from_the_method_is_caught(tmp_path):
    path = tmp_path / "drift.yaml"
    path.write_text("extends: llama-3.1-8b-instruct.yaml\ntrain:\n  replay_ratio: 0.5\n  learning_rate: 0.0001\n")
    assert set(method_deviations(path)) == {"train.replay_ratio"}, "a learning rate is a model setting"
    assert "train.learning_rate".startswith(MODEL_KEYS)
    path.write_text("extends: llama-3.1-8b-instruct.yaml\nmethod_changes:\n  train.replay_ratio: less replay fits "
                    "a smaller card\ntrain:\n  replay_ratio: 0.5\n")
    assert load_recipe(path).train.replay_ratio == 0.5 and set(method_deviations(path)) == {"train.replay_ratio"}


def test_extends_folds_in_the_base_and_own_keys_win(tmp_path):
    (tmp_path / "base.yaml").write_text("train:\n  batch_size: 4\n  grad_accum: 4\n")
    (tmp_path / "child.yaml").write_text("extends: base.yaml\ntrain:\n  grad_accum: 2\n")
    recipe = load_recipe(tmp_path / "child.yaml")
    assert (recipe.train.batch_size, recipe.train.grad_accum) == (4, 2)
    assert recipe.train.replay_ratio == load_recipe(RECIPES_DIR / METHOD).train.replay_ratio, "base.yaml extends the method"
    assert load_recipe("llama-3.1-8b-instruct").model.load_in_4bit and load_recipe("fixtures/qwen2.5-7b-instruct")
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(FactinjectError, match="in a circle"):
        load_recipe(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("model:\n  name: x\nextends: nowhere.yaml\n")
    with pytest.raises(FactinjectError, match="neither next to this recipe nor shipped") as info:
        load_recipe(tmp_path / "c.yaml")
    assert info.value.line == 3


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
        ("export:\n  max_shard_size: lots\n", "export.max_shard_size", 2, None),
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


def test_a_regular_install_finds_the_recipes(tmp_path):
    """Recipes are package data: a wheel carries them, and an install that is not
    editable (no checkout next to it) loads the default and every shipped recipe."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(REPO)], check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("factinject-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {str(p.relative_to(RECIPES_DIR)) for p in RECIPES}
    assert {f"factinject/recipes/{n}" for n in shipped} <= set(names)
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    code = ("import factinject, factinject.recipe as r; assert 'site' in factinject.__file__, factinject.__file__; "
            "r.load_recipe(); [r.load_recipe(n) for n in r.recipe_names()]; print(len(r.recipe_names()))")
    out = subprocess.run([sys.executable, "-S", "-c", f"import sys; sys.path[:0] = [{str(site)!r}] + "
                          f"[p for p in {sys.path!r} if 'site-packages' in p]; {code}"],
                         cwd=tmp_path, check=True, capture_output=True, text=True)
    assert int(out.stdout.strip()) == len(shipped)
