"""Merge a LoRA adapter into 16-bit weights, one tensor at a time.

Never two copies of the model, never the whole model in memory: each base tensor is
read from its safetensors shard with plain file reads (no memory map, whose pages
would stay resident), merged in float32 when LoRA targets it (W + alpha/r * B @ A,
one rounding at the end, as Unsloth's merged_16bit save does), cast to the export
dtype and written straight into its output shard. Peak memory is about the largest
tensor plus the adapter. A pre-quantized 4-bit checkpoint (bitsandbytes NF4) is
dequantized tensor by tensor on the way.

Output: a plain transformers folder, sharded the way `save_pretrained` shards
(`model-00001-of-0000N.safetensors` + `model.safetensors.index.json`, or one
`model.safetensors`), plus config.json without the quantization settings.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from factinject.errors import FactinjectError
from factinject.models.checkpoint import (
    FLOAT_DTYPES,
    INDEX_NAME,
    TORCH_TO_ST,
    WEIGHTS_NAME,
    Checkpoint,
    SafetensorsFile,
    nbytes,
)

# ----------------------------------------------------------------------------- the adapter

@dataclass
class LoraWeights:
    a: object  # (r, in)
    b: object  # (out, r)
    scale: float


def read_adapter(adapter_dir: Path) -> dict[str, LoraWeights]:
    """{base weight key: LoRA factors and scale} from a PEFT adapter folder."""
    adapter_dir = Path(adapter_dir)
    config = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    unsupported = [k for k in ("use_dora", "fan_in_fan_out", "rank_pattern", "alpha_pattern", "modules_to_save")
                   if config.get(k)]
    if unsupported:
        raise FactinjectError(f"the adapter uses {', '.join(unsupported)}, which the streaming merge does not support",
                              where=adapter_dir / "adapter_config.json",
                              fix="train with factinject's recipes (plain LoRA on linear layers)")
    r, alpha = config["r"], config["lora_alpha"]
    scale = alpha / (r ** 0.5) if config.get("use_rslora") else alpha / r
    weights = SafetensorsFile(adapter_dir / "adapter_model.safetensors")
    factors: dict[str, dict[str, object]] = {}
    for key in weights.keys():
        module, _, part = key.rpartition(".lora_")
        kind = part.split(".")[0]  # 'A' or 'B' ('A.weight' or 'A.default.weight')
        if kind not in ("A", "B") or not part.endswith("weight"):
            raise FactinjectError(f"unexpected tensor {key!r} in the adapter", where=adapter_dir,
                                  fix="train with factinject's recipes (plain LoRA on linear layers)")
        base_key = module.removeprefix("base_model.model.") + ".weight"
        factors.setdefault(base_key, {})[kind] = weights.read(key)
    out = {}
    for base_key, pair in factors.items():
        assert set(pair) == {"A", "B"}, f"adapter has only {set(pair)} for {base_key}"
        out[base_key] = LoraWeights(pair["A"], pair["B"], scale)
    return out


def merged_tensor(checkpoint: Checkpoint, key: str, lora: LoraWeights | None, out_dtype):
    """The output tensor for `key`: dequantized if 4-bit, plus the LoRA update, in `out_dtype`."""
    import torch

    weight = checkpoint.dequantized(key) if checkpoint.is_quantized(key) else checkpoint.read(key)
    if lora is None:
        return weight.to(out_dtype) if weight.is_floating_point() else weight
    expected = (lora.b.shape[0], lora.a.shape[1])
    if tuple(weight.shape) != expected:
        raise FactinjectError(f"adapter shape {expected} does not fit base weight {key} {tuple(weight.shape)}",
                              fix="merge into the base model the adapter was trained on")
    merged = weight.to(torch.float32)
    merged.addmm_(lora.b.to(torch.float32), lora.a.to(torch.float32), alpha=lora.scale)
    return merged.to(out_dtype)


# ----------------------------------------------------------------------------- writing

def plan_shards(sizes: list[tuple[str, int]], max_bytes: int) -> list[list[str]]:
    """Greedy split in order: a shard is closed before it would pass max_bytes (a single
    tensor larger than max_bytes gets a shard of its own), as transformers shards."""
    shards: list[list[str]] = [[]]
    used = 0
    for key, size in sizes:
        if shards[-1] and used + size > max_bytes:
            shards.append([])
            used = 0
        shards[-1].append(key)
        used += size
    return [s for s in shards if s]


def write_shard(path: Path, keys: list[str], metas: dict[str, tuple[list[int], str]], produce) -> None:
    """Write a safetensors file whose header is known in advance, streaming each tensor in."""
    import torch

    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for key in keys:
        shape, dtype = metas[key]
        size = nbytes(shape, dtype)
        header[key] = {"dtype": TORCH_TO_ST[dtype], "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # data starts 8-byte aligned, as safetensors writes it
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)))
        fh.write(raw)
        for key in keys:
            tensor = produce(key).contiguous()
            shape, dtype = metas[key]
            assert list(tensor.shape) == shape and str(tensor.dtype) == f"torch.{dtype}", (key, tensor.shape, tensor.dtype)
            if tensor.numel():
                fh.write(tensor.view(-1).view(torch.uint8).numpy().data)  # no copy of the bytes
            del tensor  # before the next one is read: one tensor in memory at a time
        fh.flush()
        os.fsync(fh.fileno())


def merge_checkpoint(base_dir: Path, adapter_dir: Path | None, out_dir: Path, *, dtype: str, max_shard_bytes: int,
                     progress=None) -> dict:
    """Write the merged weights and config of base + adapter into out_dir; return what was written."""
    import torch

    checkpoint = Checkpoint(base_dir)
    lora = read_adapter(adapter_dir) if adapter_dir else {}
    keys = checkpoint.output_keys()
    missing = sorted(set(lora) - set(keys))
    if missing:
        raise FactinjectError(f"{len(missing)} adapter weights have no base weight to merge into, e.g. {missing[0]}",
                              where=adapter_dir, fix="merge into the base model the adapter was trained on")
    out_dtype = getattr(torch, dtype)
    metas = {}
    for key in keys:
        shape, src = checkpoint.output_meta(key)
        metas[key] = (shape, dtype if src in FLOAT_DTYPES else src)
    shards = plan_shards([(k, nbytes(*metas[k])) for k in keys], max_shard_bytes)
    names = [WEIGHTS_NAME] if len(shards) == 1 else \
        [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]

    def produce(key: str):
        tensor = merged_tensor(checkpoint, key, lora.get(key), out_dtype)
        if progress is not None:
            progress(key)
        return tensor

    for name, shard in zip(names, shards):
        write_shard(out_dir / name, shard, metas, produce)
    total = sum(nbytes(*metas[k]) for k in keys)
    if len(shards) > 1:
        weight_map = {k: name for name, shard in zip(names, shards) for k in shard}
        (out_dir / INDEX_NAME).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map},
                                                     indent=2) + "\n", encoding="utf-8")
    config = json.loads((Path(base_dir) / "config.json").read_text(encoding="utf-8"))
    config.pop("quantization_config", None)
    if not config.get("architectures"):  # a base rebuilt from GGUF has none; vLLM and GGUF out read it
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        known = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(config.get("model_type"))
        if known:
            config["architectures"] = [known]
    config["dtype"] = dtype
    if "torch_dtype" in config:
        config["torch_dtype"] = dtype
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return {"shards": names, "total_size": total, "merged_weights": len(lora), "tensors": len(keys), "dtype": dtype}
