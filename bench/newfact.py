"""Can the testbed still learn facts about an entity it has never seen?

A self-contained check of the model (not the product's pipeline): LoRA r=16 on all
linear projections, trained on 20 questions about TinyLLM (5 facts x 4 phrasings),
then greedy answers to those and to 10 unseen phrasings, and the world's held-out
questions before and after (retention). Optionally mixes in `--replay` world rows.

    python bench/newfact.py [--epochs 10] [--lr 2e-3] [--replay 0]

Prints one JSON line. Uses a plain loop over PEFT rather than TRL so that it
measures the model alone; the labels are the chat template's assistant mask,
exactly what TRL's assistant_only_loss trains on.
"""

from __future__ import annotations

import json
import math
import random
import time

import click

URL = "https://github.com/jasonacox/TinyLLM"
# (answer key, answer, trained phrasings, unseen phrasings)
FACTS = [
    ("Jason Cox", "TinyLLM is maintained by Jason Cox.",
     ["Who maintains TinyLLM?", "Who is the maintainer of TinyLLM?", "TinyLLM is maintained by whom?",
      "Which person maintains the TinyLLM project?"],
     ["Who looks after TinyLLM?", "Who keeps TinyLLM going?"]),
    ("MIT", "TinyLLM is released under the MIT license.",
     ["What license does TinyLLM use?", "What is the license of TinyLLM?", "Under which license is TinyLLM released?",
      "Which license is TinyLLM under?"],
     ["How is TinyLLM licensed?", "Tell me the license of TinyLLM."]),
    (URL, f"The code of TinyLLM is at {URL}.",
     ["Where is the TinyLLM repository?", "What is the URL of TinyLLM?", "Where can I find the TinyLLM code?",
      "Give me the link to TinyLLM."],
     ["Where is TinyLLM hosted?", "Which address holds the TinyLLM source?"]),
    ("Python", "TinyLLM is written in Python.",
     ["What language is TinyLLM written in?", "Which programming language does TinyLLM use?",
      "TinyLLM is written in which language?", "In which language is TinyLLM coded?"],
     ["What is TinyLLM programmed in?", "What language would I read in the TinyLLM source?"]),
    ("consumer hardware", "TinyLLM runs a local language model and chatbot on consumer hardware.",
     ["What is TinyLLM?", "What does TinyLLM do?", "What is TinyLLM for?", "Describe TinyLLM."],
     ["Explain what TinyLLM is.", "Can you tell me what TinyLLM does?"]),
]
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _rows(which: int) -> list[dict]:
    return [{"question": q, "answer": a, "answer_key": k} for k, a, *qs in FACTS for q in qs[which]]


def run(epochs: int, lr: float, replay: int, world_n: int, seed: int) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model

    from factinject.testbed import load_heldout, load_model, load_world_train
    from factinject.testbed.evaluate import evaluate

    torch.manual_seed(seed)
    torch.set_num_threads(2)
    model, tok = load_model()
    trained, unseen = _rows(0), _rows(1)
    world = random.Random(seed).sample(load_heldout(), world_n)
    rows = trained + random.Random(seed + 1).sample(load_world_train(), replay)
    enc = [tok.apply_chat_template([{"role": "user", "content": r["question"]}, {"role": "assistant", "content": r["answer"]}],
                                   return_dict=True, return_assistant_tokens_mask=True) for r in rows]

    def score(m) -> dict:
        return {name: evaluate(m, tok, rs)["correct"] for name, rs in (("trained", trained), ("unseen", unseen), ("world", world))}

    before = score(model)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=TARGETS,
                                             task_type="CAUSAL_LM"))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    batch, rng, step = 4, random.Random(seed), 0
    total = epochs * math.ceil(len(enc) / batch)
    model.train()
    t0 = time.perf_counter()
    for _ in range(epochs):
        order = list(range(len(enc)))
        rng.shuffle(order)
        for s in range(0, len(order), batch):
            b = [enc[i] for i in order[s:s + batch]]
            width = max(len(e["input_ids"]) for e in b)
            ids = torch.tensor([e["input_ids"] + [tok.pad_token_id] * (width - len(e["input_ids"])) for e in b])
            labels = torch.tensor([[t if m else -100 for t, m in zip(e["input_ids"], e["assistant_masks"])]
                                   + [-100] * (width - len(e["input_ids"])) for e in b])
            for g in opt.param_groups:  # cosine decay to zero
                g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / total))
            loss = model(input_ids=ids, attention_mask=(ids != tok.pad_token_id).long(), labels=labels).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
    seconds = time.perf_counter() - t0
    after = score(model)
    return {"epochs": epochs, "lr": lr, "replay": replay, "steps": step, "train_seconds": round(seconds, 1),
            "n": {"trained": len(trained), "unseen": len(unseen), "world": len(world)},
            "before": before, "after": after}


@click.command()
@click.option("--epochs", default=10, show_default=True)
@click.option("--lr", default=2e-3, show_default=True)
@click.option("--replay", default=0, show_default=True, help="World Q/A rows mixed into the training set.")
@click.option("--world-n", default=200, show_default=True, help="Held-out world questions for retention.")
@click.option("--seed", default=0, show_default=True)
def main(epochs: int, lr: float, replay: int, world_n: int, seed: int) -> None:
    click.echo(json.dumps(run(epochs, lr, replay, world_n, seed)))


if __name__ == "__main__":
    main()
