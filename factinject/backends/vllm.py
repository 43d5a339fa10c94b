"""The vllm engine: greedy answers from vLLM's offline `LLM`, one engine per child process.

The prompts are token ids rendered with the run's own tokenizer and chat template
(the tokenizer of the adapter or export folder, which carries the template used in
training), so vLLM adds nothing: no second BOS, no template of its own, and it loads
no tokenizer at all. Generation stops on every end-of-turn id (eos, the template's
end marker, the generation config's eos list), not only on eos, and the generated
ids are decoded by the same function as the hf engine's, so answers compare as text.
The adapter goes through a `LoRARequest` on the base model; a merged export is
loaded as a plain model.

Memory: `max_model_len` is the longest prompt plus max_new_tokens (not the model's
128k context), and vllm_sizing.py checks before the engine starts that the weights, the
LoRA slot, a working reserve and the KV cache of at least one sequence fit in
`gpu_memory_utilization` of the card. On a CPU the KV cache gets exactly what the
probe's batch needs, and the engine runs inside this (already dedicated) process
rather than in a process of its own: that saves two interpreter starts and imports.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from factinject.backends.loading import token_prompts
from factinject.engines.records import GenerateJob, ModelUnderTest
from factinject.errors import FactinjectError

CPU_MAX_NUM_SEQS = 64  # sequences per step on a CPU: larger batches stop paying there
NO_NF4_FIX = "probe 4-bit models with --backend hf (probe --backend vllm does this by itself), or export --merged"


def generate(data: dict) -> dict:
    job = GenerateJob.from_dict(data)
    target = job.target
    check_loadable(target)
    started = time.perf_counter()
    import torch

    from factinject.models.base import quiet_libraries

    cpu = not torch.cuda.is_available()
    if cpu:  # must be set before vLLM reads its environment
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")  # our own bar and messages; its errors still show
    quiet_libraries()
    tokenizer, prompts, stops = token_prompts(job)
    config = _read_config(target)
    engine = engine_args(job, config, [len(p) for p in prompts], cpu)
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest

    llm = LLM(model=target.path, **engine)
    loaded = time.perf_counter()
    lora = LoRARequest("adapter", 1, str(Path(target.adapter).resolve())) if target.adapter else None
    # detokenize=False: the ids are decoded below, by the same function as the hf engine's
    # one SamplingParams per prompt: each probe set has its own answer budget
    params = [SamplingParams(temperature=0.0, max_tokens=budget, stop_token_ids=stops, detokenize=False)
              for budget in job.budget_list()]
    answers, finished, ended_with = _answer(llm, prompts, params, lora, tokenizer, stops, target.label,
                                            chunk=4 * engine["max_num_seqs"])
    import vllm

    return {"answers": answers, "finished": finished, "ended_with": ended_with, "device": "cpu" if cpu else "cuda",
            "load_seconds": round(loaded - started, 2), "generate_seconds": round(time.perf_counter() - loaded, 2),
            "pid": os.getpid(), "stop_ids": stops, "vllm_version": vllm.__version__,
            "engine": {k: v for k, v in engine.items() if k in ("max_model_len", "max_num_seqs", "dtype",
                                                                 "gpu_memory_utilization", "kv_cache_memory_bytes",
                                                                 "max_lora_rank")}}


def check_loadable(target: ModelUnderTest) -> None:
    """vLLM has no bitsandbytes support (NF4 checkpoints, NF4 on load, or their dequantization)."""
    if target.load_in_4bit:
        raise FactinjectError(f"the {target.label} model is 4-bit NF4 (bitsandbytes), which vLLM cannot load",
                              where=target.path, fix=NO_NF4_FIX)


def _read_config(target: ModelUnderTest) -> dict:
    from factinject.models.base import read_config

    return read_config(target.path, target.local)


def engine_args(job: GenerateJob, config: dict, prompt_lengths: list[int], cpu: bool) -> dict:
    """The LLM(...) keyword arguments: sized for this probe and this device, or a clear error."""
    from factinject.backends.loading import torch_dtype
    from factinject.backends.vllm_sizing import (
        GiB,
        ModelShape,
        max_model_len,
        plan_engine,
    )

    target = job.target
    shape = ModelShape.from_config(config)
    length = max_model_len(prompt_lengths, max(job.budget_list(), default=job.max_new_tokens), shape.max_positions)
    if shape.max_positions and max(prompt_lengths, default=0) >= shape.max_positions:
        raise FactinjectError(f"a probe prompt is {max(prompt_lengths)} tokens long, as long as the {target.label} "
                              f"model's whole context ({shape.max_positions})", where=target.path,
                              fix="shorten the questions of your exam file")
    dtype = str(torch_dtype(target.dtype, "cpu" if cpu else "cuda")).removeprefix("torch.")
    dtype_bytes = 4 if dtype == "float32" else 2
    args = {"skip_tokenizer_init": True, "max_model_len": length, "dtype": dtype, "seed": 0,
            "trust_remote_code": job.load.trust_remote_code, "enforce_eager": cpu}
    rank = None
    if target.adapter:
        rank = lora_slot(target.adapter, job.max_lora_rank)
        args.update(enable_lora=True, max_lora_rank=rank, max_loras=1, max_cpu_loras=1)
    if cpu:
        seqs = max(1, min(CPU_MAX_NUM_SEQS, len(prompt_lengths)))
        kv = seqs * length * shape.kv_bytes_per_token(dtype_bytes)
        args.update(max_num_seqs=seqs, kv_cache_memory_bytes=max(kv, 16 << 20))
        return args
    import torch

    total = torch.cuda.mem_get_info()[1]
    plan = plan_engine(shape, weights=dtype, max_model_len=length, device_bytes=total,
                       utilization=job.gpu_memory_utilization, lora_rank=rank, kv_dtype_bytes=dtype_bytes)
    if not plan.fits:
        raise FactinjectError(f"the {target.label} model does not fit this GPU for probing: {plan.explain()}",
                              where=target.path,
                              fix=f"raise generate.gpu_memory_utilization (now {job.gpu_memory_utilization}) or lower "
                                  f"generate.max_new_tokens in the recipe, or probe on a GPU with more than "
                                  f"{total / GiB:.0f} GiB")
    args.update(gpu_memory_utilization=job.gpu_memory_utilization, max_num_seqs=plan.max_num_seqs)
    return args


def lora_slot(adapter: str, recipe_rank: int) -> int:
    """max_lora_rank for vLLM: the recipe's, raised to the adapter's own rank, rounded up
    to a rank vLLM accepts. An adapter vLLM's LoRA loader cannot take is refused here."""
    from factinject.backends.vllm_sizing import VLLM_LORA_RANKS, lora_rank_slot

    config = json.loads((Path(adapter) / "adapter_config.json").read_text(encoding="utf-8"))
    if config.get("modules_to_save"):
        raise FactinjectError(f"the adapter trains whole modules ({', '.join(config['modules_to_save'])}), which "
                              "vLLM's LoRA loader cannot take", where=Path(adapter) / "adapter_config.json",
                              fix="probe this run with --backend hf, or export --merged and probe the merged model")
    ranks = [config.get("r") or 0, *(config.get("rank_pattern") or {}).values()]
    slot = lora_rank_slot(max(recipe_rank, *ranks))
    if slot is None:
        raise FactinjectError(f"the adapter's LoRA rank {max(recipe_rank, *ranks)} is larger than vLLM's largest "
                              f"({VLLM_LORA_RANKS[-1]})", where=Path(adapter) / "adapter_config.json",
                              fix="probe this run with --backend hf, or export --merged and probe the merged model")
    return slot


def _answer(llm, prompts: list[list[int]], params, lora, tokenizer, stops: list[int], label: str, chunk: int):
    """(answers, finished, the stop id that ended each answer or None) in input order, a
    chunk of prompts at a time for the progress bar."""
    from factinject.backends.hf_generate import decode_answer
    from factinject.progress import counter

    answers: list[str] = []
    finished: list[bool] = []
    ended_with: list[int | None] = []
    with counter(f"[bold]probe[/] {label} (vllm)", len(prompts)) as bar:
        for start in range(0, len(prompts), chunk):
            batch = [{"prompt_token_ids": p} for p in prompts[start:start + chunk]]
            for out in llm.generate(batch, params[start:start + chunk], lora_request=lora, use_tqdm=False):
                ids = list(out.outputs[0].token_ids)
                answer, done = decode_answer(tokenizer, ids, stops)
                answers.append(answer)
                finished.append(done)
                ended_with.append(next((t for t in ids if t in stops), None))
            bar.advance(len(batch))
    return answers, finished, ended_with
