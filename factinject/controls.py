"""Control prompts: what the model must keep answering as before.

Three disjoint pools, assigned by a stable hash of the prompt text so the assignment
never changes between runs or machines:
  replay   - the base model's answers to these are mixed into training (anti-forgetting),
  drift    - scored after every epoch to stop before answers drift (`--epochs auto`),
  locality - scored only by `probe`; never seen by training or by epoch selection,
             so locality is not flattered by the prompts we optimised on.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

from factinject.testbed import load_world, load_world_train

DATA = Path(__file__).resolve().parent / "data"
POOLS = ("replay", "drift", "locality")


def pool_of(prompt: str) -> str:
    bucket = int(hashlib.sha1(prompt.strip().lower().encode("utf-8")).hexdigest(), 16) % 10
    return "replay" if bucket < 4 else "drift" if bucket < 6 else "locality"


def _read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def general_prompts() -> list[str]:
    """The shipped set of varied, unrelated prompts."""
    return [r["prompt"] for r in _read_jsonl(DATA / "control_prompts.jsonl")]


def known_answers() -> list[dict]:
    """General-knowledge questions with stable short answers: retention on real models."""
    return _read_jsonl(DATA / "known_answers.jsonl")


def control_pools(model_name: str) -> dict[str, list[str]]:
    """Prompts per pool for a base model. On the testbed its trained world questions
    join replay and drift (never locality); its held-out world questions are the
    retention probe set and therefore never enter training at all."""
    pools: dict[str, list[str]] = {p: [] for p in POOLS}
    for prompt in dict.fromkeys(general_prompts()):
        pools[pool_of(prompt)].append(prompt)
    if model_name == "testbed":

        for prompt in dict.fromkeys(r["question"] for r in load_world_train()):
            pools["replay" if pool_of(prompt) == "replay" else "drift"].append(prompt)
    return pools


# Invented names for models without a world of their own: other subjects that contrast
# training (the `replay` hash pool) and the probe's bleed prompts (the rest) ask about.
GENERIC_NAMES = ["Orvane", "Quillmere", "Dastra Works", "Halvik", "Brennoch", "Sylvar Tool", "Ketterby", "Maroska",
                 "Pellinor", "Vastrel", "Corvane Labs", "Ishmoor", "Talvery", "Nordeck", "Ombrisk", "Fenwright",
                 "Galdorin", "Quessa", "Rimbleton", "Stavrok", "Ulveth", "Wendral", "Yarrowby", "Zelmont"]


def other_names(model_name: str) -> list[str]:
    """Names of subjects other than the injected ones that the model may be asked about."""
    if model_name == "testbed":

        return [e["name"] for e in load_world()["entities"]]
    return list(GENERIC_NAMES)


def split_other_names(names: list[str]) -> tuple[list[str], list[str]]:
    """(names contrast training may ask about, names the probe may ask about): split by
    the same stable hash as the prompt pools, so the two never meet."""
    return [n for n in names if pool_of(n) == "replay"], [n for n in names if pool_of(n) != "replay"]


def replay_sample(pool: list[str], n: int, seed: int) -> list[str]:
    """n prompts of the replay pool, half general prompts and half world questions on the testbed.

    The replay pool is ~97 % world questions there; sampled plainly, the refusal the
    model gives to everything outside its world is barely replayed, and general
    prompts start drawing answers about the injected subject."""
    known = set(general_prompts())
    general = [p for p in pool if p in known]
    rest = [p for p in pool if p not in known]
    if not rest:
        return sample(pool, n, seed)
    take_general = min(len(general), n // 2)
    return sample(general, take_general, seed) + sample(rest, n - take_general, seed)


def sample(prompts: list[str], n: int, seed: int) -> list[str]:
    """A seeded sample (all of them when n >= len)."""
    if n >= len(prompts):
        return list(prompts)
    return random.Random(seed).sample(prompts, n)
