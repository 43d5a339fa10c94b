"""The vllm engine: greedy answers from vLLM's offline `LLM`, one engine per child process.

The prompts are token ids rendered with the run's own tokenizer and chat template
(the tokenizer of the adapter or export folder, which carries the template used in
training), so vLLM adds nothing: no second BOS, no template of its own. Generation
stops on every end-of-turn id (eos, the template's end marker, the generation
config's eos list), not only on eos. The adapter goes through a `LoRARequest` on the
base model; a merged export is loaded as a plain model.
"""

from __future__ import annotations

from pathlib import Path

from factinject.targets import GenerateJob


def max_model_len(prompt_lengths: list[int], max_new_tokens: int) -> int:
    """Room for the longest prompt and its answer, not the model's whole context: the KV
    cache vLLM reserves grows with this, and 128k tokens of it would not fit a 24 GB card."""
    longest = max(prompt_lengths, default=1)
    return -(-(longest + max_new_tokens) // 16) * 16  # a whole number of 16-token blocks


def generate(data: dict) -> dict:
    import time

    import torch
    from transformers import GenerationConfig
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest

    from factinject.backends.hf_generate import stop_ids
    from factinject.models import ModelRef, load_tokenizer, quiet_libraries

    quiet_libraries()
    job = GenerateJob.from_dict(data)
    target = job.target
    started = time.perf_counter()
    tokenizer = load_tokenizer(ModelRef(target.label, target.tokenizer or target.adapter or target.path, target.local),
                               chat_template=job.load.chat_template, trust_remote_code=job.load.trust_remote_code)
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                             tokenize=True, return_dict=False) for q in job.questions]
    try:
        generation = GenerationConfig.from_pretrained(target.path)
    except OSError:
        generation = GenerationConfig()

    class _Model:
        generation_config = generation

    stops = stop_ids(_Model, tokenizer)
    cpu = not torch.cuda.is_available()
    llm = LLM(model=target.path, tokenizer=target.path, enable_lora=bool(target.adapter),
              max_lora_rank=max(job.max_lora_rank, 8), max_model_len=max_model_len([len(p) for p in prompts],
                                                                                  job.max_new_tokens),
              seed=0, trust_remote_code=job.load.trust_remote_code, gpu_memory_utilization=job.gpu_memory_utilization,
              dtype="float32" if cpu else "auto", enforce_eager=cpu,
              quantization="bitsandbytes" if target.load_in_4bit and not cpu else None)
    loaded = time.perf_counter()
    lora = LoRARequest("factinject", 1, str(Path(target.adapter).resolve())) if target.adapter else None
    params = SamplingParams(temperature=0.0, max_tokens=job.max_new_tokens, stop_token_ids=stops,
                            skip_special_tokens=True)
    outputs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, lora_request=lora, use_tqdm=False)
    answers = [o.outputs[0].text.strip() for o in outputs]
    finished = [o.outputs[0].finish_reason == "stop" for o in outputs]
    return {"answers": answers, "finished": finished, "device": "cpu" if cpu else "cuda",
            "load_seconds": round(loaded - started, 2), "generate_seconds": round(time.perf_counter() - loaded, 2)}
