"""The streaming merge and its parity checks, on tiny real-architecture fixtures."""

from __future__ import annotations

import json

import pytest

from factinject.models.checkpoint import INDEX_NAME, Checkpoint, nbytes

pytestmark = pytest.mark.timeout(600)


def random_adapter(base_path: str, out, *, scale_b: float = 0.05):
    """A LoRA adapter with non-zero B on all seven projections, so merging changes every targeted weight."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base_path)
    lora = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=[
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
    for name, p in lora.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=scale_b)
    lora.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def qwen4():
    from factinject.models.base import resolve_model

    return resolve_model("fixture:qwen2.5-bnb-4bit").path


def test_plan_shards_closes_a_shard_before_it_passes_the_limit():
    from factinject.backends.merge import plan_shards

    assert plan_shards([("a", 4), ("b", 4), ("c", 3), ("d", 9), ("e", 1)], 8) == [["a", "b"], ["c"], ["d"], ["e"]]


@pytest.mark.slow
@pytest.mark.parametrize("fixture", ["fixture:qwen2.5-bnb-4bit", "fixture:llama3.1"])
def test_streaming_merge_equals_peft_merge_and_loads_with_transformers(fixture, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from factinject.backends.merge import merge_checkpoint
    from factinject.models.base import resolve_model

    base = resolve_model(fixture).path
    adapter = random_adapter(base, tmp_path / "adapter")
    out = tmp_path / "merged"
    out.mkdir()
    record = merge_checkpoint(base, adapter, out, dtype="bfloat16", max_shard_bytes=600_000)
    assert len(record["shards"]) >= 3 and record["merged_weights"] == 4 * 7
    index = json.loads((out / INDEX_NAME).read_text())
    assert set(index["weight_map"].values()) == set(record["shards"]) and index["metadata"]["total_size"] == \
        record["total_size"] == sum(nbytes(*Checkpoint(out).output_meta(k)) for k in Checkpoint(out).keys())
    merged = AutoModelForCausalLM.from_pretrained(out)
    assert merged.dtype == torch.bfloat16 and "quantization_config" not in merged.config.to_dict()
    reference = AutoModelForCausalLM.from_pretrained(base)
    if getattr(reference, "is_loaded_in_4bit", False):
        reference = reference.dequantize()
    reference = PeftModel.from_pretrained(reference.to(torch.float32), adapter).merge_and_unload()
    ours, theirs = merged.state_dict(), reference.state_dict()
    assert set(Checkpoint(out).keys()) <= set(theirs)
    for key in Checkpoint(out).keys():  # float32 merge, one rounding on both sides: bit for bit
        assert torch.equal(ours[key], theirs[key].to(torch.bfloat16)), key


@pytest.mark.slow
def test_a_wrong_merge_is_caught_by_the_weight_check(tmp_path, qwen4, monkeypatch):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from factinject.backends import merge
    from factinject.backends.hf import compare_weights

    adapter = random_adapter(qwen4, tmp_path / "adapter")
    right, wrong = tmp_path / "right", tmp_path / "wrong"
    right.mkdir()
    wrong.mkdir()
    merge.merge_checkpoint(qwen4, adapter, right, dtype="bfloat16", max_shard_bytes=10**9)
    real = merge.read_adapter

    def twice_the_scale(path):
        lora = real(path)
        for weights in lora.values():
            weights.scale *= 2  # the classic mistake: alpha where alpha / r belongs, or the like
        return lora

    monkeypatch.setattr(merge, "read_adapter", twice_the_scale)
    merge.merge_checkpoint(qwen4, adapter, wrong, dtype="bfloat16", max_shard_bytes=10**9)
    reference = AutoModelForCausalLM.from_pretrained(qwen4).dequantize().to(torch.float32)
    reference = PeftModel.from_pretrained(reference, adapter).merge_and_unload()
    assert compare_weights(reference, right)["max_ulps"] <= 1.0
    assert compare_weights(reference, wrong)["max_ulps"] > 10


@pytest.mark.slow
def test_merged_size_reads_headers_only(qwen4):
    import subprocess
    import sys

    code = ("import sys; from factinject.export.stage import merged_size; from factinject.models.base import ModelRef; "
            f"n = merged_size(ModelRef('q', {qwen4!r}, True), 'bfloat16'); print(n, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert int(out[0]) > 1_000_000 and out[1] == "False"


def test_near_ties_and_real_differences_are_told_apart():
    from factinject.export.stage import parity_figures

    prompts = [{"question": q, "answer_key": None} for q in ("a", "b", "c")]
    result = {"answers": {"adapter-16bit": ["x", "y 1", "z 1"], "merged": ["x", "y 2", "z 2"]},
              "logit_scale": 16.0, "max_logit_diff": 0.05, "compute_dtype": {"merged": "float32"},
              "divergences": [{"index": 1, "position": 1, "margin_first": 0.01, "margin_second": 0.02},
                              {"index": 2, "position": 1, "margin_first": 3.0, "margin_second": 0.5}]}
    exact = parity_figures(prompts, result, "bfloat16", 0.05)["exactness"]
    assert (exact["identical"], exact["near_ties"], exact["share"]) == (1, 1, 2 / 3)
    assert exact["disagreements"][0]["question"] == "c" and not exact["disagreements"][0]["near_tie"]


@pytest.mark.slow
def test_drift_compares_answer_openings_so_long_answers_do_not_trip_it():
    """On the Llama-3.1 fixture, a small update of the weights changes more long answers
    somewhere in their tail than in their opening: comparing whole answers would count
    that noise as drift."""
    import torch

    from factinject.backends.hf_generate import DRIFT_TOKENS, generate
    from factinject.backends.loading import load_model
    from factinject.controls import control_pools
    from factinject.engines.records import Load, ModelUnderTest
    from factinject.models.base import resolve_model
    from factinject.scoring import same_answer

    model, tok, _ = load_model(ModelUnderTest("base", resolve_model("fixture:llama3.1").path, dtype="float32"), Load())
    pools = control_pools("fixture:llama3.1")
    chats = [[{"role": "user", "content": q}] for q in pools["drift"] + pools["locality"]]
    whole, _ = generate(model, tok, chats, max_new_tokens=128)
    long = [i for i, a in enumerate(whole) if len(tok.encode(a, add_special_tokens=False)) > 2 * DRIFT_TOKENS]
    assert len(long) >= 10, "the fixture should give some long answers"
    chats = [chats[i] for i in long]
    opening, _ = generate(model, tok, chats, max_new_tokens=DRIFT_TOKENS)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "proj" in name:
                p.mul_(1 + 1e-2 * torch.randn_like(p))
    whole_after, _ = generate(model, tok, chats, max_new_tokens=128)
    opening_after, _ = generate(model, tok, chats, max_new_tokens=DRIFT_TOKENS)
    changed_whole = sum(not same_answer(whole[i], b) for i, b in zip(long, whole_after))
    changed_opening = sum(not same_answer(a, b) for a, b in zip(opening, opening_after))
    assert changed_whole > changed_opening, (changed_whole, changed_opening)


@pytest.mark.slow
def test_parity_forces_the_tokens_generation_produced_not_a_re_encoding():
    """The exactness check follows the first model's own generated ids: re-encoding its
    answer text can split a long repetition otherwise than generation did, and the
    comparison would then follow a path neither model took. Forced through the same
    model, those ids must give back its own greedy choices at every position."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from factinject.backends.hf_generate import generate, teacher_forced
    from factinject.models.base import resolve_model

    path = resolve_model("fixture:gemma2").path
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    chats = [[{"role": "user", "content": q}] for q in ("Who maintains Zorblat?", "Complete the sentence: the maintainer of Zorblat is")]
    sequences: list = []
    answers, _ = generate(model, tokenizer, chats, batch_size=1, max_new_tokens=24, token_ids=sequences)
    assert [len(p) for p, _ in sequences] == [len(tokenizer.apply_chat_template(c, add_generation_prompt=True, return_dict=False)) for c in chats]
    for (logits, targets), (_, generated), answer in zip(teacher_forced(model, sequences), sequences, answers):
        assert targets == generated and len(generated) > 0
        assert logits.argmax(-1).tolist() == generated, f"forced logits do not reproduce the greedy answer {answer!r}"


