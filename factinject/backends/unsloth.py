"""The unsloth engine: `FastLanguageModel`, LoRA on a 4-bit or 16-bit base, on a GPU or a CPU.

`train` runs in a job's child process (engines/process.py), which imports this module before
anything else, so unsloth is imported before trl, transformers and peft (it patches
them at import time). Training then runs the same code as the hf engine
(sft.run_sft): the same rows, the same response-only labels (chat.encode_for_training,
which covers the same tokens as Unsloth's `train_on_responses_only`), the same
per-epoch choice; the model, its LoRA layers, the trainer and the kernels are Unsloth's.

Without a GPU, Unsloth (2026.10.9 and later) falls back to its CPU path: stock
transformers + PEFT + TRL with its own loss (chunked cross-entropy), trainer defaults
(fused AdamW) and bitsandbytes' CPU kernels for a 4-bit base. Two things it does
silently are checked here: a 4-bit base it cannot quantize is loaded in 16-bit instead,
and attention soft-capping (Gemma-2) is left out under the default SDPA attention.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import unsloth  # noqa: F401 - must precede trl/transformers/peft

from factinject.engines.records import TrainJob
from factinject.errors import FactinjectError
from factinject.recipe import Recipe


def train(data: dict) -> dict:
    import torch
    from trl import SFTTrainer
    from unsloth import FastLanguageModel

    from factinject.backends.sft import run_sft
    from factinject.models.base import (
        ModelRef,
        check_local_weights,
        model_identity,
        quiet_libraries,
    )

    quiet_libraries()
    job = TrainJob.from_dict(data)
    recipe = Recipe.model_validate(job.recipe)
    ref = ModelRef(job.model_name, job.model_path, local=Path(job.model_path).exists())
    check_local_weights(ref, allow_pickle=job.allow_pickle)
    model, tokenizer = load_base(job.model_path, recipe, local=ref.local, trust_remote_code=job.trust_remote_code)
    if not tokenizer.chat_template:
        if job.chat_template is None:
            raise FactinjectError(f"the tokenizer of {job.model_name!r} has no chat template", where=job.model_path,
                                  fix="use an instruct/chat model, or pass --chat-template default")
        tokenizer.chat_template = job.chat_template
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    on_gpu = torch.cuda.is_available()

    def peft(model):
        return FastLanguageModel.get_peft_model(
            model, r=recipe.lora.r, lora_alpha=recipe.lora.alpha, lora_dropout=recipe.lora.dropout,
            target_modules=list(recipe.lora.target_modules), bias="none", random_state=recipe.train.seed,
            # On a GPU Unsloth offloads the checkpointed activations; on a CPU they are in
            # memory already and recomputing them costs a third more (bench/smollm2.py).
            use_gradient_checkpointing="unsloth" if on_gpu else False,
        )

    bf16 = on_gpu and torch.cuda.is_bf16_supported()
    # trl.SFTTrainer is Unsloth's here: on a CPU, importing unsloth replaced it with its CPU
    # trainer (its own loss, chunked cross-entropy), which the hf engine's loss would bypass.
    # Base answers come from the model before LoRA is attached (run_sft does that first).
    result = run_sft(job, model, tokenizer, engine="unsloth", base_identity=model_identity(ref, tokenizer),
                     use_cpu=not on_gpu, bf16=bf16, fp16=on_gpu and not bf16,
                     to_inference=FastLanguageModel.for_inference, to_training=FastLanguageModel.for_training,
                     peft_transform=peft, trainer_class=SFTTrainer)
    return asdict(result)


def load_base(path: str, recipe: Recipe, *, local: bool = True, trust_remote_code: bool = False):
    """(model, tokenizer) through Unsloth's loader, in the precision the recipe trains in."""
    import torch
    from unsloth import FastLanguageModel

    from factinject.backends.loading import softcapped_attention, torch_dtype

    if torch.cuda.is_available():
        # None lets Unsloth pick bfloat16 where the card has it, else float16.
        dtype = None if recipe.model.dtype in ("auto", "float32") else getattr(torch, recipe.model.dtype)
    else:
        dtype = torch_dtype(recipe.model.dtype, "cpu")  # as the hf engine loads it on a CPU
    # Gemma-2's attention soft-capping exists only in eager attention (loading.softcapped_attention).
    extra = {"attn_implementation": "eager"} if softcapped_attention(path, local) else {}
    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=path, max_seq_length=recipe.model.max_seq_length, dtype=dtype,
        load_in_4bit=recipe.model.load_in_4bit, trust_remote_code=trust_remote_code, **extra,
    )
    check_four_bit(model, recipe.model.load_in_4bit, path)
    return model, tokenizer


def check_four_bit(model, wanted: bool, path: str) -> None:
    """Unsloth's CPU path loads 16-bit weights, with a printed line only, where bitsandbytes'
    CPU kernels fail (or UNSLOTH_CPU_LOAD_IN_4BIT=0): a recipe that says 4-bit would then
    train another model than it names, and its probe would ask the 4-bit one."""
    if not wanted or getattr(model, "is_loaded_in_4bit", False):
        return
    raise FactinjectError(
        "the recipe asks for a 4-bit base (model.load_in_4bit: true) and Unsloth loaded 16-bit weights: its CPU "
        "path found no working bitsandbytes 4-bit kernel on this machine", where=path,
        fix="set model.load_in_4bit: false (and a 16-bit model.name); if UNSLOTH_CPU_LOAD_IN_4BIT=0 is set, "
            "unset it; or train with --backend hf")
