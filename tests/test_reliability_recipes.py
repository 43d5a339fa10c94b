"""The reliability catalogue (tests/reliability.py): recipes."""

from __future__ import annotations

import pytest
from reliability import TINY_RECIPE, expect_error, invoke, snapshot

pytestmark = pytest.mark.usefixtures("one_thread", "small_parity")


RECIPES = {
    "unknown-key": ("train:\n  epoch: 3\n", "unknown key 'train.epoch'", 2, "did you mean 'epochs'"),
    "wrong-type": ("train:\n  batch_size: many\n", "train.batch_size", 2, "docs/recipes.md"),
    "rank-0": ("lora:\n  r: 0\n", "lora.r: Input should be greater than or equal to 1", 2, "correct the value"),
    "negative-lr": ("train:\n  learning_rate: -0.001\n", "train.learning_rate: Input should be greater than 0", 2,
                    "correct the value"),
    "too-short-max-length": ("model:\n  max_seq_length: 8\n", "model.max_seq_length", 2, "correct the value"),
    "not-a-mapping": ("- a\n- b\n", "must be a mapping", None, "recipes/testbed-cpu.yaml"),
    "bad-yaml": ("train:\n  epochs: [1\n", "not valid YAML", 3, "indentation or quoting"),
}


@pytest.mark.parametrize("case", sorted(RECIPES))
def test_recipe_errors(expanded, workdir, case):
    text, what, line, fix = RECIPES[case]
    (workdir / "bad.yaml").write_text(text)
    before = snapshot(expanded)
    result = invoke("train", "--run", expanded, "--recipe", "bad.yaml")
    expect_error(result, what=what, where=f"bad.yaml:{line}" if line else "bad.yaml", fix=fix)
    assert snapshot(expanded) == before


@pytest.mark.parametrize("flags, what", [(["--rank", "0"], "lora.r"), (["--lr", "-1"], "train.learning_rate"),
                                         (["--epochs", "0"], "--epochs must be at least 1")])
def test_flag_overrides_are_validated(expanded, flags, what):
    expect_error(invoke("train", "--run", expanded, *flags), what=what, fix="")


def test_max_length_smaller_than_longest_row(expanded, workdir):
    (workdir / "short.yaml").write_text(TINY_RECIPE.format(model="testbed", epochs=1).replace("160", "20"))
    result = invoke("train", "--run", expanded, "--recipe", "short.yaml")
    expect_error(result, what="longer than model.max_seq_length=20", fix="raise model.max_seq_length to at least")
    assert not (expanded / "adapter").exists()