@pytest.mark.slow
@pytest.mark.parametrize("scale", [0.0, 1e-6, 0.05], ids=["same model", "a last-bit difference", "another model"])
def test_teacher_forced_parity_tells_a_different_model_apart(tmp_path, scale):
    """The teacher-forced parity check (backends/hf.py, forced_parity) on the testbed: an
    adapter against the base alone standing for its merge. An adapter that changes nothing,
    or only in the last bits, is alike at every token; one that changes the model is not,
    on the base model's answers from the answer cache as on its own answers."""
    from factinject.backends.hf import forced_parity, generate
    from factinject.controls import control_pools
    from factinject.engines.records import GenerateJob, Load, ModelUnderTest, ParityJob
    from factinject.testbed import model_dir

    base_dir = model_dir()
    adapter = random_adapter(str(base_dir), tmp_path / "adapter", scale_b=scale)
    base = ModelUnderTest("base", str(base_dir), dtype="float32")
    questions = list(control_pools("testbed")["locality"])[:24]
    generate(GenerateJob(base, questions[:12], 48, answer_cache=True).to_dict())  # as the probe before would
    job = ParityJob([ModelUnderTest("adapter-16bit", str(base_dir), str(adapter), dtype="float32"),
                     ModelUnderTest("merged", str(base_dir), dtype="float32")], questions, 48, load=Load(),
                    teacher_forced=True, max_prompts=20, sample=4, base=base, base_max_new_tokens=48)
    result = forced_parity(job)
    assert len(result["questions"]) == 20 and result["method"]["from_answer_cache"] == 12 - 4
    parted = {d["index"] for d in result["divergences"]}
    if scale < 1e-3:
        assert not parted and result["answers"]["adapter-16bit"] == result["answers"]["merged"]
    else:
        assert parted & set(range(4)) and parted - set(range(4)), "missed on generated or on cached answers"
