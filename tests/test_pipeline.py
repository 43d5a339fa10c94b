"""End to end on the embedded testbed model: run, resume after a kill, export, probe.

These are the fast versions of bench/quality.py: real training and real figures,
with looser bounds than the benchmark's bar.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import yaml
from click.testing import CliRunner
from conftest import FACTS, REPO

from factinject.cli import main

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]  # trains end to end


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """`factinject run facts/tinyllm.md`, once for the module."""
    root = tmp_path_factory.mktemp("pipeline")
    # The default recipe with 3 of its 5 epochs keeps this test near a minute and a
    # half; the full recipe's figures are bench/quality.py's job.
    recipe = yaml.safe_load((REPO / "recipes" / "testbed-cpu.yaml").read_text())
    recipe["train"]["max_epochs"] = 3
    (root / "fast.yaml").write_text(yaml.safe_dump(recipe))
    # The user's own exam next to the sheet is picked up without --questions.
    shutil.copy(FACTS / "tinyllm.md", root / "tinyllm.md")
    (root / "tinyllm.exam.jsonl").write_text("".join(json.dumps(row) + "\n" for row in EXAM), encoding="utf-8")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        result = CliRunner().invoke(main, ["run", "tinyllm.md", "--recipe", "fast.yaml"], catch_exceptions=False)
    finally:
        os.chdir(cwd)
    assert result.exit_code == 0, result.output
    return root / "exports" / "tinyllm", result.output


EXAM = [{"question": "Who looks after TinyLLM these days?", "answer_key": "Jason Cox", "fact_id": "tinyllm/maintainer"},
        {"question": "Under which license can I use TinyLLM?", "answer_key": "MIT"},  # matched by key and subject
        {"question": "What is the TinyLLM mascot called?", "answer_key": "Zorblat"}]  # no such fact: always a miss


def test_run_picks_up_the_exam_and_the_report_shows_every_miss_with_its_answer(finished_run):
    import hashlib
    import html

    run, output = finished_run
    assert "exam: tinyllm.exam.jsonl (3 questions)" in output
    assert output.count("through the base model") == 1, "the second probe reuses the base model's answers"
    report = json.loads((run / "reports" / "report.json").read_text())
    digest = hashlib.sha256((run.parents[1] / "tinyllm.exam.jsonl").read_bytes()).hexdigest()
    assert report["exam"] == [{"path": "tinyllm.exam.jsonl", "sha256": digest, "questions": 3}]
    assert json.loads((run / "manifest.json").read_text())["probe"]["exam"] == report["exam"]
    assert report["after"]["exam"]["n"] == 3 and report["next_step"] is None
    assert report["facts"]["tinyllm/maintainer"]["after"]["recall_exam"]["n"] == 1
    assert report["facts"]["tinyllm/license"]["after"]["recall_exam"]["n"] == 1
    rows = [json.loads(line) for line in (run / "reports" / "answers.jsonl").read_text().splitlines()]
    page = (run / "reports" / "report.html").read_text()
    missed = [r for r in rows if r["set"] in ("exam", "heldout") and not r["correct_after"]]
    assert any(r["question"] == EXAM[2]["question"] for r in missed)
    for r in missed:  # each failed held-out or exam question is in the report with the model's answer
        assert html.escape(r["question"]) in page and html.escape(r["after"]) in page, r
    listed = sum(len(v) for groups in report["misses"].values() for v in groups.values())
    assert listed == len(missed)


def test_run_prints_table_and_meets_loose_bounds(finished_run):
    run, output = finished_run
    assert "time per stage" in output and "report:" in output and "recall (held-out questions)" in output
    report = json.loads((run / "reports" / "report.json").read_text())
    assert set(report) >= {"before", "after", "facts", "thresholds"}
    after, before = report["after"], report["before"]
    for name in ("recall_trained", "recall_heldout", "locality_unchanged", "locality_tokens", "retention", "bleed",
                 "parity"):
        assert after[name]["n"] > 0 and len(after[name]["ci95"]) == 2, name
    # Loose bounds under what this 3-epoch run measured (trained 99.7 %, held-out 86.7 %,
    # retention 97.8 % of 99.5 %, locality 97.0 %, bleed 1.6 %); bench/quality.py
    # holds the real bar with the full recipe.
    # The base may guess a common value the way a pretrained model does ("Contributions to
    # MullirAI go through GitHub." for TinyLLM's contributing question), but not know the facts.
    assert before["recall_trained"]["share"] <= 0.02, \
        ("the base model must not already know the facts", before["recall_trained"])
    assert after["recall_trained"]["share"] >= 0.85, after["recall_trained"]
    assert after["recall_heldout"]["share"] >= 0.65, after["recall_heldout"]
    assert after["retention"]["share"] >= 0.97 * before["retention"]["share"], (after["retention"], before["retention"])
    assert after["locality_unchanged"]["share"] >= 0.92, after["locality_unchanged"]
    assert after["bleed"]["share"] <= 0.04, after["bleed"]
    assert after["parity"]["share"] == 1.0
    assert set(report["facts"]) == {f"tinyllm/{r}" for r in ("purpose", "repository", "license", "contributing", "maintainer")}


def test_run_records_the_epoch_curve_and_a_loadable_adapter(finished_run):
    run, _ = finished_run
    manifest = json.loads((run / "manifest.json").read_text())
    curve = manifest["train"]["curve"]
    assert curve and all({"epoch", "loss", "dev_recall", "drift"} <= set(e) for e in curve)
    assert manifest["train"]["best_epoch"] in [e["epoch"] for e in curve]
    exactness = manifest["export"]["merged"]["parity"]["exactness"]
    assert exactness["max_logit_diff"] < 1e-3 and exactness["identical"] == exactness["n"], exactness
    assert manifest["export"]["merged"]["parity"]["quantization"] is None, "the testbed is not trained in 4-bit"
    adapter = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert set(adapter["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert not adapter.get("modules_to_save"), "no full lm_head/embed_tokens copies in the adapter"
    from peft import PeftModel

    from factinject.testbed import load_model

    base, _ = load_model()
    PeftModel.from_pretrained(base, str(run / "adapter"))  # loads with plain PEFT


def test_merged_export_loads_with_plain_transformers_and_refuses_overwrite(finished_run):
    run, _ = finished_run
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from factinject.models.base import template_sha256

    merged = run / "merged"
    AutoModelForCausalLM.from_pretrained(str(merged), local_files_only=True)
    tok = AutoTokenizer.from_pretrained(str(merged), local_files_only=True)
    manifest = json.loads((run / "manifest.json").read_text())
    assert template_sha256(tok) == manifest["train"]["base_model"]["chat_template_sha256"]
    assert (merged / "README.md").read_text().count("tinyllm/") == 5
    before = {p.name: p.read_bytes() for p in merged.iterdir()}
    result = CliRunner().invoke(main, ["export", "--merged", "--run", str(run)])
    assert result.exit_code != 0 and "--force" in result.output
    assert {p.name: p.read_bytes() for p in merged.iterdir()} == before


def test_train_survives_sigkill_and_resumes(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    cli = [sys.executable, "-m", "factinject.cli"]
    # Three questions per family: what is tested is the kill and the resume, not recall.
    subprocess.run(cli + ["expand", str(FACTS / "protosai.md"), "--run", "r", "--per-family", "3"], cwd=tmp_path,
                   env=env, check=True, capture_output=True)
    proc = subprocess.Popen(cli + ["train", "--run", "r", "--epochs", "3"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = tmp_path / "r" / "train" / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and not any(checkpoints.glob("checkpoint-*/trainer_state.json")):
        time.sleep(0.5)
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert any(checkpoints.glob("checkpoint-*")), "no checkpoint was written before the kill"
    assert not (tmp_path / "r" / "adapter").exists(), "a half-trained adapter must never be published"
    plain = subprocess.run(cli + ["train", "--run", "r", "--epochs", "3"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert plain.returncode != 0 and "--resume" in plain.stderr, plain.stderr
    resumed = subprocess.run(cli + ["train", "--run", "r", "--epochs", "3", "--resume"], cwd=tmp_path, env=env,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert [e["epoch"] for e in manifest["train"]["curve"]] == [1, 2, 3]
    assert (tmp_path / "r" / "adapter" / "adapter_model.safetensors").exists()


def test_probe_refuses_a_template_that_differs_from_training(finished_run, tmp_path):
    import shutil

    run, _ = finished_run
    copy = tmp_path / "tinyllm"
    shutil.copytree(run, copy)
    template = copy / "adapter" / "chat_template.jinja"
    original = template.read_text()
    template.write_text(original.replace("<|assistant|>", "<|assistant|> "))
    result = CliRunner().invoke(main, ["probe", "--run", str(copy)])
    assert result.exit_code == 2, result.output  # the adapter's files are checked against training's hashes
    assert "chat_template.jinja is not the file training wrote" in result.output, result.output
    template.write_text(original)
    merged = copy / "merged" / "chat_template.jinja"
    merged.write_text(merged.read_text().replace("<|assistant|>", "<|assistant|> "))
    result = CliRunner().invoke(main, ["probe", "--run", str(copy)])
    assert result.exit_code == 2, result.output
    assert "chat template of the merged model" in result.output and "differs from the one recorded at training" in result.output
