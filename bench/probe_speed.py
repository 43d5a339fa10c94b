"""Probe speed: the hf engine against the vllm engine, on the same prompts and model.

    python bench/probe_speed.py [--n 800] [--adapter exports/tinyllm/adapter] [--threads 2]
    python bench/probe_speed.py --batching     # hf only: batched against one prompt at a time

Each engine answers in its own child process, exactly as `factinject probe` runs it
(engines/process.py), on the embedded testbed model (CPU, float32): held-out world questions and
general prompts, greedy, 64 new tokens. Prints, per engine, the start-up (interpreter,
imports, model load), the generation time, prompts/s for generation alone and for the
whole job, the ratio vllm/hf, and how many answers are identical. With an NVIDIA GPU,
a second half runs the same comparison on the Llama-3.1 fixture in bf16 on the GPU.
vLLM must be installed (the vLLM lane's environment, see README). Time it on an
otherwise idle machine: both engines use every core they are given.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _questions(n: int) -> list[str]:
    from factinject.controls import general_prompts
    from factinject.testbed import load_heldout

    rng = random.Random(0)
    world = [r["question"] for r in load_heldout()]
    general = general_prompts()
    return rng.sample(world, min(len(world), n - n // 4)) + rng.sample(general, min(len(general), n // 4))


def _time_engine(engine: str, target, questions: list[str], max_new_tokens: int) -> dict:
    from factinject.engines.process import run_job
    from factinject.engines.records import GenerateJob, Load

    job = GenerateJob(target, questions, max_new_tokens, load=Load(device="auto"))
    started = time.perf_counter()
    result = run_job(engine, "generate", job.to_dict())
    result["wall_seconds"] = time.perf_counter() - started
    return result


def compare_engines(target, questions: list[str], max_new_tokens: int, title: str) -> None:
    runs = {engine: _time_engine(engine, target, questions, max_new_tokens) for engine in ("hf", "vllm")}
    n = len(questions)
    print(f"\n{title}: {n} prompts, {max_new_tokens} new tokens, model {target.path}"
          f"{' + adapter ' + target.adapter if target.adapter else ''} ({target.dtype})")
    print(f"{'engine':6} {'start-up s':>10} {'generate s':>10} {'gen prompts/s':>14} {'job s':>7} {'job prompts/s':>14}")
    for engine, r in runs.items():
        startup = r["wall_seconds"] - r["generate_seconds"]
        print(f"{engine:6} {startup:10.1f} {r['generate_seconds']:10.1f} {n / r['generate_seconds']:14.1f} "
              f"{r['wall_seconds']:7.1f} {n / r['wall_seconds']:14.1f}")
    hf, vllm = runs["hf"], runs["vllm"]
    same = sum(a == b for a, b in zip(hf["answers"], vllm["answers"]))
    print(f"vllm/hf speed: generation {hf['generate_seconds'] / vllm['generate_seconds']:.2f}x, "
          f"whole job {hf['wall_seconds'] / vllm['wall_seconds']:.2f}x; identical answers {same}/{n}; "
          f"vLLM {vllm['vllm_version']}, engine {vllm['engine']}")


def compare_batching(questions: list[str], batch_size: int) -> None:
    import torch

    from factinject.backends.hf_generate import generate_answers
    from factinject.testbed import load_model

    model, tokenizer = load_model()
    chats = [[{"role": "user", "content": q}] for q in questions]
    generate_answers(model, tokenizer, chats[:8], batch_size=8)  # warm-up
    t0 = time.perf_counter()
    batched = generate_answers(model, tokenizer, chats, batch_size=batch_size)
    t_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    single = generate_answers(model, tokenizer, chats, batch_size=1)
    t_single = time.perf_counter() - t0
    same = sum(a == b for a, b in zip(batched, single))
    print(f"prompts={len(chats)} batch_size={batch_size} threads={torch.get_num_threads()}")
    print(f"one at a time : {t_single:6.2f}s  ({len(chats) / t_single:5.1f} prompts/s)")
    print(f"batched       : {t_batched:6.2f}s  ({len(chats) / t_batched:5.1f} prompts/s)")
    print(f"speed-up      : {t_single / t_batched:.1f}x   identical answers: {same}/{len(chats)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=800, help="prompts (a probe of facts/tinyllm.md asks 810)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--adapter", help="also time the testbed with this LoRA adapter (vLLM: LoRARequest)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads each engine may use")
    parser.add_argument("--batching", action="store_true", help="hf only: batched against one prompt at a time")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the children's torch and vLLM read it
    if args.threads < (os.cpu_count() or 1):
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = "nobind"  # let vLLM follow OMP_NUM_THREADS, not every core
    questions = _questions(args.n)
    if args.batching:
        import torch

        torch.set_num_threads(args.threads)
        compare_batching(questions, args.batch_size)
        return
    import torch

    from factinject.engines.records import ModelUnderTest
    from factinject.testbed import model_dir

    base = str(model_dir())
    compare_engines(ModelUnderTest("base", base, dtype="float32"), questions, args.max_new_tokens, "CPU, testbed")
    if args.adapter:
        target = ModelUnderTest("adapter", base, str(Path(args.adapter).resolve()), dtype="float32",
                                tokenizer=str(Path(args.adapter).resolve()))
        compare_engines(target, questions, args.max_new_tokens, "CPU, testbed + adapter")
    if not torch.cuda.is_available():
        print("\nGPU half: no CUDA device here, skipped.")
        return
    from factinject.models.fixtures import fixture_path

    compare_engines(ModelUnderTest("base", str(fixture_path("fixture:llama3.1")), dtype="bfloat16"), questions,
                    args.max_new_tokens, "GPU, Llama-3.1 fixture")


if __name__ == "__main__":
    main()
