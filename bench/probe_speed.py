"""Batched probing against one prompt at a time, on the same prompts and model.

    python bench/probe_speed.py [--n 200] [--batch-size 64]

Both runs use factinject's hf generator code path (greedy, left padding, stop at
eos) on the embedded testbed model; the baseline passes batch_size=1. Prints the
seconds of each, the ratio, and checks the answers are identical (batching must
not change what the model says).
"""

from __future__ import annotations

import argparse
import random
import time

import torch

from factinject.backends.hf_generate import generate_answers
from factinject.controls import general_prompts
from factinject.testbed import load_heldout, load_model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(2)
    model, tokenizer = load_model()
    rng = random.Random(0)
    questions = rng.sample([r["question"] for r in load_heldout()], args.n // 2) + rng.sample(general_prompts(), args.n // 2)
    chats = [[{"role": "user", "content": q}] for q in questions]
    generate_answers(model, tokenizer, chats[:8], batch_size=8)  # warm-up
    t0 = time.perf_counter()
    batched = generate_answers(model, tokenizer, chats, batch_size=args.batch_size)
    t_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    single = generate_answers(model, tokenizer, chats, batch_size=1)
    t_single = time.perf_counter() - t0
    same = sum(a == b for a, b in zip(batched, single))
    print(f"prompts={len(chats)} batch_size={args.batch_size}")
    print(f"one at a time : {t_single:6.2f}s  ({len(chats) / t_single:5.1f} prompts/s)")
    print(f"batched       : {t_batched:6.2f}s  ({len(chats) / t_batched:5.1f} prompts/s)")
    print(f"speed-up      : {t_single / t_batched:.1f}x   identical answers: {same}/{len(chats)}")


if __name__ == "__main__":
    main()
