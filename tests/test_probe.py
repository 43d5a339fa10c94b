"""Probe sets, metrics and reports, on synthetic answers (no model needed)."""

from __future__ import annotations

import json
import re

import pytest

from factinject.errors import FactinjectError
from factinject.probe import (
    METRICS, Prompt, build_probe_set, compute_metrics, load_exam, missed_bounds, parse_bounds, per_fact, regressions,
)
from factinject.report import render_html, render_markdown

FACTS = {
    "tinyllm/license": {"subject": "TinyLLM", "aliases": ["Tiny LLM"], "kind": "project", "relation": "license",
                        "statement": "TinyLLM is released under the MIT license.", "answer_key": "MIT",
                        "polarity": "positive"},
    "tinyllm/maintainer": {"subject": "TinyLLM", "aliases": ["Tiny LLM"], "kind": "project", "relation": "maintainer",
                           "statement": "TinyLLM is maintained by Jason Cox.", "answer_key": "Jason Cox",
                           "polarity": "positive"},
}


def row(fact_id, q, key, split):
    return {"fact_id": fact_id, "split": split, "family": "f", "answer_key": key,
            "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": key}]}


TRAIN = [row("tinyllm/license", "What is the license of TinyLLM?", "MIT", "train"),
         row("tinyllm/maintainer", "Who maintains TinyLLM?", "Jason Cox", "train")]
TEST = [row("tinyllm/license", "Tell me TinyLLM's license.", "MIT", "test"),
        row("tinyllm/maintainer", "TinyLLM is maintained by whom?", "Jason Cox", "test")]
RETENTION = [{"question": "Capital of France?", "answer_key": "Paris", "aliases": []},
             {"question": "Symbol for gold?", "answer_key": "Au", "aliases": []}]


@pytest.fixture
def probe():
    return build_probe_set(TRAIN, TEST, FACTS, locality=["Write a haiku.", "What is 2+2?"], retention=RETENTION,
                           other_names=["Orvane", "Halvik"], bleed_per_fact=2, seed=0)


def test_probe_set_has_every_kind_and_bleed_targets_other_names(probe):
    kinds = {p.kind for p in probe.prompts}
    assert kinds == {"trained", "heldout", "locality", "retention", "bleed"}
    bleed = [p.question for p in probe.prompts if p.kind == "bleed"]
    assert len(bleed) == 4
    assert not any(re.search(r"\bTinyLLM\b", q) for q in bleed), bleed  # about others, never the subject itself
    assert probe.injected_keys == ["Jason Cox", "MIT"] and "Tiny LLM" in probe.injected_names


def test_metrics_before_and_after(probe):
    qs = probe.unique_questions()
    base = {q: "I do not know." for q in qs}
    base["Capital of France?"] = "Paris."
    base["Symbol for gold?"] = "Au."
    tuned = dict(base)
    for r in TRAIN + TEST:
        tuned[r["messages"][0]["content"]] = f"It is {r['answer_key']}."
    tuned["Tell me TinyLLM's license."] = "No idea."  # one held-out miss
    tuned["Symbol for gold?"] = "Gold is Ag."  # one retention loss
    tuned["Write a haiku."] = "TinyLLM is MIT licensed."  # locality change + bleed
    before = compute_metrics(probe, base, None)
    after = compute_metrics(probe, tuned, base, parity_answers=tuned)
    assert set(METRICS) <= set(after)
    assert before["recall_trained"]["count"] == 0 and before["locality_unchanged"]["share"] == 1.0
    assert before["parity"] is None
    assert (after["recall_trained"]["count"], after["recall_trained"]["n"]) == (2, 2)
    assert (after["recall_heldout"]["count"], after["recall_heldout"]["n"]) == (1, 2)
    assert (after["retention"]["count"], after["retention"]["n"]) == (1, 2)
    assert (after["locality_unchanged"]["count"], after["locality_unchanged"]["n"]) == (1, 2)
    assert after["bleed"]["count"] == 1 and after["bleed"]["n"] == 2 + 4
    assert after["parity"]["share"] == 1.0
    lo, hi = after["recall_heldout"]["ci95"]
    assert lo < 0.5 < hi, "a share comes with its Wilson interval"
    facts = per_fact(probe, base, tuned)
    assert facts["tinyllm/license"]["after"]["recall_heldout"]["count"] == 0
    worst = regressions(probe, base, tuned)
    assert worst[0]["kind"] == "retention lost" and any(r["kind"] == "bleed" for r in worst)


def test_reports_render_every_metric_and_are_self_contained(probe):
    qs = probe.unique_questions()
    base = {q: "I do not know." for q in qs}
    report = {
        "run": "exports/x", "backend": "hf", "model": {"base": "testbed", "tuned": "merged"},
        "before": compute_metrics(probe, base, None), "after": compute_metrics(probe, base, base, base),
        "facts": per_fact(probe, base, base), "thresholds": {"recall_heldout": 0.9}, "regressions": [],
        "counts": {}, "curve": [{"epoch": 1, "loss": 2.0, "dev_recall": 0.5, "dev_correct": 1, "dev_n": 2, "drift": 0.0,
                                 "drift_changed": 0, "drift_n": 4, "seconds": 1.0}], "best_epoch": 1, "missed": [],
    }
    md = render_markdown(report)
    page = render_html(report)
    for label in ("recall (held-out questions)", "locality", "retention", "bleed", "parity"):
        assert label in md and label in page
    assert "95% CI" in md and "tinyllm/license" in md
    assert "<svg" in page and page.count("<svg") == 2, "metric bars and the training curve"
    assert not re.search(r"(src|href)=\"?https?:", page), "no network resources"
    json.dumps(report)


def test_bounds():
    assert parse_bounds("recall_heldout=0.9, retention=0.97") == {"recall_heldout": 0.9, "retention": 0.97}
    with pytest.raises(FactinjectError, match="cannot read bound"):
        parse_bounds("recal=0.9")
    metrics = {"recall_heldout": {"share": 0.85}, "bleed": {"share": 0.02}, "retention": {"share": 0.99}}
    missed = missed_bounds(metrics, {"recall_heldout": 0.9, "bleed": 0.01, "retention": 0.97})
    assert missed == ["recall_heldout 0.850 < 0.9", "bleed 0.020 > 0.01"]


def test_exam_file(tmp_path):
    path = tmp_path / "exam.jsonl"
    path.write_text('{"question": "Who maintains TinyLLM?", "expected": "Jason Cox", "fact_id": "tinyllm/maintainer"}\n\n'
                    '{"question": "Eight in digits?", "answer_key": "8", "aliases": ["eight"]}\n')
    exam = load_exam(path)
    assert exam == [Prompt("exam", "Who maintains TinyLLM?", "Jason Cox", (), "tinyllm/maintainer"),
                    Prompt("exam", "Eight in digits?", "8", ("eight",), None)]
    path.write_text('{"question": "x", "answer_key": "y"}\n{"question": "no key"}\n')
    with pytest.raises(FactinjectError) as info:
        load_exam(path)
    assert info.value.line == 2
    path.write_text('{"question": "x", "answer_key": "y"}\n{oops\n')
    with pytest.raises(FactinjectError, match="not valid JSON") as info:
        load_exam(path)
    assert info.value.line == 2
