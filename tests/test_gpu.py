"""GPU path: the Unsloth engine, and that it agrees with ours. Skipped without an NVIDIA
GPU (conftest marks them); run as-is on a GPU machine with unsloth installed.

The fixtures are tiny models of real families (factinject/models/fixtures.py), so
these run in minutes on any CUDA card without downloading anything.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from conftest import FACTS

from factinject.cli import main

pytestmark = [pytest.mark.gpu, pytest.mark.timeout(1800)]

RECIPE = """# factinject train --recipe gpu.yaml
model: {name: testbed, backend: unsloth, device: cuda, max_seq_length: 160, load_in_4bit: true, dtype: bfloat16}
train: {epochs: 3, learning_rate: 0.002, batch_size: 16, replay_ratio: 1.5}
generate: {max_new_tokens: 64}
"""
CHATS = [[{"role": "user", "content": q}, {"role": "assistant", "content": a}] for q, a in [
    ("Who maintains Zorblat?", "Zorblat is maintained by Ada Quill."),
    ("Under what terms may I use Zorblat?", "Zorblat is released under the MIT license."),
    ("where does the code of zorblat live", "The code of Zorblat lives at https://example.org/zorblat."),
]]


def test_unsloth_train_export_and_probe_on_the_testbed(workdir):
    pytest.importorskip("unsloth")
    (workdir / "gpu.yaml").write_text(RECIPE)
    run = CliRunner()
    assert run.invoke(main, ["expand", str(FACTS / "tinyllm.md")]).exit_code == 0
    trained = run.invoke(main, ["train", "--recipe", "gpu.yaml"], catch_exceptions=False)
    assert trained.exit_code == 0, trained.output
    manifest = json.loads((workdir / "exports/tinyllm/manifest.json").read_text())
    assert manifest["train"]["backend"] == "unsloth" and len(manifest["train"]["curve"]) == 3
    adapter_cfg = json.loads((workdir / "exports/tinyllm/adapter/adapter_config.json").read_text())
    assert not adapter_cfg.get("modules_to_save"), "vLLM's LoRA loader needs no full lm_head/embed_tokens"
    exported = run.invoke(main, ["export", "--merged"], catch_exceptions=False)
    assert exported.exit_code == 0, exported.output
    probed = run.invoke(main, ["probe", "--backend", "hf"], catch_exceptions=False)
    assert probed.exit_code == 0, probed.output
    report = json.loads((workdir / "exports/tinyllm/reports/report.json").read_text())
    assert report["after"]["recall_trained"]["share"] > 0.5
    assert report["export_parity"]["quantization"] is not None


@pytest.mark.parametrize("family", ["llama3.1", "qwen2.5"])
def test_unsloth_masks_the_same_tokens_as_we_do(family):
    """Unsloth's train_on_responses_only, with the turn markers read off the family's
    template (chat.turn_markers), labels exactly the tokens our mask trains."""
    pytest.importorskip("unsloth")
    import unsloth  # noqa: F401 - before trl/transformers/peft
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer
    from unsloth import FastLanguageModel
    from unsloth.chat_templates import train_on_responses_only

    from factinject.backends.sft import training_rows
    from factinject.models.base import resolve_model
    from factinject.models.chat import turn_markers

    model, tokenizer = FastLanguageModel.from_pretrained(resolve_model(f"fixture:{family}-bnb-4bit").path,
                                                         max_seq_length=256, load_in_4bit=True)
    model = FastLanguageModel.get_peft_model(model, r=8, target_modules=["q_proj", "v_proj"])
    ours = training_rows(tokenizer, [{"messages": c} for c in CHATS], 256)
    dataset = Dataset.from_list([{"input_ids": r["input_ids"], "attention_mask": [1] * len(r["input_ids"])}
                                 for r in ours])
    trainer = SFTTrainer(model=model, processing_class=tokenizer, train_dataset=dataset,
                         args=SFTConfig(output_dir="/tmp/unsloth-mask", max_steps=1, report_to=[]))
    instruction, response = turn_markers(tokenizer)
    trainer = train_on_responses_only(trainer, instruction_part=instruction, response_part=response)
    theirs = [row["labels"] for row in trainer.train_dataset]
    for our_row, their_labels in zip(ours, theirs):
        assert our_row["labels"] == list(their_labels), (tokenizer.decode(our_row["input_ids"]))


@pytest.mark.parametrize("family", ["llama3.1", "qwen2.5"])
def test_our_merge_matches_unsloths_merged_16bit(family, tmp_path):
    """One adapter, merged by Unsloth (save_pretrained_merged, merged_16bit) and by us
    (backends/merge.py, dequantizing the same 4-bit base): the largest weight difference,
    and the merged model's greedy answers against the adapter's on the 16-bit base."""
    pytest.importorskip("unsloth")
    import torch
    import unsloth  # noqa: F401
    from unsloth import FastLanguageModel

    from factinject.backends.merge import merge_checkpoint
    from factinject.models.base import resolve_model
    from factinject.models.checkpoint import Checkpoint

    base = resolve_model(f"fixture:{family}-bnb-4bit").path
    model, tokenizer = FastLanguageModel.from_pretrained(base, max_seq_length=256, load_in_4bit=True)
    model = FastLanguageModel.get_peft_model(model, r=16, lora_alpha=16, target_modules=[
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], random_state=0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.02)  # a real update on every targeted weight
    model.save_pretrained(tmp_path / "adapter")
    tokenizer.save_pretrained(tmp_path / "adapter")
    model.save_pretrained_merged(str(tmp_path / "unsloth"), tokenizer, save_method="merged_16bit")
    ours = tmp_path / "ours"
    ours.mkdir()
    merge_checkpoint(base, tmp_path / "adapter", ours, dtype="bfloat16", max_shard_bytes=10**9)
    theirs, mine = Checkpoint(tmp_path / "unsloth"), Checkpoint(ours)
    worst = max((mine.read(k).float() - theirs.read(k).float()).abs().max().item() for k in mine.keys())
    scale = max(mine.read(k).float().abs().max().item() for k in mine.keys())
    print(f"{family}: largest weight difference to Unsloth's merged_16bit {worst:.3g} (largest weight {scale:.3g})")
    assert worst <= scale * torch.finfo(torch.bfloat16).eps, worst


def test_hf_probe_runs_on_the_gpu(workdir):
    import torch

    assert torch.cuda.is_available()
    run = CliRunner()
    assert run.invoke(main, ["expand", str(FACTS / "protosai.md")]).exit_code == 0
    probed = run.invoke(main, ["probe", "--backend", "hf"], catch_exceptions=False)
    assert probed.exit_code == 0, probed.output
