"""Supervised fine-tuning shared by the training engines: transformers + PEFT + TRL.

`lora_config` and `sft_config` are the one place where a recipe becomes library
arguments (the Unsloth engine reuses them). `run_sft` does what both engines share:
the base model's answers for replay, the dataset with response-only labels, the
trainer, and the per-epoch choice.
"""

from __future__ import annotations

import json

from factinject.backends.hf_generate import labelled_positions_only, lm_head
from factinject.engines.records import TrainJob, TrainResult
from factinject.errors import FactinjectError
from factinject.recipe import Recipe
from factinject.train.policy import mix_replay, own_words_rows


def lora_config(recipe: Recipe):
    from peft import LoraConfig

    return LoraConfig(
        r=recipe.lora.r, lora_alpha=recipe.lora.alpha, lora_dropout=recipe.lora.dropout,
        target_modules=list(recipe.lora.target_modules), bias="none", task_type="CAUSAL_LM",
    )


def sft_config(job: TrainJob, *, use_cpu: bool, bf16: bool = False, fp16: bool = False):
    from trl import SFTConfig

    recipe = Recipe.model_validate(job.recipe)
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
        train_sampling_strategy="group_by_length" if t.batches == "by_length" else "random",
        logging_strategy="steps",
        logging_steps=1,
        save_strategy="epoch",
        save_total_limit=1,  # only the latest checkpoint is needed to resume
        report_to=list(t.report_to),  # none unless the recipe names trackers (checked installed by train)
        disable_tqdm=True,
        use_cpu=use_cpu,
        # TRL turns gradient checkpointing on by default: a GPU needs it for a 7-8B model's
        # activations, a CPU has the memory and would pay a third more compute for it.
        gradient_checkpointing=not use_cpu,
        bf16=bf16,
        fp16=fp16,
        dataloader_num_workers=0,
    )


