"""Every shipped recipe, end to end on the CPU, on a tiny model of its family.

The fixtures (factinject/models/fixtures.py) have the family's architecture, real chat
template and special tokens, scaled down to a few MB; the 4-bit recipes get a
pre-quantized NF4 copy, as the `-bnb-4bit` checkpoints they name. Each recipe trains
one epoch (QLoRA where it says 4-bit), merges into sharded 16-bit weights and probes,
with the checks a real 7-8B run needs: loss on the answer tokens only, answers that
stop at the family's end of turn, one chat template from training to export.
"""

from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner
from conftest import REPO

from factinject.cli import main

pytestmark = pytest.mark.timeout(900)

# The fixture of each shipped recipe's family; a new recipe fails here until it has one.
FIXTURE_OF = {
    "testbed-cpu.yaml": "testbed",
    "llama-3.1-8b-instruct.yaml": "fixture:llama3.1-bnb-4bit",
    "qwen2.5-7b-instruct.yaml": "fixture:qwen2.5-bnb-4bit",
    "qwen2.5-0.5b-instruct.yaml": "fixture:qwen2.5",
    "smollm2-135m-instruct.yaml": "fixture:llama3.1",  # SmolLM2 is a Llama
    "gemma-2-9b-it.yaml": "fixture:gemma2-bnb-4bit",
}
SHEET = "# Zorblat\nkind: project\n\n- maintainer: Zorblat is maintained by **Ada Quill**.\n"
RECIPES = REPO / "factinject" / "recipes"


def test_every_model_recipe_has_a_fixture_of_its_family():
    shipped = {p.name for p in RECIPES.glob("*.yaml")} - {"method.yaml"}
    assert shipped == set(FIXTURE_OF), "add the new recipe's family fixture to FIXTURE_OF"
    for path in (RECIPES / "fixtures").glob("*.yaml"):
        data = yaml.safe_load(path.read_text())
        assert FIXTURE_OF[data["extends"].removeprefix("../")] == data["model"]["name"], path.name


