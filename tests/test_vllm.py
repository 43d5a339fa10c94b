"""The vLLM lane: `probe --backend vllm` answers like the hf engine, on the testbed and on
the tiny real-architecture fixtures, for the base model, the adapter (LoRARequest) and
the merged export; answers stop at the template's end of turn.

These need vLLM: in CI its CPU build runs them in a second environment (README's test
command); elsewhere they are skipped when vLLM is not installed.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
import yaml
from click.testing import CliRunner
from conftest import FACTS, REPO

from factinject.cli import main

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(900)]

AGREEMENT = 0.99  # identical greedy answers, hf vs vllm, per model
MODELS = ("base", "adapter", "merged")


def _invoke(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _train_then_probe_with_vllm(root, recipe: dict) -> tuple[dict, dict]:
    """expand, train, export --merged, then `probe --backend vllm --compare-with hf` and
    `probe --backend hf` (which reuses the cached hf answers): (vllm report, hf report).
    The vllm report carries its report.md as "markdown" (the hf probe rewrites the file)."""
    (root / "lane.yaml").write_text(yaml.safe_dump(recipe))
    cwd = os.getcwd()
    os.chdir(root)
    try:
        _invoke("expand", str(FACTS / "tinyllm.md"))
        _invoke("train", "--recipe", "lane.yaml")
        _invoke("export", "--merged")
        report = root / "exports" / "tinyllm" / "reports" / "report.json"
        _invoke("probe", "--backend", "vllm", "--compare-with", "hf")
        vllm = {**json.loads(report.read_text()), "markdown": report.with_name("report.md").read_text(encoding="utf-8")}
        _invoke("probe", "--backend", "hf")
        return vllm, json.loads(report.read_text())
    finally:
        os.chdir(cwd)


def _check_agreement(vllm: dict, hf: dict, engines: dict | None = None) -> None:
    engines = engines or dict.fromkeys(MODELS, "vllm")
    assert vllm["backend"] == "vllm" and vllm["engines"] == engines, vllm["engines"]
    agreement = vllm["engine_agreement"]
    compared = [label for label in MODELS if engines[label] == "vllm"]
    assert set(agreement["models"]) == set(compared), "models answered by hf anyway are not compared"
    for label in compared:
        m = agreement["models"][label]
        assert m["n"] > 100 and m["share"] >= AGREEMENT, (label, m["count"], m["n"], m["disagreements"][:5])
    for name, figure in vllm["after"].items():  # the after-figures are the hf engine's, within the agreement
        if figure["share"] is not None:
            assert abs(figure["share"] - hf["after"][name]["share"]) <= 1 - AGREEMENT, (name, figure, hf["after"][name])


@pytest.fixture(scope="module")
def testbed_reports(tmp_path_factory):
    recipe = yaml.safe_load((REPO / "recipes" / "testbed-cpu.yaml").read_text())
    recipe["train"]["max_epochs"] = 2  # agreement, not quality: two epochs change the answers enough
    return _train_then_probe_with_vllm(tmp_path_factory.mktemp("vllm-testbed"), recipe)


def test_testbed_probe_with_vllm_matches_hf(testbed_reports):
    vllm, hf = testbed_reports
    _check_agreement(vllm, hf)
    assert vllm["after"]["recall_trained"]["share"] > 0.5, "the adapter must have learnt something to compare"
    markdown = vllm["markdown"]
    assert "## Engine agreement" in markdown and "| merged |" in markdown


LANE = {"export": {"dtype": "float32"}, "stop": {"control_prompts": 16}, "generate": {"max_new_tokens": 32},
        # one epoch on less replay: enough for an adapter that changes answers, in a minute
        "train": {"epochs": 1, "replay_ratio": 0.5, "contrast_per_fact": 0}}


@pytest.mark.parametrize("family", ["llama3.1", "gemma2"])
def test_fixture_probe_with_vllm_matches_hf(family, tmp_path):
    shipped = {"llama3.1": "llama-3.1-8b-instruct", "gemma2": "gemma-2-9b-it"}
    # The family's fixture recipe on the 16-bit fixture (vLLM has no NF4), so that all three
    # models (base, adapter through LoRARequest, merged) go through vLLM. In float32: the
    # fixtures' random-weight answers are full of near-ties, which bf16 rounding in two
    # different engines breaks differently (bf16 itself is exercised by the stop test below).
    recipe = {**LANE, "extends": f"fixtures/{shipped[family]}.yaml",
              "model": {"name": f"fixture:{family}", "load_in_4bit": False, "dtype": "float32"}}
    vllm, hf = _train_then_probe_with_vllm(tmp_path, recipe)
    _check_agreement(vllm, hf)


def test_qlora_fixture_probe_with_vllm_sends_4bit_models_to_hf(tmp_path):
    # The shipped 4-bit recipe's path (QLoRA on a pre-quantized NF4 checkpoint, as the
    # 24 GB recipes do): vLLM cannot load NF4, so the base (dequantized from it) and the
    # adapter as trained are answered by hf, and vLLM answers the 16-bit merge.
    recipe = {**LANE, "extends": "fixtures/qwen2.5-7b-instruct.yaml", "model": {"dtype": "float32"}}
    vllm, hf = _train_then_probe_with_vllm(tmp_path, recipe)
    _check_agreement(vllm, hf, {"base": "hf", "adapter": "hf", "merged": "vllm"})
    assert vllm["model"]["base"] == "fixture:qwen2.5-bnb-4bit"


def _llama_with_base_eos(tmp_path):
    """The Llama-3.1 fixture with the *base* model's eos (<|end_of_text|>) in its tokenizer and
    generation config: only the chat template says that a turn ends with <|eot_id|>."""
    from transformers import AutoTokenizer, GenerationConfig

    from factinject.models.fixtures import fixture_path

    src = fixture_path("fixture:llama3.1")
    out = tmp_path / "llama3.1-base-eos"
    shutil.copytree(src, out)
    tok = AutoTokenizer.from_pretrained(str(out))
    tok.eos_token = "<|end_of_text|>"
    tok.save_pretrained(str(out))
    eos = tok.convert_tokens_to_ids("<|end_of_text|>")
    GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=eos, pad_token_id=tok.pad_token_id,
                     do_sample=False).save_pretrained(str(out))
    return out, tok


def test_llama31_answers_stop_at_end_of_turn_not_only_eos(tmp_path, monkeypatch):
    from factinject.engines.process import run_job
    from factinject.engines.records import GenerateJob, ModelUnderTest
    from factinject.testbed import load_heldout

    path, tok = _llama_with_base_eos(tmp_path)
    eot, eos = tok.convert_tokens_to_ids("<|eot_id|>"), tok.convert_tokens_to_ids("<|end_of_text|>")
    questions = [r["question"] for r in load_heldout()[:24]]  # what the fixture was trained to answer
    job = GenerateJob(ModelUnderTest("base", str(path), dtype="bfloat16"), questions, max_new_tokens=48).to_dict()
    got = run_job("vllm", "generate", job)
    assert eot in got["stop_ids"] and eos in got["stop_ids"], got["stop_ids"]
    # The fixture is a few MB of briefly trained random weights: some answers run to the
    # budget. Every one that ends, ends at the template's <|eot_id|>, never at eos.
    assert [e is not None for e in got["ended_with"]] == got["finished"]
    assert set(got["ended_with"]) - {None} == {eot}, got["ended_with"]
    assert sum(got["finished"]) >= len(questions) // 3, got["finished"]
    assert not any("assistant" in a or "<|" in a for a in got["answers"]), got["answers"][:3]
    with pytest.raises(ProcessLookupError):
        os.kill(got["pid"], 0)  # the engine's process is gone, and its memory with it
    # The same job with vLLM's engine in a process of its own, as on a GPU.
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
    spawned = run_job("vllm", "generate", job)
    assert spawned["answers"] == got["answers"]
