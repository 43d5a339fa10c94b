"""Where a probe verdict is decided: the measurement behind each set's answer budget.

A verdict ("the answer gives the fact's value", "the tuned answer names an injected
fact the base answer did not", "the two answers are the same") is read from a whole
answer. Cut the answer after n tokens and the verdict may differ; it is *decided* at
the smallest n after which no cut changes it any more. A budget of N tokens changes
exactly the verdicts decided after N, so the budget of a set is the smallest N that
leaves at most `MAX_CHANGED` of its verdicts changed against the longest answers
measured (recipe.AnswerBudgets; bench/answer_budgets.py measures them on a real model).

Pure functions over token ids and a `decode` callable (the model's tokenizer), so the
same code measures SmolLM2 in the bench and the testbed in the tests.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from factinject.probe.sets import ProbeSet, mentions_injected
from factinject.scoring import contains_key, same_answer

MAX_CHANGED = 0.01  # a budget may change at most this share of a set's verdicts
STEP = 8  # budgets are multiples of this many tokens
SCORED = ("trained", "heldout", "exam", "retention")  # a verdict per answer: the key given or not
COMPARED = ("locality", "bleed", "misspelling")  # a verdict per pair of answers: bleed (and for locality, unchanged)


def decided_at(verdict: Callable[[int], bool], length: int) -> int:
    """1 + the last cut n (0..length) whose verdict differs from the whole answer's: the
    tokens a budget must leave for the verdict to be the one of `length` tokens. Every
    cut is read, not only until the first agreement: a key matched whole-word after n
    tokens may be a word's first part after n + 1 ("the MIT" / "the MITRE")."""
    full = verdict(length)
    last = max((n for n in range(length) if verdict(n) != full), default=-1)
    return last + 1


def _prefixes(ids: Sequence[int], decode: Callable[[list[int]], str]) -> list[str]:
    return [decode(list(ids[:n])).strip() for n in range(len(ids) + 1)]


def scored_positions(ids: Sequence[int], key: str, aliases: Sequence[str], decode) -> int:
    """Where 'the answer gives the key' is decided in one answer of `ids`."""
    texts = _prefixes(ids, decode)
    return decided_at(lambda n: contains_key(texts[n], key, tuple(aliases)), len(ids))


def compared_positions(before: Sequence[int], after: Sequence[int], probe: ProbeSet, decode,
                       unchanged: bool) -> dict[str, int]:
    """Where the verdicts on a pair (base answer, tuned answer) are decided, both cut at
    the same budget: bleed (the tuned one names an injected fact, the base one does not)
    and, with `unchanged`, locality's "same answer"."""
    length = max(len(before), len(after))
    b, a = _prefixes(before, decode), _prefixes(after, decode)

    def cut(texts: list[str], n: int) -> str:
        return texts[min(n, len(texts) - 1)]

    out = {"bleed": decided_at(lambda n: mentions_injected(cut(a, n), probe)
                               and not mentions_injected(cut(b, n), probe), length)}
    if unchanged:
        out["unchanged"] = decided_at(lambda n: same_answer(cut(a, n), cut(b, n)), length)
    return out


def budget_for(positions: Sequence[int], max_changed: float = MAX_CHANGED, step: int = STEP) -> int:
    """The smallest multiple of `step` that leaves at most `max_changed` of the verdicts
    (decided at `positions`) changed."""
    assert positions, "no verdicts measured"
    allowed = math.floor(max_changed * len(positions))
    ranked = sorted(positions, reverse=True)
    need = ranked[allowed] if allowed < len(ranked) else 0  # the verdicts above it may change
    return max(step, -(-need // step) * step)


def changed_share(positions: Sequence[int], budget: int) -> float:
    """The share of verdicts (decided at `positions`) that a budget of `budget` tokens changes."""
    return sum(p > budget for p in positions) / len(positions) if positions else 0.0


def locality_tokens_at(per_token: Sequence[dict], budget: int) -> dict:
    """Teacher-forced locality over each base answer's first `budget` tokens: the share of
    tokens kept and the KL per token (nats), from `agreement`'s per-token results
    ({"agree_at": [0/1 per token], "kl_at": [nats per token]})."""
    kept = sum(sum(r["agree_at"][:budget]) for r in per_token)
    tokens = sum(len(r["agree_at"][:budget]) for r in per_token)
    kl = sum(sum(r["kl_at"][:budget]) for r in per_token)
    return {"tokens_kept": kept / tokens if tokens else None, "kl_per_token": kl / tokens if tokens else None,
            "tokens": tokens}
