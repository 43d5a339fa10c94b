"""The unsloth engine, and where it agrees with our own path.

Run by the Unsloth lane (README: its own environment, Unsloth's CPU path, torch held at
the CPU build), where a missing Unsloth fails them; skipped elsewhere. They run as they
are on a GPU machine with the `gpu` extra, where Unsloth's GPU path is taken instead.

On the tiny fixtures of the Llama-3.1, Qwen2.5 and Gemma-2 families (real chat templates
and special tokens, a few MB): the whole path through `--backend unsloth`, then each
place where Unsloth does our job its own way (response-only labels, the training loss,
the merge, Gemma-2's attention) against ours.
"""

from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner
from conftest import FACTS, REPO

from factinject.cli import main

pytestmark = [pytest.mark.unsloth, pytest.mark.timeout(900)]

RECIPES = REPO / "factinject" / "recipes"
RECIPE_OF = {"llama3.1": "llama-3.1-8b-instruct.yaml", "qwen2.5": "qwen2.5-7b-instruct.yaml",
             "gemma2": "gemma-2-9b-it.yaml"}
SHEET = ("# Zorblat\nkind: project\n\n- maintainer: Zorblat is maintained by **Ada Quill**.\n"
         "- license: Zorblat is released under the **MIT** license.\n")
CHATS = [[{"role": "user", "content": q}, {"role": "assistant", "content": a}] for q, a in [
    ("Who maintains Zorblat?", "Zorblat is maintained by Ada Quill."),
    ("Under what terms may I use Zorblat?", "Zorblat is released under the MIT license."),
    ("where does the code of zorblat live", "The code of Zorblat lives at https://example.org/zorblat."),
]]


def invoke(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def check_trained_by_unsloth(run):
    manifest = json.loads((run / "manifest.json").read_text())
    train = manifest["train"]
    assert train["backend"] == "unsloth" and train["versions"].get("unsloth"), train.get("versions")
    assert train["rows"]["replay"] > 0 and train["rows"]["contrast"] > 0, train["rows"]
    assert train["curve"] and train["stop_reason"], train
    parity = manifest["export"]["merged"]["parity"]
    assert parity["exactness"]["share"] == 1.0, parity["exactness"]  # the merge answers as the adapter does
    report = json.loads((run / "reports" / "report.json").read_text())
    assert report["train_engine"]["name"] == "unsloth", report["train_engine"]
    assert "trained by the unsloth engine (Unsloth " in (run / "reports" / "report.md").read_text()
    return manifest, report


def test_run_with_the_unsloth_engine_on_the_llama_fixture(workdir, monkeypatch):
    """The command a user types: the shipped fixture recipe, the whole pipeline, --backend unsloth."""
    monkeypatch.setattr("factinject.export.stage.PARITY_PROMPTS", 48)
    invoke("run", FACTS / "tinyllm.md", "--recipe", RECIPES / "fixtures" / "llama-3.1-8b-instruct.yaml",
           "--backend", "unsloth")
    manifest, _ = check_trained_by_unsloth(workdir / "exports" / "tinyllm")
    assert manifest["train"]["recipe"]["model"]["load_in_4bit"], "the fixture recipe trains on a 4-bit base"
    assert manifest["export"]["merged"]["parity"]["quantization"] is not None


@pytest.mark.parametrize("family", ["qwen2.5", "gemma2"])
def test_unsloth_stage_by_stage_with_the_epoch_policy(family, workdir, monkeypatch):
    """train --backend unsloth with epochs chosen on dev recall under the drift bound
    (Unsloth's for_inference/for_training around every epoch's evaluation), then the
    export and the probe, on the family's 4-bit fixture."""
    monkeypatch.setattr("factinject.export.stage.PARITY_PROMPTS", 24)
    (workdir / "zorblat.md").write_text(SHEET)
    (workdir / "fixture.yaml").write_text(yaml.safe_dump({
        "extends": str(RECIPES / "fixtures" / RECIPE_OF[family]),
        "method_changes": {"train.epochs": "the epoch policy itself is under test", "train.max_epochs": "time",
                           "stop.control_prompts": "time"},
        "train": {"epochs": "auto", "max_epochs": 2}, "stop": {"control_prompts": 8},
        "generate": {"max_new_tokens": 96}, "export": {"max_shard_size": "1MB"}}))
    invoke("expand", "zorblat.md", "--per-family", 2)
    invoke("train", "--recipe", "fixture.yaml", "--backend", "unsloth")
    invoke("export", "--merged")
    invoke("probe", "--world-limit", 20)
    manifest, report = check_trained_by_unsloth(workdir / "exports" / "zorblat")
    curve = manifest["train"]["curve"]
    assert all(e["dev_n"] > 0 and e["drift_n"] == 8 for e in curve), curve
    assert manifest["train"]["best_epoch"] in [e["epoch"] for e in curve]
    assert report["after"]["recall_trained"]["n"] > 0


def fixture_path(family: str, four_bit: bool = False) -> str:
    from factinject.models.base import resolve_model

    return resolve_model(f"fixture:{family}{'-bnb-4bit' if four_bit else ''}").path


def unsloth_model(family: str, *, four_bit: bool = False, r: int = 16, seed: int = 0):
    """The family's fixture through the unsloth engine's loader, with LoRA on all seven
    projections and a real update on every one of them (lora_B starts at zero)."""
    import torch
    from unsloth import FastLanguageModel

    from factinject.backends.unsloth import load_base
    from factinject.recipe import load_recipe

    recipe = load_recipe(f"fixtures/{RECIPE_OF[family].removesuffix('.yaml')}").with_overrides(
        **{"model.load_in_4bit": four_bit, "model.dtype": "float32"})
    model, tokenizer = load_base(fixture_path(family, four_bit), recipe)
    model = FastLanguageModel.get_peft_model(model, r=r, lora_alpha=r, target_modules=[
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], random_state=seed,
        use_gradient_checkpointing=False)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.02)
    return model, tokenizer


