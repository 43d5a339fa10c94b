"""Answer scoring: does an answer contain the fact's key?

Normalisation (NFKC, case, punctuation, whitespace) and whole-word matching, so
"MIT" matches "the mit license" but not "submit", and a URL matches with or without
its trailing slash. Symbols (emoji, `+`, `#`, `%`, currency signs) are kept as words
of their own: "C++" must not match a plain "C", and an emoji key must be matchable at
all. Pure functions; used by training (dev recall), probing and tests.
"""

from __future__ import annotations

import math
import re
import unicodedata

_PUNCT = re.compile(r"[^\w]+", re.UNICODE)
# Punctuation that names things ("C#", "100%", "AT&T") rather than separating words.
_NAMING_PUNCT = frozenset("#%&@*§¶†‡‰")


def _is_symbol(ch: str) -> bool:
    return ch in _NAMING_PUNCT or unicodedata.category(ch).startswith("S")


def normalise(text: str) -> str:
    """Case-folded words and symbols separated by single spaces ("C++ rocks!" -> "c + + rocks")."""
    text = unicodedata.normalize("NFKC", text).casefold()
    if any(_is_symbol(ch) for ch in text):  # rare: the plain path below is the hot one
        text = "".join(f" {ch} " if _is_symbol(ch) else ch if ch.isalnum() or ch == "_" else " " for ch in text)
    else:
        text = _PUNCT.sub(" ", text)
    return " ".join(text.split())


def contains_key(answer: str, key: str, aliases: tuple[str, ...] | list[str] = ()) -> bool:
    """True when the normalised answer contains the normalised key (or an alias) as whole words."""
    haystack = f" {normalise(answer)} "
    for candidate in (key, *aliases):
        needle = normalise(candidate)
        if needle and f" {needle} " in haystack:
            return True
    return False


def names_overlap(a: str, b: str) -> bool:
    """One name contains the other as whole words ("Lumen Transit Pro" / "Lumen Transit"):
    such a name is not "another subject", and an answer naming it would count as bleed."""
    return contains_key(a, b) or contains_key(b, a)


def same_answer(a: str, b: str) -> bool:
    """Two greedy answers count as the same when they differ at most in whitespace
    (locality, drift and parity all use this one rule)."""
    return a.split() == b.split()


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval for a share: honest at small n and at 0 or 1."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def share(successes: int, n: int) -> dict:
    """A share with its count and 95 % interval, as every report prints it."""
    lo, hi = wilson_interval(successes, n)
    return {"share": successes / n if n else None, "count": successes, "n": n, "ci95": [round(lo, 4), round(hi, 4)]}


def pooled_share(parts: list[tuple[int, int]]) -> dict:
    """A share pooled over groups of trials that are not independent of each other (the
    tokens of one answer): counts summed, the 95 % interval from the spread between the
    groups (the ratio estimator's variance), not from the number of trials."""
    count, n = sum(k for k, _ in parts), sum(m for _, m in parts)
    if not n:
        return {"share": None, "count": 0, "n": 0, "ci95": [0.0, 1.0]}
    ratio, groups = count / n, len(parts)
    spread = sum((k - ratio * m) ** 2 for k, m in parts) * groups / max(groups - 1, 1) / n ** 2
    half = 1.959964 * math.sqrt(spread)
    return {"share": ratio, "count": count, "n": n,
            "ci95": [round(max(0.0, ratio - half), 4), round(min(1.0, ratio + half), 4)]}
