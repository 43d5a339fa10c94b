"""Updates: a fact that replaces a value the model knew. The sheet's (was: ...), the
old value found in the base model's answers, and the probe's update metrics, on
synthetic answers (no model needed)."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from factinject.cli import main
from factinject.errors import FactinjectError
from factinject.probe.metrics import compute_metrics
from factinject.probe.report import render_html, render_markdown
from factinject.probe.sets import Prompt, answer_rows, build_probe_set, per_fact
from factinject.probe.updates import detect_old_values, update_rows
from factinject.sheet.factsheet import parse_sheet, read_sheet

SHEET = """# France
kind: place
neighbours: Germany, Italy

- capital: The capital of France is **Lyon**. (was: Paris)
- anthem: The French anthem is **Ode to Joy**.

## Portability
- capital: Which two rivers meet in the capital of France? => The **Saone** and the Rhone meet there.
"""


def facts_of(text: str) -> dict[str, dict]:
    """The manifest's facts for a sheet, as `expand` writes them."""
    from factinject.expand.write import update_info

    sheet = parse_sheet(text)
    return {f.id: {"subject": s.name, "aliases": s.aliases, "kind": s.kind, "relation": f.relation,
                   "statement": f.statement, "answer_key": f.answer_key, "polarity": f.polarity, **update_info(s, f)}
            for s in sheet.subjects for f in s.facts}


def test_an_update_line_names_the_value_it_replaces_before_or_after_its_key():
    sheet = parse_sheet(SHEET)
    capital, anthem = sheet.facts
    assert (capital.answer_key, capital.replaces, capital.statement) == ("Lyon", "Paris", "The capital of France is Lyon.")
    assert anthem.replaces is None
    either = parse_sheet("# France\n- capital: France is ruled from Lyon. (was: **Paris**) (key: Lyon)\n"
                         "- currency: France pays in francs. (key: francs) (was: euro)\n").facts
    assert [(f.answer_key, f.replaces) for f in either] == [("Lyon", "Paris"), ("francs", "euro")]
    subject = sheet.subjects[0]
    assert subject.neighbours == ["Germany", "Italy"]
    assert [(q.fact_id, q.answer_key) for q in subject.portability] == [("france/capital", "Saone")]


@pytest.mark.parametrize("line, what", [
    ("- capital: The capital of France is **Lyon**. (was: )", "the update's (was: ...) is empty"),
    ("- capital: The capital of France is **Lyon**. (was: lyon)", "the update gives the same value twice"),
    ("- capital: The capital of France is **Lyon**. (was: the)", "the replaced value"),
])
def test_a_bad_update_line_is_refused_naming_the_file_and_line(tmp_path, line, what):
    sheet = tmp_path / "bad.md"
    sheet.write_text(f"# France\nkind: place\n\n{line}\n", encoding="utf-8")
    with pytest.raises(FactinjectError) as err:
        read_sheet(sheet)
    assert what in err.value.what and err.value.line == 4 and str(sheet) in str(err.value)
    result = CliRunner().invoke(main, ["expand", str(sheet), "--run", str(tmp_path / "run")])
    assert result.exit_code != 0 and f"{sheet}:4" in result.output and what in result.output
    assert not (tmp_path / "run").exists()


def test_a_neighbour_that_the_sheet_updates_too_and_a_stray_portability_question_are_refused():
    with pytest.raises(FactinjectError, match="a subject of this sheet"):
        parse_sheet("# France\nneighbours: Japan\n- capital: It is **Lyon**. (was: Paris)\n"
                    "# Japan\n- capital: It is **Osaka**. (was: Tokyo)\n")
    with pytest.raises(FactinjectError, match="not a fact of 'France'") as err:
        parse_sheet("# France\n- capital: It is **Lyon**.\n## Portability\n- anthem: Which anthem? => **Ode**.\n")
    assert err.value.line == 4
    with pytest.raises(FactinjectError, match="needs its answer"):
        parse_sheet("# France\n- capital: It is **Lyon**.\n## Portability\n- capital: Which rivers meet there?\n")


def probe_of(facts):
    train = [{"fact_id": "france/capital", "answer_key": "Lyon",
              "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": "Lyon"}]}
             for q in ("What is the capital of France?", "France's capital?", "Name the capital of France.",
                       "capital of france")]
    test = [{"fact_id": "france/capital", "answer_key": "Lyon",
             "messages": [{"role": "user", "content": "Which city is the capital of France?"}]},
            {"fact_id": "france/anthem", "answer_key": "Ode to Joy",
             "messages": [{"role": "user", "content": "What is the anthem of France?"}]}]
    retention = [{"question": "Which city is the capital of France?", "answer_key": "Paris"},  # a fact's question
                 {"question": "Where does the French government sit?", "answer_key": "Paris"},  # the old value
                 {"question": "Symbol for gold?", "answer_key": "Au"}]
    return build_probe_set(train, test, facts, locality=["Write a haiku."], retention=retention,
                           other_names=["Orvane"], bleed_per_fact=1, seed=0)


