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


def _run(heldout=1.0, exam=0.95, locality=0.97, bleed=0.0, retention=0.99, base=1.0, parity=1.0):
    after = {"recall_heldout": {"share": heldout}, "exam": {"share": exam}, "locality_unchanged": {"share": locality},
             "bleed": {"share": bleed}, "retention": {"share": retention}, "parity": {"share": parity}}
    return {"after": after, "before": {"retention": {"share": base}}}


def test_quality_bar_is_checked_on_the_mean_over_seeds():
    quality = _load("quality")
    assert quality.check_bar([_run(), _run()]) == []
    # One seed below the bar, the mean above it: met.
    assert quality.check_bar([_run(heldout=0.93), _run(heldout=0.99)]) == []
    missed = quality.check_bar([_run(exam=0.80), _run(exam=0.90)])
    assert len(missed) == 1 and missed[0].startswith("exam mean 0.850"), missed
    assert any("bleed" in m for m in quality.check_bar([_run(bleed=0.02), _run(bleed=0.01)]))
    assert any("retention" in m for m in quality.check_bar([_run(retention=0.97, base=1.0)]))
    assert any("parity" in m for m in quality.check_bar([_run(), _run(parity=0.99)]))


def test_quality_finds_the_exam_next_to_the_sheet():
    quality = _load("quality")
    assert quality.exam_path("facts/tinyllm.md") == REPO / "facts" / "tinyllm.exam.jsonl"
    assert quality.exam_path("facts/kestrel.md") is None


def test_the_pareto_chart_takes_any_two_probe_metrics_and_rings_the_front():
    pareto = _load("pareto")

    def run(config, heldout, kept, neighbours, bleed):
        share = lambda v: {"share": v}  # noqa: E731
        return {"config": config, "after": {"recall_heldout": share(heldout), "locality_tokens": share(kept),
                                            "neighbours_tokens": share(neighbours), "bleed": share(bleed)}}

    rows = [run("a", 0.9, 0.85, 0.80, 0.0), run("a", 1.0, 0.95, 0.90, 0.1), run("b", 0.9, 0.99, 0.70, 0.0)]
    default = {p["config"]: p for p in pareto.points(rows)}
    assert default["a"]["recall"] == pytest.approx(0.95) and default["a"]["kept"] == pytest.approx(0.90)
    assert default["a"]["runs"] == 2 and default["a"]["bleed"] == pytest.approx(0.05)
    pts = pareto.points(rows, x="neighbours_tokens")
    by = {p["config"]: p for p in pts}
    assert by["b"]["kept"] == pytest.approx(0.70)
    assert pareto.on_front(by["a"], pts) and not pareto.on_front(by["b"], pts), "a is better on both axes"
    page = pareto.svg(pts, "t", "neighbours kept", "held-out")
    assert "neighbours kept" in page and page.count("<circle") == 2 and 'stroke="black" stroke-width="2"' in page


def test_batches_drawn_by_length_pad_less_and_reach_the_trainer():
    """An epoch of short fact rows and long replayed answers (the SmolLM2 mix): batches
    drawn by length pad less than shuffled ones, grouped or not; and the recipe switch
    reaches the trainer as transformers' length-grouped sampler."""
    import random

    from factinject.backends.sft import sft_config
    from factinject.engines.records import TrainJob
    from factinject.recipe import Recipe

    padding = _load("train_padding")
    rng = random.Random(0)
    lengths = [rng.randint(40, 90) for _ in range(340)] + [rng.randint(60, 300) for _ in range(340)]
    real = sum(lengths)
    share = {(g, b): 1 - real / padding.computed(lengths, 16, 0, g, b)[0] for g in (False, True) for b in (False, True)}
    assert share[(True, True)] < share[(True, False)] < share[(False, False)], share
    assert share[(True, True)] < 0.10, share

    def config(batches):
        recipe = Recipe.model_validate({"train": {"batches": batches}})
        job = TrainJob(run_dir="r", model_name="m", model_path="m", recipe=recipe.model_dump(), fact_rows=[],
                       dev_rows=[], replay_prompts=[], drift_prompts=[])
        return sft_config(job, use_cpu=True).train_sampling_strategy

    assert (config("by_length"), config("shuffled")) == ("group_by_length", "random")


def test_the_sweep_table_gives_the_mean_per_variant_with_kl_and_counts():
    table = _load("sweep_table")

    def row(config, seed, held, kept, kl, retained):
        return {"config": config, "sheet": "facts/capitals.md", "seed": seed, "seconds": {"train": 100.0 + seed},
                "after": {"recall_heldout": {"share": held, "count": 0, "n": 14},
                          "neighbours_tokens": {"share": kept, "count": 0, "n": 1, "kl_per_token": kl},
                          "retention": {"share": retained / 145, "count": retained, "n": 145}}}

    rows = [row("kl", 0, 1.0, 0.90, 0.1, 78), row("kl", 1, 0.5, 0.92, 0.3, 79), row("plain", 0, 0.9, 0.8, 0.5, 70)]
    lines = table.table(rows, ("recall_heldout", "neighbours_tokens", "retention", "exam"), ("retention",))
    assert lines[0] == "| sheet | variant | seeds | recall_heldout | neighbours_tokens | retention | exam | training s |"
    assert lines[2] == "| capitals | kl | 0, 1 | 75.0 % | 91.0 % (0.200) | 78.5 of 145 | – | 100 |", lines[2]
    assert lines[3].startswith("| capitals | plain | 0 | 90.0 % | 80.0 % (0.500) | 70.0 of 145 |")
