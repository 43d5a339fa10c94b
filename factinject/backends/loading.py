"""Loading a model for the hf engine: 16-bit or 4-bit NF4, on the CPU or a GPU, safely.

Safety first (models/base.py): safetensors only unless --allow-pickle, no remote code
unless asked. Precision as the target says: a 16-bit checkpoint quantized to NF4 on
load (QLoRA), a pre-quantized `-bnb-4bit` checkpoint as it is, or that checkpoint
dequantized to 16-bit (the base an adapter is merged into). bitsandbytes runs NF4
on the CPU as well, so the 4-bit path is the same everywhere.
"""

from __future__ import annotations

from pathlib import Path

from factinject.backends.hf_generate import stop_ids_of
from factinject.engines.records import Load, ModelUnderTest
from factinject.errors import FactinjectError
from factinject.models.base import (
    ModelRef,
    check_local_weights,
    is_prequantized,
    load_tokenizer,
    needs_remote_code,
    quiet_libraries,
)


def resolve_device(device: str) -> str:
    import torch

    from factinject.engines.choice import NEEDS_GPU_FIX

    if device == "cuda" and not torch.cuda.is_available():
        raise FactinjectError("this recipe needs an NVIDIA GPU (CUDA), and this machine has none", fix=NEEDS_GPU_FIX)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def torch_dtype(name: str, device: str):
    """auto: float32 on a CPU (fast and exact there), bfloat16 on a GPU that has it, else float16."""
    import torch

    if name != "auto":
        return getattr(torch, name)
    if device == "cpu":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def cpu_autocast_dtype(setting: str, load_in_4bit: bool, cpu_flags: set[str] | None = None):
    """The dtype a CPU training step's matrix products run in (torch.autocast), or None
    for float32 throughout. `auto` takes bfloat16 only where the CPU multiplies it natively
    (AVX512-BF16 or AMX: on SmolLM2 a LoRA step is then about 1.6x faster, docs/benchmarks.md);
    elsewhere bfloat16 is emulated and slower than float32. A 4-bit base computes in the
    dtype bitsandbytes was given, so autocast is left off there."""
    import torch

    if setting == "off" or (setting == "auto" and load_in_4bit):
        return None
    if setting == "bfloat16":
        return torch.bfloat16
    flags = cpu_flags if cpu_flags is not None else _cpu_flags()
    return torch.bfloat16 if flags & {"avx512_bf16", "amx_bf16"} else None


def _cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux lists them (empty elsewhere: autocast stays off)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def nf4_config(compute_dtype):
    from transformers import BitsAndBytesConfig

    # NF4 with double quantization: what QLoRA and Unsloth's -bnb-4bit checkpoints use.
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype)


def load_model(target: ModelUnderTest, load: Load):
    """(model, tokenizer, device) for `target`, in eval mode, on the chosen device."""
    from transformers import AutoModelForCausalLM

    quiet_libraries()
    device = resolve_device(load.device)
    ref = ModelRef(target.label, target.path, target.local)
    check_local_weights(ref, allow_pickle=load.allow_pickle)
    if needs_remote_code(ref) and not load.trust_remote_code:
        raise FactinjectError(
            "this model's config asks to run its own Python code (auto_map)", where=ref.path,
            fix="pass --trust-remote-code only if you have read that code and trust its source",
        )
    tokenizer_ref = ModelRef(target.label, target.tokenizer, True) if target.tokenizer else ref
    tokenizer = load_tokenizer(tokenizer_ref, chat_template=load.chat_template, trust_remote_code=load.trust_remote_code)
    dtype = torch_dtype(target.dtype, device)
    prequantized = is_prequantized(target.path, target.local)
    kwargs = dict(dtype=dtype, local_files_only=target.local, use_safetensors=not load.allow_pickle,
                  trust_remote_code=load.trust_remote_code)
    if softcapped_attention(target.path, target.local):
        kwargs["attn_implementation"] = "eager"
    elif device == "cpu":
        kwargs["attn_implementation"] = grouped_sdpa()
    four_bit = prequantized or target.load_in_4bit
    if target.load_in_4bit and not prequantized:
        kwargs["quantization_config"] = nf4_config(dtype)
    if four_bit:
        kwargs["device_map"] = {"": device}  # bitsandbytes places the packed weights itself
    try:
        model = AutoModelForCausalLM.from_pretrained(target.path, **kwargs)
    except ImportError as err:
        raise FactinjectError(f"loading {target.path} in 4-bit needs bitsandbytes: {err}", where=target.path,
                              fix="pip install bitsandbytes (it is a factinject dependency; reinstall factinject)") from None
    except OSError as err:
        raise FactinjectError(f"could not load model {target.path!r}: {str(err).splitlines()[0]}", where=target.path,
                              fix="check the model name and your network (or HF_HUB_OFFLINE), or use a local path") from None
    if four_bit and target.dequantize:
        model = model.dequantize()  # the 16-bit weights the 4-bit ones stand for
        model.to(dtype)
    if not four_bit or target.dequantize:
        model.to(device)
    if target.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, target.adapter)
        if not four_bit or target.dequantize:
            model.to(device)
    model.eval()
    return model, tokenizer, device


