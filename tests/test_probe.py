"""Probe sets, metrics and reports, on synthetic answers (no model needed)."""

from __future__ import annotations

import json
import re

import pytest

from factinject.errors import FactinjectError
from factinject.probe.exam import ExamQuestion, match_fact, read_exam
from factinject.probe.metrics import (
    METRICS,
    compute_metrics,
    missed_bounds,
    parse_bounds,
)
from factinject.probe.report import render_html, render_markdown
from factinject.probe.sets import (
    Prompt,
    answer_rows,
    build_probe_set,
    misses,
    per_fact,
    regressions,
)

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
    assert kinds == {"trained", "heldout", "locality", "retention", "bleed", "misspelling"}
    bleed = [p.question for p in probe.prompts if p.kind == "bleed"]
    mistyped = [p.question for p in probe.prompts if p.kind == "misspelling"]
    assert len(bleed) + len(mistyped) == 4
    assert not any(re.search(r"\bTinyLLM\b", q) for q in bleed + mistyped), bleed  # never the subject itself
    # The subject's own name mistyped is reported apart: a user typing it means the subject.
    assert mistyped == ["Which licensing terms cover TinyLL?"]
    assert not any(re.search(r"\b(TinyLL|TinyyLLM)\b", q) for q in bleed), bleed
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
    tuned["Which licensing terms cover TinyLL?"] = "It is MIT."  # the mistyped subject gets the fact
    before = compute_metrics(probe, base, None)
    after = compute_metrics(probe, tuned, base, parity_answers=tuned)
    assert {m.name for m in METRICS if m.needs is None} <= set(after)
    assert before["recall_trained"]["count"] == 0 and before["locality_unchanged"]["share"] == 1.0
    assert before["parity"] is None
    assert (after["recall_trained"]["count"], after["recall_trained"]["n"]) == (2, 2)
    assert (after["recall_heldout"]["count"], after["recall_heldout"]["n"]) == (1, 2)
    assert (after["retention"]["count"], after["retention"]["n"]) == (1, 2)
    assert (after["locality_unchanged"]["count"], after["locality_unchanged"]["n"]) == (1, 2)
    assert after["bleed"]["count"] == 1 and after["bleed"]["n"] == 2 + 3  # locality and other names
    assert (after["misspelling"]["count"], after["misspelling"]["n"]) == (1, 1)
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
    exam = read_exam(path)
    assert [(q.question, q.answer_key, q.aliases, q.fact_id, q.line) for q in exam.questions] == [
        ("Who maintains TinyLLM?", "Jason Cox", (), "tinyllm/maintainer", 1), ("Eight in digits?", "8", ("eight",), None, 3)]
    assert exam.record() == {"path": str(path), "sha256": __import__("hashlib").sha256(path.read_bytes()).hexdigest(),
                             "questions": 2}
    path.write_text('{"question": "x", "answer_key": "y"}\n{"question": "no key"}\n')
    with pytest.raises(FactinjectError) as info:
        read_exam(path)
    assert info.value.line == 2
    path.write_text('{"question": "x", "answer_key": "y"}\n{oops\n')
    with pytest.raises(FactinjectError, match="not valid JSON") as info:
        read_exam(path)
    assert info.value.line == 2


def test_exam_file_accepts_a_bom_and_crlf(tmp_path):
    path = tmp_path / "exam.jsonl"
    rows = ['{"question": "Who maintains TinyLLM?", "answer_key": "Jason Cox"}',
            '{"question": "Is TinyLLM free?", "answer_key": "yes", "aliases": ["MIT"]}']
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(rows).encode() + b"\r\n")
    exam = read_exam(path)
    assert [q.question for q in exam.questions] == ["Who maintains TinyLLM?", "Is TinyLLM free?"]
    assert exam.questions[1].line == 2 and exam.questions[1].aliases == ("MIT",)
    path.write_bytes(b"\xef\xbb\xbf" + rows[0].encode() + b"\r\n" + b'{"question": "Caf\xe9?", "answer_key": "x"}\r\n')
    with pytest.raises(FactinjectError, match="not valid UTF-8") as info:
        read_exam(path)
    assert info.value.line == 2


