"""The benchmark scripts' own logic (their runs are too slow for the suite)."""

from __future__ import annotations

import importlib.util

import pytest
from conftest import REPO


def _load(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sweep_configs_parse_recipe_and_expander_overrides():
    sweep = _load("sweep")
    assert sweep.parse_config("base") == ("base", {})
    name, over = sweep.parse_config("q6r3 expand.max_questions_per_family=6 train.replay_ratio=3.0 lora.r=32")
    assert name == "q6r3" and over == {"expand.max_questions_per_family": 6, "train.replay_ratio": 3.0, "lora.r": 32}
    with pytest.raises(AssertionError, match="NAME KEY=VALUE"):
        sweep.parse_config("bad train.replay_ratio")


def test_sweep_table_gives_mean_and_range_per_config_and_sheet(capsys):
    sweep = _load("sweep")

    def result(config, seed, heldout):
        share = {m: {"share": 1.0} for m in sweep.METRICS}
        return {"config": config, "seed": seed, "sheet": "facts/tinyllm.md",
                "after": {**share, "recall_heldout": {"share": heldout}}}

    sweep.print_table([result("a", 0, 0.5), result("a", 1, 0.9), result("b", 0, 0.7)])
    lines = {line.split()[1]: line for line in capsys.readouterr().out.splitlines()[2:]}
    assert " 70.0 ( 50.0– 90.0)" in lines["a"] and lines["a"].split()[2] == "2"
    assert " 70.0 ( 70.0– 70.0)" in lines["b"]
