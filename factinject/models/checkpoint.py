"""Model folders' safetensors weights, read tensor by tensor without loading them.

`Checkpoint` reads a folder's weights (one file, or shards with an index) with plain
file reads, one tensor at a time, and knows a bitsandbytes 4-bit weight from its
quantization state. Reading headers needs no torch, so light commands can size an
export; reading tensors imports torch when asked.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from factinject.errors import FactinjectError

# safetensors dtype names <-> torch dtype names
_ST_TO_TORCH = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
                "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}
TORCH_TO_ST = {v: k for k, v in _ST_TO_TORCH.items()}
_QUANT_SUFFIXES = (".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map")
_QUANT_STATE = ".quant_state.bitsandbytes__"
WEIGHTS_NAME, INDEX_NAME = "model.safetensors", "model.safetensors.index.json"



def check_safetensors(path: Path, fix: str) -> None:
    """A .safetensors file that is whole: a readable header whose tensors end exactly
    where the file does. Reads the header only, so a damaged or truncated file is named
    in a second, before minutes of work would stumble on it."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            (length,) = struct.unpack("<Q", head) if len(head) == 8 else (None,)
            header = json.loads(fh.read(length)) if length is not None and 8 + length <= size else None
        ends = [e["data_offsets"][1] for k, e in header.items() if k != "__metadata__"] if isinstance(header, dict) else None
    except (OSError, ValueError, TypeError, KeyError, IndexError) as err:
        problem = getattr(err, "strerror", None) or "its header cannot be read"
        raise FactinjectError(f"the weights file is damaged ({problem})", where=path, fix=fix) from None
    if ends is None:
        raise FactinjectError("the weights file is damaged or truncated (no readable header)", where=path, fix=fix)
    expected = 8 + length + max(ends, default=0)
    if size != expected:
        raise FactinjectError(f"the weights file is truncated or damaged ({size:,} bytes, its header says "
                              f"{expected:,})", where=path, fix=fix)


def check_weights_folder(folder: Path, fix: str) -> None:
    """Every safetensors file of a model or adapter folder is whole (check_safetensors),
    and every shard the index names is there."""
    folder = Path(folder)
    index = folder / INDEX_NAME
    if index.exists():
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise FactinjectError("the shard index is damaged", where=index, fix=fix) from None
        missing = sorted(s for s in shards if not (folder / s).is_file())
        if missing:
            raise FactinjectError(f"the shard index names files that are missing: {', '.join(missing[:3])}",
                                  where=index, fix=fix)
    for path in sorted(folder.glob("*.safetensors")):
        check_safetensors(path, fix)


class SafetensorsFile:
    """One .safetensors file, read tensor by tensor with pread (no mmap)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        with open(self.path, "rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(size))
        self.metadata = header.pop("__metadata__", {}) or {}
        self.entries = header
        self.data_start = 8 + size

    def keys(self) -> list[str]:
        return sorted(self.entries, key=lambda k: self.entries[k]["data_offsets"][0])

    def read_bytes(self, key: str) -> bytearray:
        start, end = self.entries[key]["data_offsets"]
        buffer = bytearray(end - start)
        with open(self.path, "rb") as fh:
            fh.seek(self.data_start + start)
            fh.readinto(buffer)
        return buffer

    def read(self, key: str):
        import torch

        entry = self.entries[key]
        buffer = self.read_bytes(key)
        dtype = getattr(torch, _ST_TO_TORCH[entry["dtype"]])
        if not buffer:
            return torch.empty(entry["shape"], dtype=dtype)
        return torch.frombuffer(buffer, dtype=dtype).reshape(entry["shape"])


class Checkpoint:
    """A model folder's weights: one file or shards with an index."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        index = self.folder / INDEX_NAME
        if index.exists():
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            files = list(dict.fromkeys(weight_map.values()))
        elif (self.folder / WEIGHTS_NAME).exists():
            files = [WEIGHTS_NAME]
        else:
            raise FactinjectError("no safetensors weights to merge into", where=self.folder,
                                  fix="the base model folder needs model.safetensors or a sharded index")
        self.files = [SafetensorsFile(self.folder / f) for f in files]
        self.where = {k: f for f in self.files for k in f.keys()}

    def keys(self) -> list[str]:
        return [k for f in self.files for k in f.keys()]

    def read(self, key: str):
        return self.where[key].read(key)

    def is_quantized(self, key: str) -> bool:
        return any(k.startswith(key + _QUANT_STATE) for k in self._state_keys(key))

    def _state_keys(self, key: str) -> list[str]:
        return [k for k in self.where if k.startswith(key + ".")]

    def dequantized(self, key: str):
        """A bitsandbytes NF4/FP4 weight as the 16-bit tensor it stands for."""
        import torch
        from bitsandbytes.functional import QuantState, dequantize_4bit

        state = {k[len(key) + 1:]: self.read(k) for k in self._state_keys(key)}
        quant_state = QuantState.from_dict(state, device=torch.device("cpu"))
        return dequantize_4bit(self.read(key), quant_state)

    def output_keys(self) -> list[str]:
        """The weights a 16-bit model has: quantization states are folded into their weight."""
        return [k for k in self.keys() if not (k.endswith(_QUANT_SUFFIXES) or _QUANT_STATE in k)]

    def output_meta(self, key: str) -> tuple[list[int], str]:
        """(shape, torch dtype name) of `key` once dequantized."""
        if self.is_quantized(key):
            blob = next(k for k in self._state_keys(key) if _QUANT_STATE in k)
            packed = json.loads(self.where[blob].read_bytes(blob).decode("utf-8"))
            return list(packed["shape"]), packed["dtype"]
        entry = self.where[key].entries[key]
        return list(entry["shape"]), _ST_TO_TORCH[entry["dtype"]]



_ITEM_SIZE = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "int64": 8, "int32": 4, "int16": 2, "int8": 1,
              "uint8": 1, "bool": 1}
FLOAT_DTYPES = ("float64", "float32", "float16", "bfloat16")


def nbytes(shape: list[int], dtype_name: str) -> int:
    n = 1
    for d in shape:
        n *= d
    return n * _ITEM_SIZE[dtype_name]


