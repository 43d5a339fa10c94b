"""Sizing the vLLM engine for a probe: the arithmetic of docs/recipes.md, the engine
arguments the vllm engine passes, and what it refuses. No vLLM needed."""

from __future__ import annotations

import json

import pytest

from factinject.backends.vllm_sizing import (
    CARD_24GB,
    GiB,
    ModelShape,
    lora_rank_slot,
    max_model_len,
    plan_engine,
)
from factinject.engines.records import GenerateJob, ModelUnderTest
from factinject.errors import FactinjectError

LLAMA_31_8B = {"num_hidden_layers": 32, "hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32,
               "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 128256, "tie_word_embeddings": False,
               "max_position_embeddings": 131072}


def test_llama_31_8b_shape_weights_and_kv_cache():
    shape = ModelShape.from_config(LLAMA_31_8B)
    assert shape.params == 8_030_261_248, "Llama-3.1-8B's published parameter count"
    assert shape.weight_bytes("bfloat16") == 2 * shape.params
    assert 5.2 * GiB < shape.weight_bytes("nf4") < 5.4 * GiB
    assert shape.kv_bytes_per_token(2) == 2 * 32 * 8 * 128 * 2 == 128 * 1024
    assert shape.lora_bytes(16) == 32 * 16 * 81920 * 2


def test_the_defaults_fit_a_24gb_card_at_the_probes_length_and_not_at_128k():
    shape = ModelShape.from_config(LLAMA_31_8B)
    length = max_model_len([70], 256, shape.max_positions)
    assert length == 336
    for weights, rank in (("bfloat16", None), ("bfloat16", 16), ("nf4", 16)):
        plan = plan_engine(shape, weights=weights, max_model_len=length, device_bytes=CARD_24GB, utilization=0.85,
                           lora_rank=rank)
        assert plan.fits and plan.max_num_seqs >= 64, (weights, rank, plan.explain())
        whole_context = plan_engine(shape, weights=weights, max_model_len=131072, device_bytes=CARD_24GB,
                                    utilization=0.85, lora_rank=rank)
        assert not whole_context.fits, "the model's 128k context needs 16 GiB of KV cache for one sequence"
    merged = plan_engine(shape, weights="bfloat16", max_model_len=length, device_bytes=CARD_24GB, utilization=0.85)
    assert merged.max_num_seqs == 72 and "14.96 GiB" in merged.explain()
    too_small = plan_engine(shape, weights="bfloat16", max_model_len=length, device_bytes=16 * GiB, utilization=0.85)
    assert not too_small.fits and too_small.max_num_seqs == 0


def test_max_model_len_rounds_to_blocks_and_stops_at_the_models_limit():
    assert max_model_len([10, 33], 64) == 112
    assert max_model_len([10], 6) == 16
    assert max_model_len([500], 256, limit=512) == 512
    assert max_model_len([], 64) == 80


def test_lora_rank_slots():
    assert [lora_rank_slot(r) for r in (1, 2, 8, 12, 16, 17, 300, 512)] == [1, 8, 8, 16, 16, 32, 320, 512]
    assert lora_rank_slot(1024) is None


def _job(tmp_path, adapter_r=None, questions=("Who?",), **target):
    adapter = None
    if adapter_r is not None:
        adapter = tmp_path / "adapter"
        adapter.mkdir()
        (adapter / "adapter_config.json").write_text(json.dumps({"r": adapter_r, **target.pop("adapter_extra", {})}))
    return GenerateJob(ModelUnderTest("adapter" if adapter else "base", str(tmp_path), str(adapter) if adapter else None,
                                      **target), list(questions), max_new_tokens=64, max_lora_rank=16)


def test_cpu_engine_args_size_the_kv_cache_to_the_batch(tmp_path):
    from factinject.backends.vllm import engine_args

    config = {**LLAMA_31_8B, "max_position_embeddings": 512}
    args = engine_args(_job(tmp_path, adapter_r=32, dtype="float32"), config, [40, 90, 60], cpu=True)
    assert args["max_model_len"] == 160 and args["max_num_seqs"] == 3 and args["enforce_eager"]
    assert args["kv_cache_memory_bytes"] == 3 * 160 * ModelShape.from_config(config).kv_bytes_per_token(4)
    assert args["dtype"] == "float32" and args["skip_tokenizer_init"], "prompts are token ids of the run's tokenizer"
    assert args["enable_lora"] and args["max_lora_rank"] == 32, "raised to the adapter's own rank"
    assert "gpu_memory_utilization" not in args, "on a CPU vLLM would reserve that share of the RAM"


def test_vllm_engine_refuses_what_it_cannot_run(tmp_path):
    from factinject.backends.vllm import check_loadable, engine_args

    with pytest.raises(FactinjectError, match="which vLLM cannot load"):
        check_loadable(ModelUnderTest("adapter", "m", load_in_4bit=True))
    for sub in ("full", "wide"):
        (tmp_path / sub).mkdir()
    with pytest.raises(FactinjectError, match="LoRA loader cannot take"):
        engine_args(_job(tmp_path / "full", adapter_r=16, adapter_extra={"modules_to_save": ["lm_head"]}),
                    LLAMA_31_8B, [9], cpu=True)
    with pytest.raises(FactinjectError, match="larger than vLLM's largest"):
        engine_args(_job(tmp_path / "wide", adapter_r=1024), LLAMA_31_8B, [9], cpu=True)
    with pytest.raises(FactinjectError, match="whole context"):
        engine_args(_job(tmp_path), {**LLAMA_31_8B, "max_position_embeddings": 128}, [200], cpu=True)


def test_probe_sends_4bit_models_to_hf_under_vllm():
    from factinject.engines.choice import engine_for

    assert engine_for(ModelUnderTest("adapter", "m", "a", load_in_4bit=True), "vllm") == "hf"
    assert engine_for(ModelUnderTest("base", "m", load_in_4bit=True, dequantize=True), "vllm") == "hf"
    assert engine_for(ModelUnderTest("merged", "m", dtype="bfloat16"), "vllm") == "vllm"
    assert engine_for(ModelUnderTest("adapter", "m", "a", load_in_4bit=True), "hf") == "hf"


def test_engine_agreement_lists_every_disagreement_and_the_report_shows_them():
    from factinject.probe.report import agreement_lines
    from factinject.probe.stage import engine_agreement

    ours = {"q1": "Paris.", "q2": "Jason Cox.", "q3": "MIT"}
    theirs = {"q1": "Paris.", "q2": "Jason  Cox.", "q3": "MIT"}
    agreement = engine_agreement("vllm", "hf", {"base": (ours, dict(ours)), "merged": (ours, theirs)})
    assert agreement["overall"]["count"] == 5 and agreement["overall"]["n"] == 6
    assert agreement["models"]["base"]["share"] == 1.0
    assert agreement["models"]["merged"]["disagreements"] == [{"question": "q2", "vllm": "Jason Cox.",
                                                               "hf": "Jason  Cox."}]
    text = "\n".join(agreement_lines({"engine_agreement": agreement, "engines": {"base": "vllm", "merged": "vllm"}}))
    assert "## Engine agreement" in text and "| merged | q2 | Jason Cox. | Jason  Cox. |" in text


def test_vllm_asked_for_without_vllm_installed_is_a_clear_error(monkeypatch):
    from factinject.engines import choice as engines

    monkeypatch.setattr(engines, "installed", lambda module: False)
    with pytest.raises(FactinjectError, match="vLLM is not installed"):
        engines.generation_engine("vllm")
    assert engines.generation_engine("auto") == "hf" and engines.generation_engine("hf") == "hf"
