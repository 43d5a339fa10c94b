"""The embedded testbed model: a tiny pretrained Llama that already knows a synthetic world.

Machines without a GPU (CI, a laptop) cannot download weights, so factinject ships
its own model under `model/` and the world it was pretrained on under `world/`.
`factinject testbed build` rebuilds both deterministically; `factinject testbed eval`
checks the model still answers its held-out world questions.

No heavy imports here (torch, transformers): `factinject --help` imports this package.
"""

from __future__ import annotations

import json
from pathlib import Path

_HERE = Path(__file__).resolve().parent


def model_dir() -> Path:
    """The committed model: config.json, model.safetensors, tokenizer files."""
    return _HERE / "model"


def world_dir() -> Path:
    """The committed world: world.json, train.jsonl, heldout.jsonl, chat_*.jsonl, unknown_*.jsonl."""
    return _HERE / "world"


def _read_jsonl(path: Path) -> list[dict]:
    assert path.exists(), f"{path} is missing: run `factinject testbed build`"
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_world() -> dict:
    """Entities and attributes ({"seed", "entities": [{"name", "kind", "subject", "attributes"}], ...})."""
    return json.loads((world_dir() / "world.json").read_text(encoding="utf-8"))


def load_world_train() -> list[dict]:
    """The world Q/A rows the model was trained on."""
    return _read_jsonl(world_dir() / "train.jsonl")


def load_heldout() -> list[dict]:
    """World questions in phrasings never trained for that (entity, attribute): the
    retention probe set. Rows: question, answer, answer_key, entity, kind, attribute, phrasing."""
    return _read_jsonl(world_dir() / "heldout.jsonl")


def load_chat(split: str = "heldout") -> list[dict]:
    """Generic conversational prompts (greetings, "what can you do", ...) with fixed
    answers; `heldout` phrasings were never trained. For locality checks."""
    assert split in ("train", "heldout"), "split is 'train' or 'heldout'"
    return _read_jsonl(world_dir() / f"chat_{split}.jsonl")


def load_unknown(split: str = "heldout") -> list[dict]:
    """Questions the model cannot know (everyday questions from outside the world, and
    world phrasings about names not in it), all answered with one fixed refusal;
    `heldout` ones were never trained."""
    assert split in ("train", "heldout"), "split is 'train' or 'heldout'"
    return _read_jsonl(world_dir() / f"unknown_{split}.jsonl")


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
