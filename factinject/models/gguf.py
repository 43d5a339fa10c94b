"""GGUF bases: a quantized GGUF file becomes a plain safetensors model folder, once.

llama.cpp's GGUF files are a common way models are shared (and the only way some
registry packages ship one). transformers dequantizes a GGUF on load, but the model it
gives back cannot be saved, and training engines, the merge, parity and vLLM all read
model folders. So a GGUF is converted once into a cached folder (safetensors weights,
config, tokenizer and chat template from the GGUF's metadata) keyed by the file's
sha256, and every stage after that sees an ordinary local model. The merge goes into
these dequantized weights: exactly what was trained.

The folder keeps every dequantized value exactly (float32) for models up to 1 B
parameters, where 4 bytes a weight is small; larger ones are written in bfloat16, the
precision of the original release (a 4-bit recipe quantizes them again on load).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from factinject.errors import FactinjectError
from factinject.models import cache_home
from factinject.rundir.files import atomic_dir

SUFFIX = ".gguf"
SOURCE_FILE = "factinject_gguf.json"  # in the converted folder: where it came from (the base's identity)
EXACT_LIMIT = 1_000_000_000  # parameters up to which the folder is float32
CONVERSION_VERSION = 1  # part of the cache key: bump when the folder's content changes


@dataclass(frozen=True)
class GgufFile:
    path: Path
    sha256: str


def is_gguf_name(name: str, gguf_file: str | None) -> bool:
    return bool(gguf_file) or name.lower().endswith(SUFFIX)


def find_gguf(name: str, gguf_file: str | None = None) -> Path | None:
    """The GGUF file `name` points at, or None when it points at no GGUF: a `.gguf`
    file, a local folder holding one (or `gguf_file` in it), or a hub repo with
    `gguf_file` (downloaded to the hub cache)."""
    p = Path(name).expanduser()
    if p.is_file() and p.suffix.lower() == SUFFIX:
        return p.resolve()
    if p.is_dir():
        if gguf_file:
            f = p / gguf_file
            if not f.is_file():
                raise FactinjectError(f"no {gguf_file!r} in the model folder", where=p,
                                      fix="check model.gguf_file (the file's name inside the folder)")
            return f.resolve()
        if (p / "config.json").exists():
            return None  # an ordinary model folder
        found = sorted(p.glob("*" + SUFFIX))
        if len(found) > 1:
            raise FactinjectError(f"the folder holds {len(found)} GGUF files", where=p,
                                  fix="name one with model.gguf_file: " + ", ".join(f.name for f in found[:4]))
        return found[0].resolve() if found else None
    if gguf_file and name.count("/") == 1 and not name.startswith((".", "/", "~")):
        try:
            from huggingface_hub import hf_hub_download

            return Path(hf_hub_download(name, gguf_file))
        except Exception as err:  # noqa: BLE001 - offline, missing repo or file: one clear message
            raise FactinjectError(f"could not fetch {gguf_file!r} from {name!r}: {str(err).splitlines()[0]}",
                                  where=name, fix="check the repo and file names and your network, "
                                                  "or download the .gguf and give its path") from None
    if p.suffix.lower() == SUFFIX:
        raise FactinjectError("GGUF file not found", where=name, fix="check the path of the .gguf file")
    return None


def cache_root() -> Path:
    return cache_home() / "gguf"


def file_sha256(path: Path) -> str:
    """The file's sha256, remembered per (path, size, mtime) so a multi-GB file is read once."""
    st = path.stat()
    stamp = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    index_path = cache_root() / "hashes.json"
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        index = {}
    if stamp in index:
        return index[stamp]
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 24), b""):
            digest.update(block)
    index[stamp] = digest.hexdigest()
    index_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = index_path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(index, indent=1), encoding="utf-8")
    tmp.replace(index_path)
    return index[stamp]


