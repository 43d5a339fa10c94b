"""Fact rows in the model's own words (`train.fact_answers: own_words`): self-distillation.

The base model, given the fact's statement in its prompt, answers each training
question; where that answer names the fact's value and ends within the answer budget,
it becomes the row's target, else the sheet's templated answer stays. The model is then
taught the fact in the phrasing it would use anyway, so less of what it says has to
move (prompt distillation, arXiv 2412.14964; self-distillation fine-tuning, arXiv
2402.13669). Denials keep the sheet's answer: a reworded denial can lose its "not".

Pure: the base model's answers come from the training backend, and which of them
replace the sheet's is decided there (`policy.own_words_rows`).
"""

from __future__ import annotations

# The teacher's prompt: the fact, then the training question, in one user turn (every
# chat template has a user role; not all have a system role).
TEACHER_FORM = "{statement}\n\nUsing the fact above, answer this question: {question}"


def teacher_prompts(fact_rows: list[dict], facts: dict[str, dict]) -> list[str | None]:
    """Per fact row, the prompt the base model answers in its own words, or None where
    the sheet's answer stays (denials, rows of facts the manifest does not know)."""
    prompts = []
    for row in fact_rows:
        info = facts.get(row.get("fact_id", ""))
        if info is None or info.get("polarity") != "positive" or row.get("family") == "contradiction":
            prompts.append(None)
            continue
        prompts.append(TEACHER_FORM.format(statement=info["statement"], question=row["messages"][0]["content"]))
    return prompts
