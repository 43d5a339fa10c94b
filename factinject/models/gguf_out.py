"""The merged model as one GGUF file, for llama.cpp, Ollama and LM Studio, in pure Python.

Written with the `gguf` package (GGUFWriter, its tensor-name maps, SpecialVocab, numpy
quantization), following llama.cpp's own converter (convert_hf_to_gguf.py) for each
family a recipe ships: Llama (Q/K rows permuted to llama.cpp's rotary layout, the
llama3 rope frequencies as a `rope_freqs` tensor), Qwen2 (q/k/v biases), Gemma-2 (norm
weights stored as 1 + w, attention and final logit soft-capping, the sliding window).
Tied embeddings write no `output.weight`; 1-D tensors are F32. The tokenizer goes in as
llama.cpp's "gpt2" byte-level BPE: tokens, token types, merges, special ids, the chat
template, and `tokenizer.ggml.pre` by the pre-tokenizer's regex. Anything else is an
error that names what is missing, before a byte is written.

Streaming: the header and tensor index are written from the safetensors headers, then
each tensor is read, converted and written in turn, so memory holds one tensor (and
its quantized copy) at a time. The file is written to a temporary name beside the
target and renamed when whole.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from factinject.errors import FactinjectError
from factinject.models import cache_home
from factinject.models.chat import end_of_turn_ids
from factinject.models.checkpoint import Checkpoint
from factinject.rundir.files import user_mode

GGUF_TYPES = ("f16", "bf16", "q8_0", "q4_0")  # what `export --gguf` writes
INSTALL_FIX = 'pip install -e ".[gguf]" (the gguf package writes the file)'


@dataclass(frozen=True)
class Family:
    arch: str  # gguf's architecture name
    permute_qk: bool = False  # llama.cpp's Llama graph expects Q/K rows in the original interleaved rotary order
    norm_plus_one: bool = False  # Gemma's RMSNorm scales by (1 + w): llama.cpp stores 1 + w


FAMILIES = {
    "LlamaForCausalLM": Family("llama", permute_qk=True),
    "Qwen2ForCausalLM": Family("qwen2"),
    "Gemma2ForCausalLM": Family("gemma2", norm_plus_one=True),
}

# A folder without `architectures` (a base rebuilt from GGUF) names its family by model_type.
MODEL_TYPES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "gemma2": "Gemma2ForCausalLM"}

# llama.cpp's pre-tokenizers, by the regex the tokenizer splits text with (tokenizer.json).
GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                r"\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
               r"\s*[\r\n]+|\s+(?!\S)|\s+")
PRE_BY_REGEX = {(GPT2_REGEX,): "gpt-2", (LLAMA3_REGEX,): "llama-bpe", (QWEN2_REGEX,): "qwen2",
                ("digits", GPT2_REGEX): "smollm"}


def pre_tokenizer(tokenizer_json: dict) -> str:
    """llama.cpp's name for the pre-tokenizer of a byte-level BPE tokenizer.json: by the
    regexes it splits with, in order (ByteLevel with use_regex is GPT-2's regex; a Digits
    split before it, one digit at a time, is SmolLM's)."""
    splits: list[str] = []

    def walk(node) -> None:
        if not isinstance(node, dict):
            return
        kind = node.get("type")
        if kind == "Sequence":
            for sub in node.get("pretokenizers", []):
                walk(sub)
        elif kind == "Split":
            splits.append((node.get("pattern") or {}).get("Regex") or (node.get("pattern") or {}).get("String", "?"))
        elif kind == "Digits" and node.get("individual_digits"):
            splits.append("digits")
        elif kind == "ByteLevel" and node.get("use_regex", True):
            splits.append(GPT2_REGEX)

    walk(tokenizer_json.get("pre_tokenizer") or {})
    name = PRE_BY_REGEX.get(tuple(splits))
    if name is None:
        raise FactinjectError(f"llama.cpp has no pre-tokenizer known to match this tokenizer's (splits: {splits})",
                              fix="export the merged safetensors (--merged) and convert them with llama.cpp's "
                                  "convert_hf_to_gguf.py, which knows more tokenizers")
    return name


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def check_writable(merged: Path, qtype: str) -> tuple[Family, dict, dict]:
    """(family, config, tokenizer.json) when this folder can be written as GGUF `qtype`;
    otherwise the error that says what is missing."""
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise FactinjectError("writing GGUF needs the gguf package", fix=INSTALL_FIX) from None
    if qtype not in GGUF_TYPES:
        raise FactinjectError(f"GGUF type {qtype!r} is not one factinject writes", fix=f"use one of {', '.join(GGUF_TYPES)}")
    config = _read_json(merged / "config.json")
    arch = (config.get("architectures") or [MODEL_TYPES.get(config.get("model_type"), "?")])[0]
    if arch not in FAMILIES:
        raise FactinjectError(f"GGUF export does not know the architecture {arch!r}", where=merged / "config.json",
                              fix=f"GGUF is written for {', '.join(sorted(FAMILIES))}; for others export --merged and "
                                  "convert with llama.cpp's convert_hf_to_gguf.py")
    tok = _read_json(merged / "tokenizer.json")
    model = (tok.get("model") or {}).get("type")
    if model != "BPE":
        raise FactinjectError(f"GGUF export writes byte-level BPE tokenizers; this one is {model or 'missing'}",
                              where=merged / "tokenizer.json",
                              fix="export --merged and convert with llama.cpp's convert_hf_to_gguf.py (it reads "
                                  "tokenizer.model for SentencePiece models)")
    pre_tokenizer(tok)
    return FAMILIES[arch], config, tok


def permute(weights, n_head: int, n_head_kv: int | None):
    """HF's rotary layout (halves) back to the interleaved one llama.cpp's Llama graph uses
    (llama.cpp's LlamaModel.permute)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def llama3_rope_factors(config: dict):
    """The `rope_freqs` tensor of a llama3-scaled rope (llama.cpp's generate_extra_tensors), or None."""
    import numpy as np

    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type")) != "llama3":
        return None
    base = rope.get("rope_theta", config.get("rope_theta", 10000.0))
    dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    freqs = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    factor, low, high = rope.get("factor", 8.0), rope.get("low_freq_factor", 1.0), rope.get("high_freq_factor", 4.0)
    old = rope.get("original_max_position_embeddings", 8192)
    low_wavelen, high_wavelen = old / low, old / high
    factors = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            factors.append(1.0)
        elif wavelen > low_wavelen:
            factors.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(factors, dtype=np.float32)


def _vocab(merged: Path, config: dict):
    """(tokens, token types) in llama.cpp's order and types (its get_vocab_base)."""
    import gguf
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(merged)
    vocab = tokenizer.get_vocab()
    size = max(config.get("vocab_size") or 0, len(vocab))
    reverse = {i: t for t, i in vocab.items()}
    added = tokenizer.get_added_vocab()
    decoder = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(size):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif reverse[i] in added:
            tokens.append(reverse[i])
            types.append(gguf.TokenType.CONTROL if decoder[i].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(reverse[i])
            types.append(gguf.TokenType.NORMAL)
    return tokenizer, tokens, types


def _write_metadata(writer, family: Family, config: dict, name: str, qtype: str) -> None:
    import gguf

    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    rope = config.get("rope_parameters") or {}
    writer.add_name(name)
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.get("num_key_value_heads", heads))
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_rope_freq_base(rope.get("rope_theta", config.get("rope_theta", 10000.0)))
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    if family.arch == "llama":
        writer.add_rope_dimension_count(head_dim)
        writer.add_vocab_size(config["vocab_size"])
    if family.arch == "gemma2":
        if config.get("attn_logit_softcapping"):
            writer.add_attn_logit_softcapping(config["attn_logit_softcapping"])
        if config.get("final_logit_softcapping"):
            writer.add_final_logit_softcapping(config["final_logit_softcapping"])
        writer.add_sliding_window(config["sliding_window"])
    writer.add_file_type({"f16": gguf.LlamaFileType.MOSTLY_F16, "bf16": gguf.LlamaFileType.MOSTLY_BF16,
                          "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0}[qtype])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _tensor_plan(checkpoint, family: Family, config: dict, qtype: str):
    """[(gguf name, hf key or None for rope_freqs, gguf type, shape)] from the headers alone."""
    import gguf

    arch = {"llama": gguf.MODEL_ARCH.LLAMA, "qwen2": gguf.MODEL_ARCH.QWEN2, "gemma2": gguf.MODEL_ARCH.GEMMA2}[family.arch]
    names = gguf.get_tensor_name_map(arch, config["num_hidden_layers"])
    wanted = {"f16": gguf.GGMLQuantizationType.F16, "bf16": gguf.GGMLQuantizationType.BF16,
              "q8_0": gguf.GGMLQuantizationType.Q8_0, "q4_0": gguf.GGMLQuantizationType.Q4_0}[qtype]
    tied = config.get("tie_word_embeddings", False)
    plan, unknown = [], []
    for key in checkpoint.output_keys():
        if key == "lm_head.weight" and tied:
            continue
        name = names.get_name(key, try_suffixes=(".weight", ".bias"))
        if name is None:
            unknown.append(key)
            continue
        shape, _ = checkpoint.output_meta(key)
        kind = wanted
        block = gguf.GGML_QUANT_SIZES[wanted][0]
        if len(shape) < 2:
            kind = gguf.GGMLQuantizationType.F32
        elif shape[-1] % block:  # a row that quantized blocks do not divide: 16-bit, as llama.cpp falls back
            kind = gguf.GGMLQuantizationType.F16
        plan.append((name, key, kind, shape))
    if unknown:
        raise FactinjectError(f"GGUF export has no llama.cpp name for tensors {', '.join(unknown[:3])}",
                              fix="export --merged and convert with llama.cpp's convert_hf_to_gguf.py")
    factors = llama3_rope_factors(config) if family.arch == "llama" else None
    if factors is not None:
        plan.append(("rope_freqs.weight", None, gguf.GGMLQuantizationType.F32, [len(factors)]))
    return plan


def _converted(checkpoint, key: str | None, family: Family, config: dict, kind):
    """One tensor as numpy, in llama.cpp's layout and the file's type."""
    import gguf
    import numpy as np
    import torch

    if key is None:
        return llama3_rope_factors(config)
    tensor = checkpoint.dequantized(key) if checkpoint.is_quantized(key) else checkpoint.read(key)
    tensor = tensor.to(torch.float32)
    heads = config["num_attention_heads"]
    if family.permute_qk and key.endswith("self_attn.q_proj.weight"):
        tensor = permute(tensor, heads, heads)
    elif family.permute_qk and key.endswith("self_attn.k_proj.weight"):
        tensor = permute(tensor, heads, config.get("num_key_value_heads", heads))
    if family.norm_plus_one and key.endswith("norm.weight"):
        tensor = tensor + 1
    data = tensor.numpy()
    if kind == gguf.GGMLQuantizationType.F32:
        return np.ascontiguousarray(data, dtype=np.float32)
    if kind == gguf.GGMLQuantizationType.F16:
        return data.astype(np.float16)
    return gguf.quants.quantize(data, kind)


def write_gguf(merged: Path, target: Path, qtype: str, *, name: str, progress=None) -> dict:
    """Write the merged model folder `merged` as GGUF `qtype` to `target` (atomically).
    The pre-tokenizer is the one the model was fine-tuned with (its tokenizer.json)."""
    import gguf
    import numpy as np

    family, config, tok_json = check_writable(merged, qtype)
    checkpoint = Checkpoint(merged)
    plan = _tensor_plan(checkpoint, family, config, qtype)
    tokenizer, tokens, types = _vocab(merged, config)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        writer = gguf.GGUFWriter(tmp, family.arch)
        _write_metadata(writer, family, config, name, qtype)
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(pre_tokenizer(tok_json))
        writer.add_token_list(tokens)
        writer.add_token_types(types)
        special = gguf.SpecialVocab(merged, load_merges=True, n_vocab=len(tokens))
        if "bos" not in special.add_special_token and tokenizer.bos_token:
            # llama.cpp adds the BOS itself when told to (the Modelfile's TEMPLATE leaves it out):
            # told to exactly when the chat template starts with it
            rendered = tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False,
                                                     add_generation_prompt=True)
            special.add_special_token["bos"] = rendered.startswith(tokenizer.bos_token)
        special.add_to_gguf(writer)
        if tokenizer.chat_template and not special.chat_template:
            writer.add_chat_template(tokenizer.chat_template)
        ends = end_of_turn_ids(tokenizer)
        if ends and ends[-1] != tokenizer.eos_token_id:  # the template's own end of turn (<|im_end|>, <|eot_id|>)
            writer.add_eot_token_id(ends[-1])
        for gname, _, kind, shape in plan:
            byte_shape = gguf.quants.quant_shape_to_byte_shape(tuple(shape), kind) if kind not in (
                gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16) else tuple(shape)
            dtype = {gguf.GGMLQuantizationType.F32: np.float32, gguf.GGMLQuantizationType.F16: np.float16}.get(
                kind, np.uint8)
            nbytes = int(np.prod(byte_shape)) * np.dtype(dtype).itemsize
            writer.add_tensor_info(gname, byte_shape, np.dtype(dtype), nbytes,
                                   raw_dtype=kind if dtype is np.uint8 else None)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for gname, key, kind, _ in plan:
            writer.write_tensor_data(_converted(checkpoint, key, family, config, kind))
            if progress:
                progress(1)
        writer.close()
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        user_mode(tmp, folder=False)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return {"path": str(target), "type": qtype, "architecture": family.arch, "tensors": len(plan),
            "bytes": target.stat().st_size}


# --- Ollama ----------------------------------------------------------------------------

_USER, _SYSTEM, _ANSWER = "\x01USER\x01", "\x01SYSTEM\x01", "\x01ANSWER\x01"


def ollama_template(tokenizer) -> tuple[str, list[str]]:
    """(TEMPLATE, stop strings) for an Ollama Modelfile, read off the chat template itself:
    the conversation rendered with placeholders, split where they stand. A template with
    a default system prompt (SmolLM2, Qwen2.5) keeps it when no SYSTEM is given."""

    def render(messages, generation: bool) -> str:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)

    user = [{"role": "user", "content": _USER}]
    asked = render(user, True)
    answered = render(user + [{"role": "assistant", "content": _ANSWER}], False)
    assert asked.count(_USER) == 1 and answered.startswith(asked[:asked.index(_USER)]), "template renders oddly"
    before, middle = asked.split(_USER)
    after = answered.split(_ANSWER, 1)[1] if _ANSWER in answered else ""
    bos = tokenizer.bos_token or ""
    if bos and before.startswith(bos):  # llama.cpp adds the BOS itself
        before = before[len(bos):]
    system_part = ""
    try:
        with_system = render([{"role": "system", "content": _SYSTEM}] + user, True)
    except Exception:  # noqa: BLE001 - a template without a system role (Gemma's raises)
        with_system = None
    if with_system and _SYSTEM in with_system:
        sys_before = with_system.split(_USER)[0]
        if bos and sys_before.startswith(bos):
            sys_before = sys_before[len(bos):]
        tail = os.path.commonprefix([before[::-1], sys_before[::-1]])[::-1]  # the user turn's own opening
        default, block = before[:len(before) - len(tail)], sys_before[:len(sys_before) - len(tail)]
        system_part = "{{ if .System }}" + block.replace(_SYSTEM, "{{ .System }}") + "{{ else }}" + default + \
                      "{{ end }}"
        before = tail
    template = system_part + before + "{{ .Prompt }}" + middle + "{{ .Response }}" + after
    stops = [tokenizer.convert_ids_to_tokens(i) for i in end_of_turn_ids(tokenizer)]
    return template, list(dict.fromkeys(s for s in stops if s))


def modelfile(gguf_name: str, tokenizer, system: str | None = None) -> str:
    template, stops = ollama_template(tokenizer)
    lines = [f"# ollama create <name> -f <this file>, then ollama run <name>", f"FROM ./{gguf_name}",
             f'TEMPLATE """{template}"""']
    lines += [f'PARAMETER stop "{s}"' for s in stops]
    lines += ["PARAMETER temperature 0"]
    if system:
        lines.append(f'SYSTEM """{system}"""')
    return "\n".join(lines) + "\n"


_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def gguf_file_name(qtype: str) -> str:
    return f"model-{_SAFE_NAME.sub('-', qtype)}.gguf"


WRITER_VERSION = 1  # raise when a change to the writer changes the bytes of a file it writes


def base_as_gguf(folder: Path, qtype: str, fingerprint: dict) -> Path:
    """The base model's folder written as GGUF `qtype` once, in the factinject cache: what
    the llamacpp probe engine asks before training, so that before and after are the same
    file format and quantization. `fingerprint`: what the folder's weights and template
    are (probe.stage.base_model_key), the cache key with the type and this writer."""
    import fcntl
    import hashlib

    key = json.dumps({"fingerprint": fingerprint, "type": qtype, "writer": WRITER_VERSION}, sort_keys=True)
    target = cache_home() / "llamacpp" / hashlib.sha256(key.encode()).hexdigest()[:20] / gguf_file_name(qtype)
    if target.is_file():
        return target
    check_writable(folder, qtype)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two probes may ask at once
        if not target.is_file():  # write_gguf writes a temporary file and renames it when whole
            write_gguf(folder, target, qtype, name="base")
    return target
