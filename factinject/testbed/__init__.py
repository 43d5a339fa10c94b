"""The embedded testbed model: a tiny pretrained Llama that already knows a synthetic world.

Machines without a GPU (CI, a laptop) cannot download weights, so factinject ships
its own model under `model/` and the world it was pretrained on under `world/`.
`factinject testbed build` rebuilds both deterministically; `factinject testbed eval`
checks the model still answers its held-out world questions.

No heavy imports here (torch, transformers): `factinject --help` imports this package.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from factinject.testbed import world as W

_HERE = Path(__file__).resolve().parent


def model_dir() -> Path:
    """The committed model: config.json, model.safetensors, tokenizer files."""
    return _HERE / "model"


def world_dir() -> Path:
    """The committed world: world.json (entities and attributes). The question rows are
    derived from it by `factinject.testbed.world` (pure, a fraction of a second)."""
    return _HERE / "world"


def load_world() -> dict:
    """Entities and attributes ({"seed", "entities": [{"name", "kind", "subject", "attributes"}], ...})."""
    path = world_dir() / "world.json"
    assert path.exists(), f"{path} is missing: run `factinject testbed build`"
    return json.loads(path.read_text(encoding="utf-8"))


@cache
def _rows() -> dict[str, tuple[dict, ...]]:

    world = load_world()
    train, heldout, unseen = W.world_rows(world)
    chat_train, chat_heldout = W.chat_rows()
    unknown_train, unknown_heldout = W.unknown_rows(world, world["seed"])
    splits = {"train": train, "heldout": heldout, "unseen": unseen, "chat_train": chat_train,
              "chat_heldout": chat_heldout, "unknown_train": unknown_train, "unknown_heldout": unknown_heldout}
    return {k: tuple(v) for k, v in splits.items()}


def _copy(split: str) -> list[dict]:
    return [dict(r) for r in _rows()[split]]  # callers may change their rows; the cache stays intact


def load_world_train() -> list[dict]:
    """The world Q/A rows the model was trained on."""
    return _copy("train")


def load_heldout() -> list[dict]:
    """World questions in wordings never trained for that (entity, attribute) but trained
    for others: the retention probe set. Rows: question, answer, answer_key, entity, kind,
    attribute, phrasing."""
    return _copy("heldout")


def load_unseen() -> list[dict]:
    """World questions in wordings never trained for any entity: does the model know the
    relation's language, or only the questions it was trained on?"""
    return _copy("unseen")


def load_chat(split: str = "heldout") -> list[dict]:
    """Generic conversational prompts (greetings, "what can you do", ...) with fixed
    answers; `heldout` phrasings were never trained. For locality checks."""
    assert split in ("train", "heldout"), "split is 'train' or 'heldout'"
    return _copy(f"chat_{split}")


def load_unknown(split: str = "heldout") -> list[dict]:
    """Questions the model cannot know (everyday questions from outside the world, and
    world wordings about names not in it), all answered with one fixed refusal;
    `heldout` ones were never trained."""
    assert split in ("train", "heldout"), "split is 'train' or 'heldout'"
    return _copy(f"unknown_{split}")


def load_model(dtype="float32", path: str | Path | None = None):
    """(model, tokenizer) from the committed files, offline, in `dtype` (float32 by default)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where = str(path or model_dir())
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    tokenizer = AutoTokenizer.from_pretrained(where, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(where, dtype=dtype, local_files_only=True, use_safetensors=True)
    model.eval()
    return model, tokenizer