GROUPED_SDPA = "factinject_grouped_sdpa"


def grouped_sdpa() -> str:
    """transformers' SDPA attention, except that grouped-query heads (SmolLM2, Llama 3,
    Qwen2.5) go to torch as they are (enable_gqa) also when a padding mask is given.
    transformers copies every key and value per query head there, because CUDA kernels
    would fall back to the slow path; on the CPU torch's kernel takes the groups as they
    are, with identical results, and the copies were a quarter of each padded decode step
    (bench/smollm2.py)."""
    import torch
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    def attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
        groups = getattr(module, "num_key_value_groups", 1)
        if groups == 1 or attention_mask is None or kwargs.get("position_bias") is not None or query.is_cuda:
            return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                          scaling=scaling, is_causal=is_causal, **kwargs)
        out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask,
                                                               dropout_p=dropout, scale=scaling, enable_gqa=True)
        return out.transpose(1, 2).contiguous(), None

    AttentionInterface.register(GROUPED_SDPA, attention)
    # The padding mask is built as for SDPA: without a registered mask function transformers
    # builds none, and left-padded rows would attend to their padding.
    AttentionMaskInterface.register(GROUPED_SDPA, sdpa_mask)
    return GROUPED_SDPA


def softcapped_attention(path: str, local: bool) -> bool:
    """Gemma-2 caps its attention logits (attn_logit_softcapping). transformers' default SDPA
    attention leaves the cap out without a word, so such a model would train and answer as a
    slightly different model than the one vLLM (or the model's authors) run: use eager attention."""
    from factinject.models.base import read_config

    config = read_config(path, local)
    config = config.get("text_config") or config
    return bool(config.get("attn_logit_softcapping"))


def release() -> None:
    """Return the memory of a model the caller has dropped, before the next one loads."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def base_answer_cache(target: ModelUnderTest, load: Load, max_new_tokens: int, engine: str = "hf"):
    """The answer cache of a base model as this engine answers it (models/answer_cache.py);
    None for any other model, or a hub model not downloaded yet."""
    import torch

    from factinject.models.answer_cache import AnswerCache, base_answer_key, library_versions, local_folder

    folder = local_folder(target.path, target.local)
    if target.adapter or target.label != "base" or folder is None:
        return None
    device = resolve_device(load.device)
    libraries = ("torch", "transformers", *(("bitsandbytes",) if target.load_in_4bit else ()),
                 *(("unsloth",) if engine.startswith("unsloth") else ()))
    return AnswerCache(base_answer_key(
        model_folder=folder, chat_template=load.chat_template, precision=target.precision, max_new_tokens=max_new_tokens,
        engine=engine, versions=library_versions(*libraries),
        device=torch.cuda.get_device_name() if device == "cuda" else device))


def token_prompts(job, generation_config: str | None = None):
    """(tokenizer, prompt token ids, stop ids) for an engine fed token ids (vllm, llamacpp),
    all from the run's own tokenizer and template (`job.target.tokenizer`, else the model's
    folder); the stop ids also from the generation config in `generation_config` (default:
    the model's folder). `job` is a GenerateJob."""
    target = job.target
    tokenizer_ref = ModelRef(target.label, target.tokenizer, True) if target.tokenizer else \
        ModelRef(target.label, target.path, target.local)
    tokenizer = load_tokenizer(tokenizer_ref, chat_template=job.load.chat_template,
                               trust_remote_code=job.load.trust_remote_code)
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                             tokenize=True, return_dict=False) for q in job.questions]
    if generation_config is not None:
        return tokenizer, prompts, stop_ids_of(generation_config, tokenizer)
    return tokenizer, prompts, stop_ids_of(target.path, tokenizer, target.local)