@pytest.mark.parametrize("line, what", [
    ('["Who?", "Ann"]', "must be a JSON object"),
    ('{"question": "Who?", "answer_kye": "Ann"}', "unknown field 'answer_kye'"),
    ('{"question": "Who?", "answer_key": "Ann", "expected": "Bo"}', "both 'answer_key' and 'expected'"),
    ('{"question": "", "answer_key": "Ann"}', "the question is empty"),
    ('{"question": "Who?", "answer_key": ["Ann"]}', "must be a non-empty string"),
    ('{"question": "Who?", "answer_key": "Ann", "aliases": "Annie"}', "'aliases' must be a list"),
    ('{"question": "Who?", "answer_key": "the"}', "only common words"),
    ('{"question": "Who?", "answer_key": "Ann", "aliases": ["of"]}', "only common words"),
    ('{"question": "Who?", "answer_key": "..."}', "no letters, digits or symbols"),
    ('{"question": "Who?", "answer_key": "Ann", "fact_id": "Tiny LLM"}', "is not a fact id"),
])
def test_exam_errors_name_the_line(tmp_path, line, what):
    path = tmp_path / "exam.jsonl"
    path.write_text('{"question": "Does it run on Windows?", "answer_key": "no"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(FactinjectError) as info:
        read_exam(path)
    assert what in info.value.what and info.value.line == 2 and info.value.where == str(path), info.value.render()
    assert info.value.fix


def test_exam_questions_are_matched_to_facts():
    def q(question, key, fact_id=None):
        return ExamQuestion(question, key, (), fact_id, "e.jsonl", 7)

    assert match_fact(q("Who keeps Tiny LLM going?", "Jason Cox"), FACTS) == "tinyllm/maintainer"  # key + alias
    assert match_fact(q("Under which terms is TinyLLM offered?", "MIT license"), FACTS) == "tinyllm/license"
    assert match_fact(q("Who keeps it going?", "Jason Cox"), FACTS) is None, "no subject named: not matched"
    assert match_fact(q("Who wrote ProtosAI?", "Jason Cox"), FACTS) is None
    assert match_fact(q("Anything?", "x", "tinyllm/license"), FACTS) == "tinyllm/license"  # fact_id wins
    with pytest.raises(FactinjectError, match="not a fact of this run") as info:
        match_fact(q("Anything?", "x", "tinyllm/colour"), FACTS)
    assert info.value.line == 7 and "tinyllm/license" in info.value.fix


def scored_probe():
    exam = [Prompt("exam", "Who keeps TinyLLM going?", "Jason Cox", (), "tinyllm/maintainer"),
            Prompt("exam", "What may I do with TinyLLM?", "MIT", ("MIT license",), "tinyllm/license"),
            Prompt("exam", "Unrelated?", "zebra", (), None)]
    probe = build_probe_set(TRAIN, TEST, FACTS, locality=["Write a haiku."], retention=RETENTION,
                            other_names=["Orvane"], bleed_per_fact=1, exam=exam, seed=0)
    base = {q: "I do not know." for q in probe.unique_questions()}
    base["Capital of France?"] = "Paris."
    tuned = dict(base)
    for r in TRAIN:
        tuned[r["messages"][0]["content"]] = f"It is {r['answer_key']}."
    tuned["TinyLLM is maintained by whom?"] = "Jason Cox maintains it."
    tuned["Tell me TinyLLM's license."] = "It is Apache."  # held-out miss
    tuned["Who keeps TinyLLM going?"] = "Jason Cox."
    tuned["What may I do with TinyLLM?"] = "Anything: it has an MIT license."
    tuned["Write a haiku."] = "TinyLLM is MIT licensed."
    return probe, base, tuned


def test_answers_rows_say_set_fact_key_and_verdict():
    probe, base, tuned = scored_probe()
    rows = answer_rows(probe, base, tuned)
    assert len(rows) == len(probe.prompts), "one row per probed prompt, also when a question is in two sets"
    assert {r["set"] for r in rows} == {"trained", "heldout", "exam", "locality", "retention", "bleed"}
    miss = next(r for r in rows if r["question"] == "Tell me TinyLLM's license.")
    assert miss == {"set": "heldout", "fact_id": "tinyllm/license", "question": "Tell me TinyLLM's license.",
                    "answer_key": "MIT", "before": "I do not know.", "after": "It is Apache.",
                    "correct_before": False, "correct_after": False}
    exam = next(r for r in rows if r["set"] == "exam" and r["fact_id"] == "tinyllm/license")
    assert exam["correct_after"] is True and exam["aliases"] == ["MIT license"]
    haiku = next(r for r in rows if r["question"] == "Write a haiku.")
    assert haiku["changed"] is True and haiku["bleed"] is True and "correct_after" not in haiku
    untrained = answer_rows(probe, base, None)
    assert all(r["after"] is None and r.get("correct_after") is None and r.get("changed") is None for r in untrained)
    json.dumps(rows)


def test_misses_are_grouped_per_fact_and_exam_is_scored_per_fact():
    probe, base, tuned = scored_probe()
    found = misses(probe, tuned)
    assert found["heldout"] == {"tinyllm/license": [{"question": "Tell me TinyLLM's license.", "answer_key": "MIT",
                                                      "answer": "It is Apache."}]}
    assert found["exam"] == {"": [{"question": "Unrelated?", "answer_key": "zebra", "answer": "I do not know."}]}
    facts = per_fact(probe, base, tuned)
    assert facts["tinyllm/license"]["after"]["recall_exam"]["count"] == 1
    assert facts["tinyllm/maintainer"]["before"]["recall_exam"]["count"] == 0
    assert facts["tinyllm/maintainer"]["after"]["recall_exam"]["n"] == 1


def report_for(probe, base, tuned, **extra) -> dict:
    report = {
        "run": "exports/x", "backend": "hf", "model": {"base": "testbed", "tuned": "merged" if tuned else None},
        "before": compute_metrics(probe, base, None), "after": compute_metrics(probe, tuned, base, tuned) if tuned else None,
        "facts": per_fact(probe, base, tuned), "thresholds": {}, "regressions": [], "missed": [],
        "counts": {"trained": 2, "heldout": 2, "exam": 3}, "curve": None, "best_epoch": None,
        "misses": misses(probe, tuned or base), "exam": [{"path": "facts/x.exam.jsonl", "sha256": "ab" * 32,
                                                          "questions": 3}], "next_step": None}
    return {**report, **extra}


def test_reports_list_every_miss_with_the_answer_and_the_exam_per_fact():
    probe, base, tuned = scored_probe()
    report = report_for(probe, base, tuned)
    md, page = render_markdown(report), render_html(report)
    for text in (md, page):
        assert "Misses: Held-out questions (1" in text and "Misses: Your exam (1" in text
        assert "It is Apache." in text and "Tell me TinyLLM&#x27;s license." in text.replace("'", "&#x27;")
        assert "not matched to a fact" in text and "exam before" in text and "exam after" in text
        assert "facts/x.exam.jsonl" in text and "abababababab" in text
    assert "| tinyllm/license | MIT | 0/1 | 1/1 | 0/1 | 0/1 | 0/1 | 1/1 |" in md
    assert "{" not in md.split("## Per fact")[1], "no raw Python dict in report.md"
    assert "Prompts probed: 2 trained, 2 held-out, 3 exam." in md
    assert "bound" not in md and "<th>bound</th>" not in page, "no empty bound column without bounds"
    bounded = render_markdown({**report, "thresholds": {"recall_heldout": 0.9}})
    assert "| metric | before | after | bound |" in bounded and ">= 0.9" in bounded


def test_report_of_an_untrained_run_says_what_to_run():
    from factinject.probe.stage import next_step
    from factinject.rundir.files import Run

    probe, base, _ = scored_probe()
    report = report_for(probe, base, None, next_step=next_step(Run("exports/x")))
    for text in (render_markdown(report), render_html(report)):
        assert "Not trained yet" in text and "factinject train --run exports/x" in text
        assert "factinject export --run exports/x --merged" in text


def test_curve_chart_labels_axes_the_drift_bound_and_a_readable_kept_epoch():
    from factinject.probe.report import _curve_chart

    curve = [{"epoch": i, "loss": 2.0 / i, "dev_recall": 0.2 * i, "dev_correct": i, "dev_n": 5, "drift": 0.02 * i,
              "drift_changed": i, "drift_n": 48, "seconds": 1.0} for i in range(1, 6)]
    svg = _curve_chart(curve, best=5, max_drift=0.1)
    assert ">epoch</text>" in svg and "dev recall and drift (%)" in svg
    assert 'class="bound"' in svg and "max drift 10%" in svg
    kept = re.search(r'<text x="([\d.]+)" y="[\d.]+" class="val" text-anchor="(\w+)">kept epoch 5', svg)
    width = float(re.search(r'viewBox="0 0 (\d+)', svg).group(1))
    assert kept and kept.group(2) == "end" and float(kept.group(1)) < width, "the last epoch's label ends inside the chart"
    first = _curve_chart(curve, best=1, max_drift=None)
    assert 'text-anchor="start">kept epoch 1' in first and 'class="bound"' not in first


def test_one_epoch_still_draws_its_loss_per_step_and_its_measurements():
    from factinject.probe.report import _curve_chart

    curve = [{"epoch": 1, "loss": 1.2, "dev_recall": 0.8, "dev_correct": 8, "dev_n": 10, "drift": 0.1,
              "drift_changed": 1, "drift_n": 10, "seconds": 1.0, "step_losses": [2.4, 1.9, 1.1, 0.6, 0.4]}]
    svg = _curve_chart(curve, best=1, max_drift=0.2)
    loss = re.search(r'<polyline points="([^"]+)" class="line loss">', svg).group(1).split()
    assert len(loss) == 5 and len({p.split(",")[0] for p in loss}) == 5, "one point per logging step, spread over the epoch"
    assert svg.count("<circle") == 2, "dev recall and drift, measured once, still show as dots"


def test_the_longest_metric_label_fits_left_of_the_bars():
    from factinject.probe.metrics import LABELS
    from factinject.probe.report import _bar_chart

    names = list(LABELS)
    report = {"before": {n: {"share": 0.5, "count": 1, "n": 2, "ci95": [0.1, 0.9]} for n in names}, "after": None}
    svg = _bar_chart(report)
    left = min(float(x) for x in re.findall(r'<rect x="([\d.]+)"', svg))
    longest = max(len(LABELS[n]) for n in names)
    assert left >= 6.6 * longest, (left, longest)


def test_the_answers_moved_most_are_listed_largest_kl_first():
    """Teacher-forced results per prompt become the report's list of the base answers the
    tuned model moved most (locality and neighbour sets only), shown in report.md."""
    from types import SimpleNamespace

    from factinject.probe.stage import moved_most

    probe = SimpleNamespace(prompts=[SimpleNamespace(kind=k, question=q) for k, q in (
        ("locality", "Name a fruit."), ("neighbour", "What is the capital of Spain?"), ("trained", "Who?"))])
    forced = {"Name a fruit.": {"tokens": 10, "agree": 10, "kl": 0.1},
              "What is the capital of Spain?": {"tokens": 20, "agree": 15, "kl": 4.0},
              "Who?": {"tokens": 5, "agree": 0, "kl": 50.0}}
    rows = moved_most(probe, forced)
    assert [r["question"] for r in rows] == ["What is the capital of Spain?", "Name a fruit."]
    assert rows[0] == {"set": "neighbour", "question": "What is the capital of Spain?", "tokens": 20, "kept": 15,
                       "kl_per_token": 0.2}
    probe_, base, tuned = scored_probe()
    report = report_for(probe_, base, tuned, moved_most=rows)
    md, page = render_markdown(report), render_html(report)
    assert "Answers moved most (teacher-forced)</h2>" in page and "<td>15/20</td><td>0.200</td>" in page
    assert "## Answers moved most (teacher-forced)" in md and "| neighbour | What is the capital of Spain? | 15/20 | 0.200 |" in md