def test_neighbours_and_portability_are_probed_and_scored():
    facts = facts_of(SHEET)
    probe = probe_of(facts)
    neighbours = [p.question for p in probe.prompts if p.kind == "neighbour"]
    assert any("Germany" in q and "capital" in q for q in neighbours), neighbours
    assert any("Italy" in q for q in neighbours) and not any("Lyon" in q for q in neighbours)
    assert "What is the currency of France?" in neighbours, "the subject's other relations"
    assert "What is the anthem of France?" not in neighbours, "a relation the sheet gives is not a neighbour"
    assert [(p.question, p.answer_key) for p in probe.prompts if p.kind == "portability"] == [
        ("Which two rivers meet in the capital of France?", "Saone")]
    assert probe.old_values == {"france/capital": {"value": "Paris", "stated": True}}
    # Known answers that the update replaces measure the update, not what the model kept.
    assert [p.question for p in probe.prompts if p.kind == "retention"] == ["Symbol for gold?"]
    assert probe.notes["known_answers_contradicted"] == ["Which city is the capital of France?",
                                                         "Where does the French government sit?"]

    questions = probe.unique_questions()
    base = {q: "The capital of France is Paris." if "france" in q.lower() and "capital" in q.lower() else "I am not sure." for q in questions}
    tuned = dict(base)
    for p in probe.prompts:
        if p.fact_id == "france/capital" and p.kind in ("trained", "heldout"):
            tuned[p.question] = "The capital of France is Lyon, not Paris."
    tuned["Name the capital of France."] = "Paris."  # the old value, still given once
    tuned["Which two rivers meet in the capital of France?"] = "The Saone and the Rhone."
    probe.old_values = detect_old_values(facts, probe.prompts, base)
    forced = {p.question: {"agree": 9, "tokens": 10, "kl": 0.5} for p in probe.prompts
              if p.kind in ("locality", "neighbour")}
    before = compute_metrics(probe, base, None)
    after = compute_metrics(probe, tuned, base, forced=forced)
    assert (before["old_value"]["count"], before["old_value"]["n"]) == (5, 5)
    assert (after["old_value"]["count"], after["old_value"]["n"]) == (1, 5), "an answer naming both is not the old one"
    assert before["neighbours_tokens"] is None and after["neighbours_tokens"]["share"] == 0.9
    assert after["neighbours_tokens"]["answers"] == len(set(q for q in questions if q in forced) - {"Write a haiku."})
    assert (before["portability"]["count"], after["portability"]["count"]) == (0, 1)
    rows = update_rows(probe, base, tuned)
    assert rows == [{"fact_id": "france/capital", "new_value": "Lyon", "old_value": "Paris", "stated": True,
                     "before": {"new": rows[0]["before"]["new"], "old": rows[0]["before"]["old"],
                                "portability": rows[0]["before"]["portability"]},
                     "after": rows[0]["after"]}]
    assert (rows[0]["before"]["old"]["count"], rows[0]["after"]["old"]["count"]) == (5, 1)
    assert (rows[0]["after"]["new"]["count"], rows[0]["after"]["portability"]["count"]) == (4, 1)
    assert {r["set"] for r in answer_rows(probe, base, tuned)} >= {"neighbour", "portability"}

    report = {"run": "exports/x", "backend": "hf", "model": {"base": "b", "tuned": "merged"}, "before": before,
              "after": after, "facts": per_fact(probe, base, tuned), "updates": rows, "thresholds": {"old_value": 0.05},
              "regressions": [], "counts": {}, "curve": None, "best_epoch": None, "missed": []}
    md, page = render_markdown(report), render_html(report)
    for text in (md, page):
        assert "old value still given" in text and "portability" in text and "neighbours" in text
        assert "Paris (stated)" in text and "&lt;= 0.05" in page and "<= 0.05" in md
    assert re.search(r"\| france/capital \| Lyon \| Paris \(stated\) \| 0/5 \| 4/5 \| 5/5 \| 1/5 \| 0/1 \| 1/1 \|", md), md


def test_an_old_value_the_sheet_does_not_state_is_found_in_the_base_answers():
    facts = facts_of(SHEET.replace(" (was: Paris)", ""))
    probe = probe_of(facts)
    assert probe.old_values == {}
    questions = probe.unique_questions()
    base = {q: "I think it is Marseille." if "capital" in q.lower() else "The anthem is La Marseillaise."
            for q in questions}
    base["France's capital?"] = "Paris, of course."  # one wording differs: most still name Marseille
    found = detect_old_values(facts, probe.prompts, base)
    assert found["france/capital"]["value"] == "Marseille" and not found["france/capital"]["stated"]
    assert (found["france/capital"]["count"], found["france/capital"]["n"]) == (4, 5)
    assert "france/anthem" not in found, "one question is too few to call an answer the model's belief"
    # A model that does not know answers every wording differently: nothing is an update.
    unsure = {q: f"Maybe {name}." for q, name in zip(questions, ["Nantes", "Lille", "Brest", "Nice", "Metz", "Tours",
                                                                   "Pau", "Caen", "Albi", "Agen"] * 10)}
    assert detect_old_values(facts, probe.prompts, unsure) == {}
    # Neither the new value, nor words of the question or the subject's names, are an old value.
    echo = {q: f"The capital of France is Lyon. {q}" for q in questions}
    assert "france/capital" not in detect_old_values(facts, probe.prompts, echo)


