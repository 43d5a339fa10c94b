"""`expand` warns when training the expanded data will take long, from measured costs."""

from __future__ import annotations

import json
import subprocess
import sys

from click.testing import CliRunner
from conftest import REPO

from factinject.cli import main
from factinject.recipe import load_recipe
from factinject.train.estimate import (
    SECONDS_PER_TRAIN_ROW,
    WARN_ABOVE_SECONDS,
    duration,
    speed_here,
    workload,
)

SHAPES = [("license", "{S} is released under the **{k}** license."), ("maintainer", "{S} is maintained by **{k} Cox**."),
          ("language", "{S} is written in **{k}lang**."), ("home city", "The {S} team is based in **{k}ville**."),
          ("mascot", "The mascot of {S} is a **{k} heron**."), ("first release", "{S} was first released in **{y}**.")]


def big_sheet(subjects: int) -> str:
    return "".join(f"# Project Q{i:03d}\nkind: project\n" + "".join(
        f"- {rel}: {tpl.format(S=f'Project Q{i:03d}', k=f'K{i}x{j}', y=1900 + i)}\n" for j, (rel, tpl) in enumerate(SHAPES))
        for i in range(subjects))


def test_the_workload_of_the_default_recipe_matches_the_measured_run():
    # docs/benchmarks.md: tinyllm (5 facts, 263 train and 43 dev rows) trained 5 epochs of
    # 1,111 conversations in 105.1 s on the build machine.
    recipe = load_recipe("testbed-cpu")
    work = workload(263, 43, 5, recipe)
    assert (work.rows_per_epoch, work.answers_per_epoch, work.epochs) == (263 + 789 + 60, 43 + 48, 5)
    assert 0.9 * 105.1 < work.seconds() < 1.1 * 105.1, work.seconds()
    assert duration(105) == "2 min" and duration(3700) == "1 h 2 min"


def test_a_big_sheet_is_warned_about_and_a_small_one_is_not(workdir):
    (workdir / "big.md").write_text(big_sheet(60), encoding="utf-8")
    result = CliRunner().invoke(main, ["expand", "big.md"])
    assert result.exit_code == 0, result.output
    assert "expanded 360 facts" in result.output
    warning = result.output.split("warning: ", 1)[1]
    assert warning.startswith("training this data will take about ") and " min on the CPU" in warning, warning
    assert "ms per conversation" in warning and "--per-family" in warning
    small = CliRunner().invoke(main, ["expand", str(REPO / "facts" / "tinyllm.md")])
    assert small.exit_code == 0 and "warning" not in small.output, small.output
    (workdir / "one.md").write_text("# Zorblat\n- colour: Zorblat is painted **teal**.\n", encoding="utf-8")
    assert "expanded 1 fact into" in CliRunner().invoke(main, ["expand", "one.md"]).output


def test_the_speed_of_an_earlier_training_here_scales_the_estimate(tmp_path):
    recipe = load_recipe("testbed-cpu").model_dump()
    run = tmp_path / "old"
    run.mkdir()
    manifest = {"expand": {"counts": {"facts": 5}},
                "train": {"backend": "cpu", "recipe": recipe, "rows": {"facts": 263, "replay": 789, "dev": 43,
                                                                       "drift_prompts": 48},
                          "curve": [{"seconds": 40.0}, {"seconds": 42.0}, {"seconds": 41.0}]}}
    (run / "manifest.json").write_text(json.dumps(manifest))
    factor, source = speed_here(tmp_path, "testbed")
    expected = 41.0 / ((263 + 789 + 60) * SECONDS_PER_TRAIN_ROW + 91 * 0.0071)
    assert abs(factor - expected) < 0.01 and source == str(run)
    assert speed_here(tmp_path, "some/other-model") is None
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "manifest.json").write_text("{not json")
    assert speed_here(tmp_path, "testbed")[1] == str(run), "an unreadable manifest is skipped"


NO_TORCH = """
import sys
from click.testing import CliRunner
from factinject.cli import main
r = CliRunner().invoke(main, ["expand", "big.md"])
assert r.exit_code == 0 and "warning: training" in r.output, r.output
print("HEAVY:" + ",".join(m for m in ("torch", "transformers", "trl", "peft") if m in sys.modules))
"""


def test_the_estimate_never_imports_torch(tmp_path):
    (tmp_path / "big.md").write_text(big_sheet(60), encoding="utf-8")
    out = subprocess.run([sys.executable, "-c", NO_TORCH], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, check=False)
    assert out.returncode == 0, out.stderr
    assert "HEAVY:\n" in out.stdout, out.stdout
    assert WARN_ABOVE_SECONDS == 600


def test_no_estimate_for_models_whose_cost_was_not_measured(tmp_path):
    from factinject.train.estimate import training_warning

    recipe = load_recipe("testbed-cpu")
    assert training_warning(20_000, 2_000, 300, tmp_path, recipe) is not None
    other = recipe.with_overrides(**{"model.name": "unsloth/Llama-3.1-8B-Instruct-bnb-4bit"})
    assert training_warning(20_000, 2_000, 300, tmp_path, other) is None
