"""Greedy question answering and key-recall accuracy.

`evaluate(model, tokenizer, rows)` asks every row's question through the chat
template, generates greedily in batches with left padding, and counts an answer as
right when it contains the row's `answer_key` (case-insensitive). Generation itself lives in
`factinject.backends.hf_generate` (shared with training, export and probing).
"""

from __future__ import annotations

import time

from factinject.backends.hf_generate import generate_answers
from factinject.scoring import contains_key


def chat_prompt(question: str, system: str | None = None) -> list[dict]:
    messages = [{"role": "system", "content": system}] if system else []
    return messages + [{"role": "user", "content": question}]


def key_recalled(answer: str, key: str) -> bool:
    # The same whole-word, normalised match the probe uses.
    return contains_key(answer, key)


def evaluate(model, tokenizer, rows: list[dict], batch_size: int = 64, max_new_tokens: int = 40,
             progress=None) -> dict:
    """Share of rows whose greedy answer contains `answer_key`.

    Returns {"accuracy", "n", "correct", "seconds", "answers": [...]} where answers
    are in row order, so a caller can show the misses.
    """
    t0 = time.perf_counter()
    answers = generate_answers(model, tokenizer, [chat_prompt(r["question"]) for r in rows],
                               batch_size=batch_size, max_new_tokens=max_new_tokens, progress=progress)
    hits = [key_recalled(a, r["answer_key"]) for a, r in zip(answers, rows)]
    n = len(rows)
    return {"accuracy": (sum(hits) / n) if n else 0.0, "n": n, "correct": sum(hits),
            "seconds": round(time.perf_counter() - t0, 2), "answers": answers}


def by_relation(rows: list[dict], answers: list[str]) -> dict[str, dict]:
    """{attribute: {"accuracy", "correct", "n"}} for rows answered in row order."""
    counts: dict[str, list[int]] = {}
    for row, answer in zip(rows, answers):
        c = counts.setdefault(row["attribute"], [0, 0])
        c[0] += key_recalled(answer, row["answer_key"])
        c[1] += 1
    return {rel: {"accuracy": round(ok / n, 4), "correct": ok, "n": n} for rel, (ok, n) in sorted(counts.items())}