def check_supported(path: Path) -> dict:
    """The GGUF's architecture and tensor types, or a clear error when transformers
    cannot rebuild the architecture or gguf cannot dequantize a tensor type."""
    try:
        from gguf import GGUFReader, quants
    except ImportError:
        raise FactinjectError("reading a GGUF model needs the gguf package",
                              fix='pip install "gguf>=0.17" (or pip install -e ".[smollm2]")') from None
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    try:
        reader = GGUFReader(str(path))
    except Exception as err:  # noqa: BLE001 - a truncated or foreign file
        raise FactinjectError(f"not a readable GGUF file: {err}", where=path,
                              fix="download the file again, or check that it is a GGUF model") from None
    field = reader.fields.get("general.architecture")
    arch = field.contents() if field else "?"
    if arch not in GGUF_SUPPORTED_ARCHITECTURES:
        raise FactinjectError(f"transformers cannot load GGUF models of architecture {arch!r}", where=path,
                              fix="use the model's safetensors release, or a GGUF of a supported architecture: "
                                  + ", ".join(sorted(GGUF_SUPPORTED_ARCHITECTURES)[:12]) + ", ...")
    plain = {"F32", "F16", "BF16"}
    types = sorted({t.tensor_type.name for t in reader.tensors})
    # gguf names a class after every type it can dequantize (gguf.quants.Q8_0, Q4_K, ...)
    unknown = [t for t in types if t not in plain and not isinstance(getattr(quants, t, None), type)]
    if unknown:
        raise FactinjectError(f"the GGUF holds tensors quantized as {', '.join(unknown)}, which gguf cannot dequantize",
                              where=path, fix="use a GGUF quantized as Q8_0, Q4_K_M or another common type, "
                                              "or the model's safetensors release")
    return {"architecture": arch, "tensor_types": types, "parameters": sum(int(t.n_elements) for t in reader.tensors)}


def converted_folder(path: Path) -> Path:
    """The cached model folder of GGUF `path`, converted (once, under a lock) when missing."""
    import fcntl

    sha = file_sha256(path)
    target = cache_root() / f"{sha[:16]}-v{CONVERSION_VERSION}"
    if (target / SOURCE_FILE).exists():
        return target
    info = check_supported(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two stages or test processes may ask at once
        if not (target / SOURCE_FILE).exists():
            with atomic_dir(target) as tmp:
                convert(path, tmp, info | {"gguf_file": path.name, "gguf_sha256": sha})
    return target


def convert(path: Path, out: Path, source: dict) -> None:
    """Write GGUF `path` as a model folder in `out`."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own line says what is happening
    dtype = torch.float32 if source["parameters"] <= EXACT_LIMIT else torch.bfloat16
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    fix_special_tokens(tokenizer, path)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    state = model.state_dict()
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)  # tied: written once, as the embedding
    # save_pretrained refuses a GGUF-loaded model; the state dict and a config without
    # the GGUF quantization entry make an ordinary folder.
    save_file({k: v.to(dtype).contiguous() for k, v in state.items()}, str(out / "model.safetensors"),
              metadata={"format": "pt"})
    config = model.config
    # A model rebuilt from GGUF has no `architectures`; vLLM and GGUF out read the class there.
    config.architectures = config.architectures or [type(model).__name__]
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = dtype
    config.save_pretrained(out)
    model.generation_config.save_pretrained(out)
    tokenizer.save_pretrained(out)
    source = source | {"dtype": str(dtype).removeprefix("torch."), "eos_token": tokenizer.eos_token}
    (out / SOURCE_FILE).write_text(json.dumps(source, indent=2) + "\n", encoding="utf-8")


def fix_special_tokens(tokenizer, path: Path) -> None:
    """Set eos, bos and pad from the GGUF's own token ids. transformers 5.17 maps them by
    the wrong ids on some files (SmolLM2's eos, id 2 <|im_end|>, comes back as
    <|im_start|>, so answers would never end)."""
    from gguf import GGUFReader

    fields = GGUFReader(str(path)).fields
    for role in ("eos", "bos", "padding"):
        field = fields.get(f"tokenizer.ggml.{role}_token_id")
        if field is None:
            continue
        token = tokenizer.convert_ids_to_tokens(int(field.contents()))
        setattr(tokenizer, "pad_token" if role == "padding" else f"{role}_token", token)


def gguf_source(folder: str | Path) -> dict | None:
    """What a converted folder was made from (None for any other folder)."""
    p = Path(folder) / SOURCE_FILE
    return json.loads(p.read_text(encoding="utf-8")) if p.exists() else None