def cpu_trainer_class(autocast_dtype=None):
    """TRL 1.15's SFTTrainer computes its loss through a Triton-only fused LM head,
    which has no CPU path (and unsloth pins trl<=1.15). On the CPU the loss is computed
    here: the same response-only cross-entropy (every token outside the answer is -100),
    with the LM head applied only where a label is. A real vocabulary makes the head the
    largest layer (SmolLM2: 49,152 x 576 at every position, prompt and padding included),
    and most positions carry no label (bench/smollm2.py).

    With `autocast_dtype` (recipe train.cpu_autocast) the step's matrix products run in
    that dtype under torch.autocast, here and not through the Trainer's bf16 flag: that
    flag would wrap the model's forward for good, and the per-epoch evaluation, which
    must answer as the float32 probe does, would run in bfloat16 too."""
    import torch
    from transformers import Trainer
    from trl import SFTTrainer

    class CpuSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            inputs["use_cache"] = False
            with torch.autocast("cpu", dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
                if return_outputs or not labelled_positions_only(model):
                    return Trainer.compute_loss(self, model, inputs, return_outputs=return_outputs,
                                                num_items_in_batch=num_items_in_batch)
                return answer_loss(model, inputs, num_items_in_batch)

    return CpuSFTTrainer


def anchored_trainer_class(base):
    """An engine's own trainer (Unsloth's) with answer_loss as its loss: anchor labels
    (train.replay_loss or contrast_loss kl) carry the base model's distribution, which no
    engine's loss knows. Everything else (optimizer, kernels, the training loop) stays
    the engine's."""

    class AnchoredTrainer(base):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if return_outputs:
                return super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
            inputs["use_cache"] = False
            return answer_loss(model, inputs, num_items_in_batch)

    AnchoredTrainer.__name__ = f"Anchored{base.__name__}"
    return AnchoredTrainer


# A label at or above ANCHOR marks an anchor position (train.replay_loss: kl): the target
# is the base model's whole distribution there, not the token (label - ANCHOR) it chose.
# Far above any vocabulary, so no token id is mistaken for one.
ANCHOR = 1 << 24


def answer_loss(model, inputs: dict, num_items_in_batch=None):
    """Cross-entropy over the labelled positions only: the decoder's hidden states at the
    positions that predict a label, through the LM head, in float32 (as transformers'
    causal-LM loss upcasts), summed and divided like Trainer's loss. At anchor positions
    (labels >= ANCHOR) the term is KL(base || tuned) instead, the base's distribution
    from the same decoder with the adapter switched off (no gradient).

    The batch's rows go through the decoder in groups of similar length, each cut to its
    own longest row: a batch mixing 50-token fact rows with 160-token replayed answers is
    otherwise half padding. The rows, and so the loss and its gradient, are the batch's."""
    import torch

    ids, labels = inputs["input_ids"], inputs["labels"]
    mask = inputs.get("attention_mask")
    if mask is None:
        mask = torch.ones_like(ids)
    lengths = mask.sum(1)
    right_padded = bool((mask == (torch.arange(mask.shape[1], device=mask.device)[None, :] < lengths[:, None])).all())
    groups = length_groups(lengths.tolist(), GROUP_OVERHEAD_TOKENS) if right_padded else [list(range(len(ids)))]
    total = None
    for rows in groups:
        index = torch.tensor(rows, dtype=torch.long, device=ids.device)
        width = int(lengths[index].max()) if right_padded else ids.shape[1]
        hidden = model.get_decoder()(input_ids=ids[index, :width], attention_mask=mask[index, :width],
                                     use_cache=False).last_hidden_state
        targets = labels[index, 1:width]
        where = targets != -100
        logits = lm_head(model, hidden[:, :-1][where]).float()
        picked = targets[where]
        anchor = picked >= ANCHOR
        part = torch.nn.functional.cross_entropy(logits[~anchor], picked[~anchor], reduction="sum")
        if anchor.any():
            part = part + _anchor_kl(model, ids[index, :width], mask[index, :width], where, anchor, logits[anchor])
        total = part if total is None else total + part
    count = num_items_in_batch if num_items_in_batch is not None else (labels[:, 1:] != -100).sum()
    return total / torch.as_tensor(count, device=total.device, dtype=total.dtype).clamp(min=1)


def _anchor_kl(model, ids, mask, where, anchor, tuned_logits):
    """KL(base || tuned) summed over the anchor positions: the base model's distributions
    from the decoder with the adapter switched off, without gradient."""
    import torch

    assert hasattr(model, "disable_adapter"), "anchor positions need a PEFT model: the base is its adapter switched off"
    with torch.no_grad(), model.disable_adapter():
        hidden = model.get_decoder()(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
        base = lm_head(model, hidden[:, :-1][where][anchor]).float().log_softmax(-1)
    return (base.exp() * (base - tuned_logits.log_softmax(-1))).sum()


# What one more pass through the decoder costs, in padded tokens: a group is split off
# only when it saves more padding than this.
GROUP_OVERHEAD_TOKENS = 256


def length_groups(lengths: list[int], overhead: int) -> list[list[int]]:
    """Rows split into groups of similar length with the least padded tokens plus
    `overhead` per group (an exact split of the rows sorted by length)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    n = len(order)
    best, cut = [0] + [float("inf")] * n, [0] * (n + 1)
    for end in range(1, n + 1):
        for start in range(end):
            cost = best[start] + (end - start) * lengths[order[end - 1]] + overhead
            if cost < best[end]:
                best[end], cut[end] = cost, start
    groups, end = [], n
    while end:
        groups.append(order[cut[end]:end])
        end = cut[end]
    return groups[::-1]


def anchored_sources(recipe: Recipe) -> tuple[str, ...]:
    """The row sources trained on the base model's distribution (train.replay_loss and
    train.contrast_loss set to kl) rather than on its one greedy answer."""
    return tuple(source for source, loss in (("replay", recipe.train.replay_loss),
                                             ("contrast", recipe.train.contrast_loss)) if loss == "kl")


def training_rows(tokenizer, rows: list[dict], max_len: int, anchor_sources: tuple[str, ...] = ()) -> list[dict]:
    """Rows as {"input_ids", "labels"}: the loss covers the answer and its end-of-turn
    token only (chat.encode_for_training). Rows from `anchor_sources` (e.g. "replay")
    carry anchor labels (token + ANCHOR: see answer_loss). Rows longer than max_len are
    refused, never cut (TRL would cut them silently)."""
    from factinject.models.chat import encode_for_training

    out, too_long = [], []
    for row in rows:
        try:
            ids, mask = encode_for_training(tokenizer, row["messages"], cut=row.get("cut", False))
        except ValueError as err:
            raise FactinjectError(f"cannot train with this chat template: {err}",
                                  fix="use the model's own template, or --chat-template default") from None
        if len(ids) > max_len:
            too_long.append((len(ids), row.get("source", "?"), row["messages"][0]["content"]))
        shift = ANCHOR if row.get("source") in anchor_sources else 0
        out.append({"input_ids": ids, "labels": [t + shift if m else -100 for t, m in zip(ids, mask)]})
    if too_long:
        too_long.sort(reverse=True)
        shown = "; ".join(f"{src} ({n} tokens): {q[:50]!r}" for n, src, q in too_long[:3])
        raise FactinjectError(
            f"{len(too_long)} of {len(rows)} training rows are longer than model.max_seq_length={max_len}: {shown}",
            fix=f"raise model.max_seq_length to at least {too_long[0][0]} in the recipe (or shorten those facts)",
        )
    return out


def latest_checkpoint(job: TrainJob):
    """The Trainer's own newest checkpoint folder (its rule, its naming), or None."""
    from pathlib import Path

    from transformers.trainer_utils import get_last_checkpoint

    if not job.checkpoint_dir.is_dir():
        return None
    found = get_last_checkpoint(str(job.checkpoint_dir))
    return Path(found) if found else None


def checkpoint_epoch(checkpoint) -> int | None:
    if checkpoint is None:
        return None
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    return round(state["epoch"])


def run_sft(job: TrainJob, model, tokenizer, *, engine: str, base_identity: dict, use_cpu: bool, bf16: bool = False,
            fp16: bool = False, to_inference=None, to_training=None, peft_transform=None,
            trainer_class=None, cpu_autocast=None) -> TrainResult:
    """The part both engines share: replay answers, dataset, trainer, per-epoch selection.
    `trainer_class`: the engine's own trainer; by default ours on a CPU, TRL's on a GPU.
    `cpu_autocast`: the dtype of a CPU step's matrix products (ours only), None: float32."""
    from datasets import Dataset
    from transformers import PrinterCallback
    from trl import SFTTrainer

    from factinject.backends.epochs import EpochCallback, base_answers, load_curve
    from factinject.progress import TrainProgress

    recipe = Recipe.model_validate(job.recipe)
    if to_inference:
        to_inference(model)
    reference = base_answers(model, tokenizer, job, job.state_dir / "base_answers.json", engine)

    def conversations(pairs):  # (question, answer) or (question, answer, finished)
        return [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
                 "cut": not rest[0] if rest else False} for q, a, *rest in pairs]

    replay = conversations(reference.replay)
    contrast = conversations(reference.contrast)
    fact_rows, own_words = own_words_rows(job.fact_rows, job.teacher_prompts, reference.own_words) \
        if job.teacher_prompts else (job.fact_rows, 0)
    rows = mix_replay(fact_rows, replay, recipe.train.replay_ratio, recipe.train.seed, contrast)
    anchored = anchored_sources(recipe)
    if anchored and not labelled_positions_only(model):
        raise FactinjectError("train.replay_loss: kl is trained by factinject's loss, which needs the model's "
                              "decoder and LM head apart",
                              fix=f"{type(model).__name__} scales its output otherwise: set train.replay_loss and "
                                  "train.contrast_loss to tokens")
    dataset = Dataset.from_list(training_rows(tokenizer, rows, recipe.model.max_seq_length, anchored))

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
    callback = EpochCallback(job, tokenizer, reference.drift, curve, progress, to_inference, to_training)
    args = sft_config(job, use_cpu=use_cpu, bf16=bf16, fp16=fp16)
    # Our loss on a CPU, and on a GPU where anchor labels need it; TRL's otherwise. An
    # engine's own trainer (Unsloth's) keeps its loop, with our loss where anchors need it.
    if trainer_class is not None:
        trainer_cls = anchored_trainer_class(trainer_class) if anchored else trainer_class
    else:
        trainer_cls = cpu_trainer_class(cpu_autocast) if use_cpu or anchored else SFTTrainer
    trainer = trainer_cls(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                          callbacks=[callback])
    trainer.remove_callback(PrinterCallback)  # the progress bar replaces per-step log dicts
    callback.trainer = trainer  # each epoch's dev recall and drift go to the recipe's trackers with the loss
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
    counts = {"replay": len(rows) - len(job.fact_rows) - len(contrast), "contrast": len(contrast),
              "unfinished_left_out": reference.unfinished, "base_answers_cached": reference.cached,
              "own_words": own_words,
              "tokens_per_epoch": sum(len(row["input_ids"]) for row in dataset)}
    if use_cpu and trainer_class is None and cpu_autocast is not None:
        compute = f"{str(model.dtype).removeprefix('torch.')} weights, {str(cpu_autocast).removeprefix('torch.')} autocast"
    else:
        compute = "bfloat16 mixed precision" if bf16 else "float16 mixed precision" if fp16 else str(
            model.dtype).removeprefix("torch.")
    return TrainResult(curve=callback.curve, best_epoch=decision.best_epoch, reason=decision.reason, backend=engine,
                       seconds=0.0, base_identity=base_identity, replay_rows=counts["replay"], row_counts=counts,
                       compute=compute)