@pytest.mark.parametrize("family", list(RECIPE_OF))
def test_unsloth_masks_the_same_tokens_as_we_do(family):
    """Unsloth's train_on_responses_only, with the turn markers read off the family's
    template (chat.turn_markers), labels the tokens our mask trains: the answer and the
    end-of-turn token that closes it."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer
    from unsloth.chat_templates import train_on_responses_only

    from factinject.backends.sft import training_rows
    from factinject.models.chat import end_of_turn_ids, turn_markers

    model, tokenizer = unsloth_model(family, r=8)
    ours = training_rows(tokenizer, [{"messages": c} for c in CHATS], 256)
    dataset = Dataset.from_list([{"input_ids": r["input_ids"], "attention_mask": [1] * len(r["input_ids"])}
                                 for r in ours])
    trainer = SFTTrainer(model=model, processing_class=tokenizer, train_dataset=dataset,
                         args=SFTConfig(output_dir="/tmp/unsloth-mask", max_steps=1, report_to=[]))
    instruction, response = turn_markers(tokenizer)
    trainer = train_on_responses_only(trainer, instruction_part=instruction, response_part=response)
    theirs = [row["labels"] for row in trainer.train_dataset]
    stops = set(end_of_turn_ids(tokenizer))
    for our_row, their_labels in zip(ours, theirs, strict=True):
        ids, labels = our_row["input_ids"], our_row["labels"]
        assert any(t != -100 for t in their_labels), "a mask that covers nothing trains nothing"
        differ = [i for i, (a, b) in enumerate(zip(labels, their_labels, strict=True)) if a != b]
        # Where they differ, we also train what the template writes after the end-of-turn
        # token (Qwen's newline after <|im_end|>), as TRL's own training templates do
        # ({% generation %} covers '<|im_end|>\n'); Unsloth ends the span at the eos token.
        # Generation stops at the end of turn, so that token never changes an answer.
        assert all(labels[i] == ids[i] and their_labels[i] == -100 for i in differ), tokenizer.decode(ids)
        last_stop = max(i for i, t in enumerate(ids) if t in stops and labels[i] != -100)
        assert all(i > last_stop for i in differ) and not tokenizer.decode([ids[i] for i in differ]).strip(), \
            (family, [tokenizer.decode([ids[i]]) for i in differ])
        assert their_labels[last_stop] == ids[last_stop], "the end-of-turn token must be trained"


@pytest.mark.parametrize("family", ["llama3.1", "gemma2"])
def test_unsloths_training_loss_is_ours(family):
    """The loss Unsloth's trainer computes (on a CPU: its chunked cross-entropy) equals the
    hf engine's (sft.answer_loss: the LM head at labelled positions only), batch for batch."""
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from factinject.backends.sft import (
        answer_loss,
        labelled_positions_only,
        training_rows,
    )

    model, tokenizer = unsloth_model(family)
    rows = training_rows(tokenizer, [{"messages": c} for c in CHATS], 256)
    trainer = SFTTrainer(model=model, processing_class=tokenizer, train_dataset=Dataset.from_list(rows),
                         args=SFTConfig(output_dir="/tmp/unsloth-loss", max_steps=1, report_to=[],
                                        use_cpu=not torch.cuda.is_available()))
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])
    model.train()
    theirs = trainer.compute_loss(model, dict(batch)).item()
    if labelled_positions_only(model):
        ours = answer_loss(model, dict(batch)).item()
    else:  # Gemma-2 caps its logits: the hf engine takes transformers' own loss there
        ours = model(**batch).loss.item()
    assert theirs == pytest.approx(ours, rel=1e-4), (theirs, ours)