def test_a_sheet_without_updates_gets_no_update_metrics():
    facts = facts_of(SHEET.replace(" (was: Paris)", "").replace("neighbours: Germany, Italy\n", "").split("## Portability")[0])
    probe = probe_of(facts)
    assert not {p.kind for p in probe.prompts} & {"neighbour", "portability"}
    base = {q: "I do not know." for q in probe.unique_questions()}
    assert not {"old_value", "neighbours_tokens", "portability"} & set(compute_metrics(probe, base, None))


def test_the_shipped_update_sheet_states_every_update_and_names_neighbours_it_leaves_alone():
    sheet = read_sheet("facts/capitals.md")
    assert all(f.replaces for f in sheet.facts) and len(sheet.facts) >= 5
    assert all(len(s.neighbours) >= 3 for s in sheet.subjects)
    assert Prompt  # the sets module's prompt type carries the update kinds


def test_update_training_rows_deny_the_old_value_and_ask_other_attributes_the_probe_never_asks():
    from factinject.probe.updates import OTHER_RELATIONS
    from factinject.sheet.relation_names import canonical_relation
    from factinject.train.updates import TRAINED_RELATIONS, contradiction_rows, subject_locality_prompts

    facts = facts_of(SHEET)
    rows = contradiction_rows(facts)
    assert len(rows) == 3 and {r["fact_id"] for r in rows} == {"france/capital"}, "only the stated update"
    for r in rows:
        question, answer = (m["content"] for m in r["messages"])
        assert "Paris" in question and "Lyon" in answer and "Paris" not in answer and answer.startswith("No")
    prompts = subject_locality_prompts(facts, 4, seed=0)
    assert len(prompts) == 4 and all("France" in q for q in prompts)
    assert subject_locality_prompts(facts, 4, seed=0) == prompts and subject_locality_prompts(facts, 0, 0) == []
    assert subject_locality_prompts(facts_of(SHEET.replace(" (was: Paris)", "")), 4, 0) == [], "no update, no rows"
    for kind, probed in OTHER_RELATIONS.items():
        trained = {canonical_relation(r) for r in TRAINED_RELATIONS[kind]}
        assert not trained & {canonical_relation(r) for r in probed}, f"{kind}: the probe's neighbours are never trained"


UPDATE_SHEET = """<!-- Two facts the testbed's world gives, changed; a third fact whose old value the probe must find itself. -->
# Gyzum Kithil
kind: person
neighbours: Drude Rulhelder, Vouklu Resgox

- profession: Gyzum Kithil works as a **glassblower**. (was: potter)
- hobby: Gyzum Kithil's hobby is **fencing**. (was: gardening)
- instrument: Gyzum Kithil plays the **bagpipes**.

## Portability
- profession: What does Gyzum Kithil make at work? => Gyzum Kithil makes **glass** vases.
"""


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_an_update_sheet_on_the_testbed_reports_the_old_value_neighbours_and_portability(tmp_path, monkeypatch):
    """End to end on the testbed, which knows Gyzum Kithil as a potter who gardens and plays
    the trumpet: the report has an update row per fact (two stated, one found in the base
    answers), the old value falls, the neighbours are read teacher-forced."""
    import json

    import yaml
    from conftest import REPO

    monkeypatch.chdir(tmp_path)
    recipe = yaml.safe_load((REPO / "recipes" / "testbed-cpu.yaml").read_text())
    recipe["train"].update(max_epochs=3, update_contradict=True, update_locality=4)
    (tmp_path / "fast.yaml").write_text(yaml.safe_dump(recipe))
    (tmp_path / "gyzum.md").write_text(UPDATE_SHEET, encoding="utf-8")
    result = CliRunner().invoke(main, ["run", "gyzum.md", "--recipe", "fast.yaml"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    run = tmp_path / "exports" / "gyzum"
    report = json.loads((run / "reports" / "report.json").read_text())
    updates = {r["fact_id"]: r for r in report["updates"]}
    assert updates["gyzum-kithil/profession"]["old_value"] == "potter" and updates["gyzum-kithil/profession"]["stated"]
    found = updates.get("gyzum-kithil/instrument")
    assert found and found["old_value"].lower() == "trumpet" and not found["stated"], report["updates"]
    before, after = report["before"], report["after"]
    assert before["old_value"]["share"] >= 0.5, "the testbed knows the old values"
    assert after["old_value"]["share"] < before["old_value"]["share"]
    assert after["recall_trained"]["share"] > before["recall_trained"]["share"]
    assert after["neighbours_tokens"]["n"] > 0 and before["neighbours_tokens"] is None
    assert after["portability"]["n"] == 1
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["expand"]["facts"]["gyzum-kithil/hobby"]["replaces"] == "gardening"
    assert manifest["train"]["rows"]["contrast"] > 0
    md = (run / "reports" / "report.md").read_text()
    assert "## Updates" in md and "potter (stated)" in md and "found in the base answers" in md
