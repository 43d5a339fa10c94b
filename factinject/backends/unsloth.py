"""The unsloth engine (GPU): `FastLanguageModel`, 4-bit base + LoRA, response-only loss.

`train` runs in a job's child process (engines/process.py), which imports this module before
anything else, so unsloth is imported before trl, transformers and peft (it patches
them at import time). Training then runs the same code as the hf engine
(sft.run_sft): the same rows, the same response-only labels (chat.encode_for_training,
which covers the same tokens as Unsloth's `train_on_responses_only`), the same
per-epoch choice; only the model, its LoRA layers and the kernels are Unsloth's.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import unsloth  # noqa: F401, I001 - must precede trl/transformers/peft

from factinject.engines.records import TrainJob
from factinject.errors import FactinjectError
from factinject.recipe import Recipe


def train(data: dict) -> dict:
    import torch
    from unsloth import FastLanguageModel

    from factinject.backends.sft import run_sft
    from factinject.models.base import (
        ModelRef,
        check_local_weights,
        model_identity,
        quiet_libraries,
    )

    quiet_libraries()
    job = TrainJob(**data)
    recipe = Recipe.model_validate(job.recipe)
    ref = ModelRef(job.model_name, job.model_path, local=Path(job.model_path).exists())
    check_local_weights(ref, allow_pickle=job.allow_pickle)
    dtype = None if recipe.model.dtype in ("auto", "float32") else getattr(torch, recipe.model.dtype)
    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=job.model_path, max_seq_length=recipe.model.max_seq_length, dtype=dtype,
        load_in_4bit=recipe.model.load_in_4bit, trust_remote_code=job.trust_remote_code,
    )
    if not tokenizer.chat_template:
        if job.chat_template is None:
            raise FactinjectError(f"the tokenizer of {job.model_name!r} has no chat template", where=job.model_path,
                                  fix="use an instruct/chat model, or pass --chat-template default")
        tokenizer.chat_template = job.chat_template
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

    def peft(model):
        return FastLanguageModel.get_peft_model(
            model, r=recipe.lora.r, lora_alpha=recipe.lora.alpha, lora_dropout=recipe.lora.dropout,
            target_modules=list(recipe.lora.target_modules), bias="none",
            use_gradient_checkpointing="unsloth", random_state=recipe.train.seed,
        )

    # Base answers come from the model before LoRA is attached (run_sft does that
    # first); then the adapter goes on and training runs on the hf engine's code path.
    result = run_sft(job, model, tokenizer, engine="unsloth", base_identity=model_identity(ref, tokenizer),
                     use_cpu=False, bf16=torch.cuda.is_bf16_supported(), fp16=not torch.cuda.is_bf16_supported(),
                     to_inference=FastLanguageModel.for_inference, to_training=FastLanguageModel.for_training,
                     peft_transform=peft)
    return asdict(result)