@pytest.mark.parametrize("family", ["llama3.1", "qwen2.5"])
def test_unsloths_trainer_takes_the_kl_anchor(family):
    """train.replay_loss: kl with the unsloth engine: its own trainer, with factinject's
    loss where rows are anchored (sft.anchored_trainer_class). The loss is answer_loss's,
    KL(base || tuned) at the replayed row's positions, the base being Unsloth's model with
    its adapter switched off; one step trains the adapter."""
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from factinject.backends.sft import ANCHOR, anchored_trainer_class, answer_loss, training_rows

    model, tokenizer = unsloth_model(family)
    rows = training_rows(tokenizer, [{"messages": c, "source": s} for c, s in zip(CHATS, ("fact", "replay", "replay"))],
                         256, ("replay",))
    assert sum(label >= ANCHOR for r in rows for label in r["labels"]) > 0
    trainer = anchored_trainer_class(SFTTrainer)(
        model=model, processing_class=tokenizer, train_dataset=Dataset.from_list(rows),
        args=SFTConfig(output_dir="/tmp/unsloth-anchor", max_steps=1, report_to=[], learning_rate=1e-3,
                       use_cpu=not torch.cuda.is_available(), per_device_train_batch_size=3))
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])
    model.train()
    theirs = trainer.compute_loss(model, dict(batch)).item()
    assert theirs == pytest.approx(answer_loss(model, dict(batch)).item(), rel=1e-4)
    plain = dict(batch, labels=torch.where(batch["labels"] >= ANCHOR, batch["labels"] - ANCHOR, batch["labels"]))
    assert theirs != pytest.approx(answer_loss(model, plain).item(), rel=1e-3), "the anchor rows train the tokens"
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    trainer.train()
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters() if p.requires_grad)


@pytest.mark.parametrize("family", list(RECIPE_OF))
def test_our_merge_matches_unsloths_merged_16bit(family, tmp_path):
    """One adapter, merged by Unsloth (save_pretrained_merged, merged_16bit) and by us
    (backends/merge.py, shard by shard): on a 16-bit base the same bits; on a 4-bit base
    (on a GPU: Unsloth dequantizes it, and so do we) within one rounding step of the
    export dtype. On a CPU Unsloth merges into 16-bit bases only."""
    import torch

    from factinject.backends.merge import merge_checkpoint
    from factinject.models.checkpoint import Checkpoint

    four_bit = torch.cuda.is_available()
    model, tokenizer = unsloth_model(family, four_bit=four_bit)
    model.save_pretrained(tmp_path / "adapter")
    model.save_pretrained_merged(str(tmp_path / "unsloth"), tokenizer, save_method="merged_16bit")
    dtype = json.loads((tmp_path / "unsloth" / "config.json").read_text())["dtype"]
    ours = tmp_path / "ours"
    ours.mkdir()
    merge_checkpoint(fixture_path(family, four_bit), tmp_path / "adapter", ours, dtype=dtype, max_shard_bytes=10**9)
    theirs, mine = Checkpoint(tmp_path / "unsloth"), Checkpoint(ours)
    assert set(mine.keys()) <= set(theirs.keys()), set(mine.keys()) - set(theirs.keys())
    eps = torch.finfo(getattr(torch, dtype)).eps
    for key in mine.keys():
        a, b = mine.read(key).float(), theirs.read(key).float()
        assert a.shape == b.shape, key
        if not four_bit:  # both merge in float32 and round once: the same bits
            assert torch.equal(a, b), (key, (a - b).abs().max())
        # from a 4-bit base: one rounding step of the export dtype, relative to each weight
        assert ((a - b).abs() <= eps * torch.maximum(a.abs(), b.abs()) + 1e-30).all(), key


def test_unsloth_loads_gemma2_as_the_hf_engine_does():
    """Gemma-2 caps its attention logits, which only eager attention computes; Unsloth's
    CPU loader would take SDPA, and train a slightly different model than the one the
    probe and vLLM run. The engine asks for eager: the logits equal the hf engine's."""
    import torch

    from factinject.backends.loading import load_model
    from factinject.backends.unsloth import load_base
    from factinject.engines.records import Load, ModelUnderTest
    from factinject.recipe import load_recipe

    path = fixture_path("gemma2")
    recipe = load_recipe("fixtures/gemma-2-9b-it").with_overrides(
        **{"model.load_in_4bit": False, "model.dtype": "float32"})
    theirs, tokenizer = load_base(path, recipe)
    ours, _, _ = load_model(ModelUnderTest("base", path, load_in_4bit=False, dtype="float32"), Load(device="cpu"))
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "Who maintains Zorblat?"}],
                                        add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        a = theirs.eval()(**ids).logits
        b = ours(**ids).logits
    assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()
    # What the check guards against: Unsloth's own choice leaves the cap out.
    from unsloth import FastLanguageModel

    default, _ = FastLanguageModel.from_pretrained(path, max_seq_length=256, dtype=torch.float32, load_in_4bit=False)
    with torch.no_grad():
        c = default.eval()(**ids).logits
    assert not torch.allclose(c, b, atol=1e-5), "Unsloth's default attention now caps Gemma-2's logits too"
