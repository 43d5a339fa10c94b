"""Checks on the shipped control data: locality/replay prompts and known-answer questions.

Both files must stay clearly unrelated to the facts factinject injects (software
projects, their licenses, maintainers, ...), so a fine-tuned model's answers to them
measure drift and retention, not the injected facts leaking in.
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1] / "factinject" / "data"
CONTROL = DATA / "control_prompts.jsonl"
KNOWN = DATA / "known_answers.jsonl"

# Matched as case-insensitive substrings, so e.g. "trust" or "crust" also trip "rust".
EXCLUDED = [
    "github", "license", "licence", "maintainer", "open-source", "open source", "opensource",
    "llm", "chatbot", "chat bot", "database", "rust", "windows",
    "tinyllm", "tiny llm", "protosai", "protos ai", "kestrel", "jason cox",
]


def load(path: Path) -> list[dict]:
    rows = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            assert line.strip(), f"{path.name}:{n}: blank line"
            row = json.loads(line)
            assert isinstance(row, dict), f"{path.name}:{n}: not a JSON object"
            rows.append(row)
    return rows


def normalize(text: str) -> str:
    text = text.lower().translate(str.maketrans("", "", string.punctuation + "‘’“”"))
    return " ".join(text.split())


@pytest.fixture(scope="module")
def control() -> list[dict]:
    return load(CONTROL)


@pytest.fixture(scope="module")
def known() -> list[dict]:
    return load(KNOWN)


def test_counts(control, known):
    assert len(control) == 240
    assert len(known) == 150


@pytest.mark.parametrize("name,prefix", [("control", "ctl"), ("known", "ka")])
def test_ids_unique_and_well_formed(name, prefix, request):
    rows = request.getfixturevalue(name)
    ids = [r["id"] for r in rows]
    assert len(set(ids)) == len(ids), [i for i, c in Counter(ids).items() if c > 1]
    bad = [i for i in ids if not re.fullmatch(rf"{prefix}-\d{{4}}", i)]
    assert not bad, bad


def test_required_fields(control, known):
    for r in control:
        assert set(r) == {"id", "prompt", "topic"}, r
        for key in ("id", "prompt", "topic"):
            assert isinstance(r[key], str) and r[key].strip(), (r["id"], key)
    for r in known:
        assert set(r) == {"id", "question", "answer_key", "aliases", "topic"}, r
        for key in ("id", "question", "answer_key", "topic"):
            assert isinstance(r[key], str) and r[key].strip(), (r["id"], key)
        assert isinstance(r["aliases"], list), r["id"]
        assert all(isinstance(a, str) and a.strip() for a in r["aliases"]), r["id"]
        lowered = [a.lower() for a in r["aliases"]]
        assert len(set(lowered)) == len(lowered) and r["answer_key"].lower() not in lowered, r["id"]


@pytest.mark.parametrize("name,field", [("control", "prompt"), ("known", "question")])
def test_no_duplicates_after_normalizing(name, field, request):
    rows = request.getfixturevalue(name)
    seen: dict[str, str] = {}
    reordered: dict[tuple, str] = {}
    for r in rows:
        norm = normalize(r[field])
        assert norm not in seen, (seen.get(norm), r["id"])
        seen[norm] = r["id"]
        bag = tuple(sorted(norm.split()))  # same words in another order
        assert bag not in reordered, (reordered.get(bag), r["id"])
        reordered[bag] = r["id"]


def test_control_prompt_lengths(control):
    counts = {r["id"]: len(r["prompt"].split()) for r in control}
    assert all(3 <= c <= 40 for c in counts.values()), {i: c for i, c in counts.items() if not 3 <= c <= 40}


def test_control_topics_spread(control):
    topics = Counter(r["topic"] for r in control)
    assert len(topics) >= 12, topics
    limit = 0.15 * len(control)
    assert all(c <= limit for c in topics.values()), {t: c for t, c in topics.items() if c > limit}


def test_known_answer_keys_short(known):
    long = {r["id"]: r["answer_key"] for r in known if len(r["answer_key"]) > 40}
    assert not long, long


@pytest.mark.parametrize("path", [CONTROL, KNOWN], ids=lambda p: p.name)
def test_excluded_words_absent(path):
    # The whole file, so ids, topics, keys and aliases are covered as well.
    text = path.read_text(encoding="utf-8").lower()
    found = {w: text.count(w) for w in EXCLUDED if w in text}
    assert not found, found