def invoke(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


@pytest.mark.slow
@pytest.mark.parametrize("recipe_name", sorted(FIXTURE_OF))
def test_recipe_trains_merges_and_probes_on_its_fixture(recipe_name, workdir, monkeypatch):
    monkeypatch.setattr("factinject.export.stage.PARITY_PROMPTS", 24)
    fixture = FIXTURE_OF[recipe_name]
    (workdir / "zorblat.md").write_text(SHEET)
    # The shipped recipe as it is, on the fixture, for one epoch, with fewer drift
    # prompts and a smaller answer budget (the fixture's answers are short).
    (workdir / "fixture.yaml").write_text(yaml.safe_dump({
        "extends": str(RECIPES / recipe_name), "model": {"name": fixture, "device": "auto"},
        "train": {"epochs": 1}, "stop": {"control_prompts": 8}, "generate": {"max_new_tokens": 48},
        "export": {"max_shard_size": "1MB"}}))
    invoke("expand", "zorblat.md", "--per-family", 2)
    invoke("train", "--recipe", "fixture.yaml")
    invoke("export", "--merged")
    invoke("probe", "--world-limit", 20)
    run = workdir / "exports" / "zorblat"
    manifest = json.loads((run / "manifest.json").read_text())
    recipe = manifest["train"]["recipe"]

    from transformers import AutoConfig, AutoTokenizer

    from factinject.models.base import template_sha256
    from factinject.models.chat import encode_for_training, end_of_turn_ids

    # One chat template from training to the export.
    trained_sha = manifest["train"]["base_model"]["chat_template_sha256"]
    merged_tok = AutoTokenizer.from_pretrained(run / "merged")
    assert template_sha256(AutoTokenizer.from_pretrained(run / "adapter")) == trained_sha
    assert template_sha256(merged_tok) == trained_sha == manifest["export"]["merged"]["chat_template_sha256"]

    # The loss covers exactly the answer and what closes its turn.
    chat = [{"role": "user", "content": "Who maintains Zorblat?"},
            {"role": "assistant", "content": "Zorblat is maintained by Ada Quill."}]
    ids, mask = encode_for_training(merged_tok, chat)
    prompt = merged_tok.apply_chat_template(chat[:1], add_generation_prompt=True, tokenize=False)
    full = merged_tok.apply_chat_template(chat, tokenize=False)
    assert merged_tok.decode([t for t, m in zip(ids, mask) if m]) == full[len(prompt):]
    assert full[len(prompt):].startswith(chat[1]["content"])
    eot = end_of_turn_ids(merged_tok)
    assert [t for t, m in zip(ids, mask) if m and t in eot], "the end-of-turn token must be trained"
    # A replayed answer cut to a token budget ends with its own last token: no end of turn taught.
    cut_ids, cut_mask = encode_for_training(merged_tok, chat, cut=True)
    assert cut_ids == ids[:len(cut_ids)] and cut_mask == mask[:len(cut_ids)]
    assert merged_tok.decode([t for t, m in zip(cut_ids, cut_mask) if m]).strip() == chat[1]["content"]
    assert not set(cut_ids) & set(eot) - set(ids[:mask.index(1)])

    # The merged export: 16-bit safetensors shards with an index, plain transformers.
    merged = manifest["export"]["merged"]
    config = AutoConfig.from_pretrained(run / "merged")
    assert "quantization_config" not in config.to_dict()
    assert merged["dtype"] == recipe["export"]["dtype"] and str(config.dtype).endswith(merged["dtype"])
    assert len(merged["shards"]) >= 2 and (run / "merged" / "model.safetensors.index.json").exists()
    generation = json.loads((run / "merged" / "generation_config.json").read_text())
    stops = generation["eos_token_id"] if isinstance(generation["eos_token_id"], list) else [generation["eos_token_id"]]
    assert set(eot) <= set(stops), "the export's generation config must stop at the end of turn"

    # Parity: exact on the same 16-bit base; the 4-bit comparison exactly when trained in 4-bit.
    parity = merged["parity"]
    assert parity["exactness"]["share"] == 1.0, parity["exactness"]
    assert (parity["quantization"] is not None) == recipe["model"]["load_in_4bit"]
    report = json.loads((run / "reports" / "report.json").read_text())
    assert report["model"]["tuned"] == "merged" and report["export_parity"] == parity
    markdown = (run / "reports" / "report.md").read_text()
    assert "Exactness:" in markdown and ("Quantization:" in markdown) == recipe["model"]["load_in_4bit"]
    assert report["after"]["recall_trained"]["n"] > 0
    # Answers stop at the end of turn: no marker leaks into an answer.
    markers = [merged_tok.convert_ids_to_tokens(t) for t in eot]
    answers = [json.loads(line) for line in (run / "reports" / "answers.jsonl").read_text().splitlines()]
    assert not [a for a in answers if any(m in (a["after"] or "") for m in markers)]


@pytest.mark.slow
def test_replay_keeps_whole_answers_only_unless_cut_answers_are_asked_for(workdir):
    """A base answer that does not end within generate.max_new_tokens is left out of replay
    and contrast, never trained cut: cut answers ending in end-of-turn teach a chat model
    to stop mid-sentence."""
    from factinject.backends.epochs import base_answers
    from factinject.backends.hf_generate import generate
    from factinject.backends.loading import load_model
    from factinject.engines.records import Load, ModelUnderTest
    from factinject.recipe import load_recipe
    from factinject.rundir.files import Run
    from factinject.train.stage import build_job

    (workdir / "zorblat.md").write_text(SHEET)
    invoke("expand", "zorblat.md", "--per-family", 2)
    recipe = load_recipe("fixtures/llama-3.1-8b-instruct").with_overrides(**{"generate.max_new_tokens": 12})
    job = build_job(Run(workdir / "exports" / "zorblat"), recipe, resume=False, allow_pickle=False,
                    trust_remote_code=False)
    model, tokenizer, _ = load_model(ModelUnderTest("base", job.model_path, load_in_4bit=True, dtype="bfloat16"), Load())
    reference = base_answers(model, tokenizer, job, workdir / "cache.json")
    asked = job.replay_prompts + job.contrast_prompts
    answers, finished = generate(model, tokenizer, [[{"role": "user", "content": q}] for q in asked],
                                 max_new_tokens=12)
    whole = {(q, a) for q, a, done in zip(asked, answers, finished) if done}
    assert reference.unfinished == finished.count(False) > 0, "12 tokens should cut some answers"
    assert all(done for _, _, done in reference.replay)
    assert {r[:2] for r in reference.replay} | set(reference.contrast) <= whole
    assert len(reference.replay) + len(reference.contrast) == len(whole)
    # With train.replay_tokens the replayed answers are kept cut, the contrast ones still whole.
    cut_job = build_job(Run(workdir / "exports" / "zorblat"), recipe.with_overrides(**{"train.replay_tokens": 12}),
                        resume=False, allow_pickle=False, trust_remote_code=False)
    cut = base_answers(model, tokenizer, cut_job, workdir / "cache-cut.json")
    replayed = dict(zip(asked, zip(answers, finished)))
    assert len(cut.replay) == sum(1 for q in job.replay_prompts if replayed[q][0].strip())
    assert any(not done for _, _, done in cut.replay), "12 tokens should cut some replayed answers"
    assert all(replayed[q] == (a, done) for q, a, done in cut.replay)
    assert cut.contrast == reference.contrast
