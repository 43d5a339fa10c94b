"""CPU training backend: transformers + PEFT LoRA + TRL `SFTTrainer`, assistant-only loss.

`lora_config` and `sft_config` are the one place where a recipe becomes library
arguments (the Unsloth backend reuses them).
"""

from __future__ import annotations

import json

from factinject.errors import FactinjectError
from factinject.recipe import Recipe
from factinject.train import TrainJob, TrainResult, mix_replay


def lora_config(recipe: Recipe):
    from peft import LoraConfig

    return LoraConfig(
        r=recipe.lora.r, lora_alpha=recipe.lora.alpha, lora_dropout=recipe.lora.dropout,
        target_modules=list(recipe.lora.target_modules), bias="none", task_type="CAUSAL_LM",
    )


def sft_config(job: TrainJob, *, use_cpu: bool, bf16: bool = False, assistant_only_loss: bool = True):
    from trl import SFTConfig

    recipe = job.recipe_obj()
    t = recipe.train
    epochs = t.epochs if isinstance(t.epochs, int) else t.max_epochs
    return SFTConfig(
        output_dir=str(job.checkpoint_dir),
        num_train_epochs=epochs,
        per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_ratio,  # transformers 5: a float in [0, 1) is a ratio of all steps
        weight_decay=t.weight_decay,
        seed=t.seed,
        data_seed=t.seed,
        max_length=recipe.model.max_seq_length,
        packing=False,  # paraphrases of one fact must not share a sequence
        assistant_only_loss=assistant_only_loss,
        logging_strategy="steps",
        logging_steps=1,
        save_strategy="epoch",
        save_total_limit=1,  # only the latest checkpoint is needed to resume
        report_to=[],
        disable_tqdm=True,
        use_cpu=use_cpu,
        bf16=bf16,
        dataloader_num_workers=0,
    )


def cpu_trainer_class():
    """TRL 1.15's SFTTrainer computes its loss through a Triton-only fused LM head,
    which has no CPU path (and unsloth pins trl<=1.15). On the CPU we therefore take
    the standard transformers loss: cross-entropy over the labels TRL has already
    built, where every non-assistant token is -100, so it is the same assistant-only
    objective, just with materialised logits (cheap at CPU sizes)."""
    from transformers import Trainer
    from trl import SFTTrainer

    class CpuSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            inputs["use_cache"] = False
            return Trainer.compute_loss(self, model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)

    return CpuSFTTrainer


def check_lengths(tokenizer, rows: list[dict], max_len: int) -> None:
    """Refuse rows that would be truncated (TRL would cut them silently)."""
    too_long = []
    for row in rows:
        n = len(tokenizer.apply_chat_template(row["messages"], tokenize=True, return_dict=False))
        if n > max_len:
            too_long.append((n, row.get("source", "?"), row["messages"][0]["content"]))
    if too_long:
        too_long.sort(reverse=True)
        shown = "; ".join(f"{src} ({n} tokens): {q[:50]!r}" for n, src, q in too_long[:3])
        raise FactinjectError(
            f"{len(too_long)} of {len(rows)} training rows are longer than model.max_seq_length={max_len}: {shown}",
            fix=f"raise model.max_seq_length to at least {too_long[0][0]} in the recipe (or shorten those facts)",
        )


def latest_checkpoint(job: TrainJob):
    checkpoints = sorted(job.checkpoint_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    return checkpoints[-1] if checkpoints else None


def checkpoint_epoch(checkpoint) -> int | None:
    if checkpoint is None:
        return None
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    return round(state["epoch"])


def run_sft(job: TrainJob, model, tokenizer, *, backend: str, base_identity: dict, use_cpu: bool, bf16: bool = False,
            to_inference=None, to_training=None, peft_transform=None, assistant_only_loss: bool = True,
            trainer_hook=None) -> TrainResult:
    """The part both backends share: replay answers, dataset, trainer, per-epoch selection."""
    from datasets import Dataset
    from transformers import PrinterCallback
    from trl import SFTTrainer

    from factinject.backends.epochs import EpochCallback, base_answers, load_curve
    from factinject.backends.progress import TrainProgress

    recipe = job.recipe_obj()
    if to_inference:
        to_inference(model)
    cache = job.state_dir / "base_answers.json"
    n_replay, n_contrast = len(job.replay_prompts), len(job.contrast_prompts)
    prompts = job.replay_prompts + job.contrast_prompts + job.drift_prompts
    answers = base_answers(model, tokenizer, prompts, cache)

    def conversations(questions, replies):
        return [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
                for q, a in zip(questions, replies) if a.strip()]

    replay = conversations(job.replay_prompts, answers[:n_replay])
    contrast = conversations(job.contrast_prompts, answers[n_replay:n_replay + n_contrast])
    drift_reference = answers[n_replay + n_contrast:]
    rows = mix_replay(job.fact_rows, replay, recipe.train.replay_ratio, recipe.train.seed, contrast)
    check_lengths(tokenizer, rows, recipe.model.max_seq_length)
    dataset = Dataset.from_list([{"messages": r["messages"]} for r in rows])

    if peft_transform is None:
        from peft import get_peft_model

        model = get_peft_model(model, lora_config(recipe))
    else:
        model = peft_transform(model)
    if to_training:
        to_training(model)
    checkpoint = latest_checkpoint(job) if job.resume else None
    curve = load_curve(job, checkpoint_epoch(checkpoint))
    max_epochs = recipe.train.epochs if isinstance(recipe.train.epochs, int) else recipe.train.max_epochs
    progress = TrainProgress(max_epochs)
    callback = EpochCallback(job, tokenizer, drift_reference, curve, progress, to_inference, to_training)
    args = sft_config(job, use_cpu=use_cpu, bf16=bf16, assistant_only_loss=assistant_only_loss)
    trainer_cls = cpu_trainer_class() if use_cpu else SFTTrainer
    trainer = trainer_cls(model=model, args=args, train_dataset=dataset,
                         processing_class=tokenizer, callbacks=[callback])
    trainer.remove_callback(PrinterCallback)  # the progress bar replaces per-step log dicts
    if trainer_hook:
        trainer = trainer_hook(trainer)
    try:
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    finally:
        progress.close()
    decision = callback.decision
    if decision is None and callback.curve:
        # Resumed from the final checkpoint (killed just before publishing): no epoch
        # ran, so the decision comes from the recorded curve.
        decision = callback.decide()
    assert decision is not None and decision.best_epoch is not None, "training ended without a measured epoch"
    return TrainResult(curve=callback.curve, best_epoch=decision.best_epoch, reason=decision.reason, backend=backend,
                       seconds=0.0, base_identity=base_identity, replay_rows=len(rows) - len(job.fact_rows))


def train(job: TrainJob) -> TrainResult:
    import torch

    from factinject.models import load_model_cpu, model_identity, resolve_model

    recipe = job.recipe_obj()
    torch.manual_seed(recipe.train.seed)
    ref = resolve_model(job.model_name)
    model, tokenizer = load_model_cpu(ref, dtype=recipe.model.dtype, allow_pickle=job.allow_pickle,
                                      trust_remote_code=job.trust_remote_code)
    return run_sft(job, model, tokenizer, backend="cpu", base_identity=model_identity(ref, tokenizer), use_cpu=True)

