"""The llamacpp engine: greedy answers from a real llama.cpp (the `xllamacpp` wheel) on a
GGUF file, the file a user runs in llama.cpp, Ollama or LM Studio.

As with vLLM, the prompts are token ids rendered with the run's own tokenizer and chat
template (`target.tokenizer`: the merged export's folder, or the base's), so llama.cpp
applies no template of its own; the answer's ids come back (as the log-probabilities of
the chosen tokens) and are decoded by the same function as the hf engine's, so answers
compare as text. llama.cpp stops at the file's end-of-generation tokens (the export
writes the end of turn among them) and at the budget. Prompts run in parallel slots
(continuous batching), one request per answer budget.
"""

from __future__ import annotations

import os
import time

from factinject.backends.loading import token_prompts
from factinject.engines.records import GenerateJob, ModelUnderTest
from factinject.errors import FactinjectError

SLOTS = 8  # sequences llama.cpp decodes at once: on a CPU more stop paying, and each needs its context
CHUNK = 32  # prompts per request: the progress bar moves between requests


def generate(data: dict) -> dict:
    job = GenerateJob.from_dict(data)
    target = job.target
    check_loadable(target)
    started = time.perf_counter()
    import xllamacpp

    assert target.tokenizer, f"a GGUF target names the folder of its tokenizer ({target.label})"
    # stop ids from that folder's generation config: the GGUF file is not a folder
    tokenizer, prompts, stops = token_prompts(job, generation_config=target.tokenizer)
    budgets = job.budget_list()
    slots = max(1, min(SLOTS, len(prompts)))
    params = xllamacpp.CommonParams()
    params.model.path = target.path
    # The context is shared by the slots: each gets the longest prompt and the largest budget.
    params.n_ctx = slots * (max((len(p) for p in prompts), default=1) + max(budgets, default=job.max_new_tokens) + 8)
    params.n_parallel = slots
    params.cpuparams.n_threads = params.cpuparams_batch.n_threads = threads()
    params.verbosity = -1  # llama.cpp's own log says nothing a probe needs; errors still raise
    server = xllamacpp.Server(params)
    loaded = time.perf_counter()
    answers, finished = _answer(server, prompts, budgets, tokenizer, stops, target.label)
    del server
    return {"answers": answers, "finished": finished, "device": "cpu", "stop_ids": stops,
            "load_seconds": round(loaded - started, 2), "generate_seconds": round(time.perf_counter() - loaded, 2),
            "pid": os.getpid(), "llamacpp_version": xllamacpp.__version__, "slots": slots}


def threads() -> int:
    """The cores this process may use (OMP_NUM_THREADS where a sweep sets it), as torch takes them."""
    given = os.environ.get("OMP_NUM_THREADS", "")
    if given.isdigit() and int(given) > 0:
        return int(given)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def check_loadable(target: ModelUnderTest) -> None:
    """llama.cpp reads one GGUF file: not a model folder, not a LoRA adapter folder."""
    if target.adapter or not target.path.lower().endswith(".gguf") or not os.path.isfile(target.path):
        raise FactinjectError(f"the llamacpp engine answers GGUF files, and the {target.label} model is "
                              f"{target.adapter or target.path}", where=target.adapter or target.path,
                              fix="export the run as GGUF first (`factinject export --gguf q8_0`), then probe "
                                  "with --backend llamacpp")


def _answer(server, prompts: list[list[int]], budgets: list[int], tokenizer, stops: list[int], label: str):
    """(answers, finished) in input order. Prompts of one budget go together, CHUNK at a time."""
    from factinject.backends.hf_generate import decode_answer
    from factinject.progress import counter

    answers: list[str] = [""] * len(prompts)
    finished: list[bool] = [False] * len(prompts)
    by_budget: dict[int, list[int]] = {}
    for i, budget in enumerate(budgets):
        by_budget.setdefault(budget, []).append(i)
    with counter(f"[bold]probe[/] {label} (llama.cpp)", len(prompts)) as bar:
        for budget, indices in sorted(by_budget.items()):
            for start in range(0, len(indices), CHUNK):
                part = indices[start:start + CHUNK]
                out = server.handle_completions({"prompt": [prompts[i] for i in part], "n_predict": budget,
                                                 "temperature": 0.0, "logprobs": 1, "cache_prompt": True})
                if "choices" not in out:
                    raise FactinjectError(f"llama.cpp refused the request: {out.get('error', out)}",
                                          fix="check that the GGUF file is complete (export it again with --force)")
                for choice in out["choices"]:
                    i = part[choice["index"]]
                    ids = [t["id"] for t in (choice.get("logprobs") or {}).get("content", [])]
                    answers[i], ended = decode_answer(tokenizer, ids, stops)
                    # llama.cpp leaves the end-of-generation token out of the answer's tokens
                    finished[i] = ended or choice.get("finish_reason") == "stop"
                bar.advance(len(part))
    return answers, finished
