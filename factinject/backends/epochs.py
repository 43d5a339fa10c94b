"""Per-epoch measurement shared by the training engines (a transformers TrainerCallback).

Before training: the base model's own answers, for replay and contrast rows (whole
answers only: one that does not end within generate.max_new_tokens is left out, so
the model is never taught to stop mid-sentence) and for the drift reference.
After every epoch: dev recall (the `dev` split, never `test`) and drift (share of
drift-control prompts whose answer opening differs from the base model's, see
hf_generate.DRIFT_TOKENS; with stop.drift: tokens, the share of the base's answer tokens
the tuned model no longer ranks first, teacher-forced); then `choose_epoch` decides
whether to stop, and the kept epoch's adapter is saved whole.

Import order matters on the GPU: the Unsloth engine imports unsloth before this.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from transformers import TrainerCallback

from factinject.backends.hf_generate import (
    AGREEMENT_BATCH,
    DRIFT_TOKENS,
    answer_sequences,
    generate,
    teacher_forced_batched,
)
from factinject.backends.loading import base_answer_cache
from factinject.engines.records import EpochRecord, Load, ModelUnderTest, TrainJob
from factinject.progress import counter
from factinject.models.answer_cache import cached_generate_budgeted
from factinject.recipe import Recipe
from factinject.rundir.files import atomic_dir, write_text_atomic
from factinject.scoring import contains_key, same_answer
from factinject.train.policy import choose_epoch


@dataclass
class Reference:
    replay: list[tuple[str, str, bool]]  # (question, the base model's answer, whether it ended: else cut, see below)
    contrast: list[tuple[str, str]]
    drift: list[str]  # the base model's answers to the drift prompts (drift_budget tokens)
    unfinished: int  # replay and contrast answers left out: not finished within the budget
    cached: int = 0  # answers that came from the answer cache
    own_words: dict = field(default_factory=dict)  # teacher prompt -> (answer, finished) (train.fact_answers)


def _chats(questions: list[str]) -> list[list[dict]]:
    return [[{"role": "user", "content": q}] for q in questions]


def base_answers(model, tokenizer, job: TrainJob, cache: Path, engine: str = "hf") -> Reference:
    """The base model's greedy answers, computed once per training (cached for --resume), and
    across runs in the answer cache (models/answer_cache.py): only prompts the base model was
    never asked in this precision and engine are generated. Replayed answers are whole, or
    with train.replay_tokens their first N tokens (kept although cut: trained without an
    end of turn)."""
    recipe = Recipe.model_validate(job.recipe)
    budget = recipe.generate.max_new_tokens
    replay_budget = recipe.train.replay_tokens or budget
    batch = recipe.generate.batch_size or 64
    drift_tokens = drift_budget(recipe)
    key = {"replay": job.replay_prompts, "contrast": job.contrast_prompts, "drift": job.drift_prompts,
           "max_new_tokens": budget, "replay_tokens": recipe.train.replay_tokens, "drift_tokens": drift_tokens,
           "teacher": job.teacher_prompts}
    if cache.exists():
        cached = json.loads(cache.read_text(encoding="utf-8"))
        if cached.get("key") == key:
            return Reference(**{k: [tuple(p) for p in v] if k in ("replay", "contrast") else
                                {q: tuple(a) for q, a in v.items()} if k == "own_words" else v
                                for k, v in cached["reference"].items()})
    target = ModelUnderTest("base", job.model_path, local=job.model_local, load_in_4bit=recipe.model.load_in_4bit,
                            dtype=recipe.model.dtype)
    load = Load(device=recipe.model.device, chat_template=job.chat_template)

    def store(tokens: int):  # keyed apart from the probe's: training prepares the model (e.g. QLoRA's float32 norms)
        return base_answer_cache(target, load, tokens, f"{engine} (training)") if job.answer_cache else None

    def answered(prompts: list[str], budgets: list[int]):
        with counter("[bold]train[/] base model's answers", len(prompts)) as bar:
            return generate(model, tokenizer, _chats(prompts), batch_size=batch, max_new_tokens=budgets,
                            progress=bar.advance)

    asked = job.replay_prompts + job.contrast_prompts
    n = len(job.replay_prompts)
    budgets = [replay_budget] * n + [budget] * len(job.contrast_prompts)
    answers, finished, hits = cached_generate_budgeted(store, asked, budgets, answered)
    cut_allowed = [recipe.train.replay_tokens is not None] * n + [False] * len(job.contrast_prompts)
    kept = [(q, a, done) if (done or cut) and a.strip() else None
            for q, a, done, cut in zip(asked, answers, finished, cut_allowed)]
    drift, _, drift_hits = cached_generate_budgeted(store, job.drift_prompts, [drift_tokens] * len(job.drift_prompts),
                                                    answered)
    teacher = list(dict.fromkeys(p for p in job.teacher_prompts if p))
    taught, finished, teacher_hits = cached_generate_budgeted(store, teacher, [budget] * len(teacher), answered)
    reference = Reference(replay=[p for p in kept[:n] if p], contrast=[p[:2] for p in kept[n:] if p], drift=drift,
                          unfinished=sum(k is None for k in kept), cached=hits + drift_hits + teacher_hits,
                          own_words={q: (a, done) for q, a, done in zip(teacher, taught, finished)})
    write_text_atomic(cache, json.dumps({"key": key, "reference": asdict(reference)}, ensure_ascii=False))
    return reference


def drift_budget(recipe: Recipe) -> int:
    """Tokens of the base model's answers to the drift prompts: their openings, or (drift
    read on tokens) as much as the probe's teacher-forced locality reads."""
    if recipe.stop.drift == "tokens":
        return recipe.generate.budget("teacher_forced")
    return min(DRIFT_TOKENS, recipe.generate.max_new_tokens)


def load_curve(job: TrainJob, upto_epoch: int | None) -> list[EpochRecord]:
    path = job.state_dir / "curve.json"
    if not path.exists() or upto_epoch is None:
        return []
    return [EpochRecord.from_dict(r) for r in json.loads(path.read_text()) if r["epoch"] <= upto_epoch]


class EpochCallback(TrainerCallback):
    def __init__(self, job: TrainJob, tokenizer, drift_reference: list[str], curve: list[EpochRecord],
                 progress=None, to_inference=None, to_training=None):
        self.job = job
        self.recipe = Recipe.model_validate(job.recipe)
        self.tokenizer = tokenizer
        self.reference = drift_reference
        self.curve = curve
        self.progress = progress
        self.to_inference = to_inference or (lambda m: m.eval())
        self.to_training = to_training or (lambda m: m.train())
        self.losses: list[float] = []
        self.epoch_started = time.perf_counter()
        self.decision = None
        self.trainer = None  # set by run_sft: the Trainer whose trackers (recipe train.report_to) get each epoch
        self._forced = None  # drift read on tokens: (prompt ids, answer ids) per drift answer, and the base's argmax

    def _phase(self, title: str, total: int):
        return self.progress.phase(title, total) if self.progress else counter(title, total)

    def decide(self):
        fixed = self.recipe.train.epochs if isinstance(self.recipe.train.epochs, int) else None
        return choose_epoch(self.curve, self.recipe.stop, fixed, self.recipe.train.max_epochs)

    def on_train_begin(self, args, state, control, **kwargs):
        if self.progress:
            self.progress.start(state.max_steps, state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append(float(logs["loss"]))
            if self.progress:
                self.progress.loss(float(logs["loss"]))

    def on_step_end(self, args, state, control, **kwargs):
        if self.progress:
            self.progress.step(state.global_step, state.epoch or 0.0)

    def _tokens_not_kept(self, model, epoch: int) -> tuple[int, int]:
        """Drift read on tokens (stop.drift: tokens): of the base model's answers to the
        drift prompts, teacher-forced, the tokens where the tuned model no longer ranks
        first what the base model ranks first, and all their tokens. The base's choices
        are read once, from the same model with the adapter switched off."""
        if self._forced is None:
            assert hasattr(model, "disable_adapter"), "drift on tokens needs the adapter's model: the base is it off"
            sequences = answer_sequences(self.tokenizer, self.job.drift_prompts, self.reference)
            with model.disable_adapter():
                base = {i: logits.argmax(-1) for i, logits, _ in teacher_forced_batched(model, sequences,
                                                                                        AGREEMENT_BATCH)}
            self._forced = (sequences, base)
        sequences, base = self._forced
        changed = total = 0
        with self._phase(f"[bold]epoch {epoch}[/] drift, teacher-forced", len(sequences)) as bar:
            for i, logits, answer in teacher_forced_batched(model, sequences, AGREEMENT_BATCH):
                changed += int((logits.argmax(-1) != base[i]).sum())
                total += len(answer)
                bar.advance()
        return changed, total

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        trained = time.perf_counter() - self.epoch_started
        epoch = round(state.epoch)
        self.to_inference(model)
        budget = self.recipe.generate.max_new_tokens
        batch = self.recipe.generate.batch_size or 64
        dev = self.job.dev_rows  # questions in wordings never trained: the held-out set's budget
        on_tokens = self.recipe.stop.drift == "tokens"
        asked = [r["question"] for r in dev] + ([] if on_tokens else self.job.drift_prompts)
        budgets = [self.recipe.generate.budget("heldout")] * len(dev) + [min(DRIFT_TOKENS, budget)] * (
            len(asked) - len(dev))
        with self._phase(f"[bold]epoch {epoch}[/] dev recall" + ("" if on_tokens else " and drift"),
                         len(asked)) as bar:
            answers, _ = generate(model, self.tokenizer, _chats(asked), batch_size=batch, max_new_tokens=budgets,
                                  progress=bar.advance)
        dev_answers, drift_answers = answers[:len(dev)], answers[len(dev):]
        correct = sum(contains_key(a, r["answer_key"]) for a, r in zip(dev_answers, dev))
        if on_tokens:
            changed, drift_n = self._tokens_not_kept(model, epoch)
        else:
            changed, drift_n = sum(not same_answer(a, b) for a, b in zip(drift_answers, self.reference)), len(
                self.reference)
        self.to_training(model)
        record = EpochRecord(
            epoch=epoch, loss=sum(self.losses) / len(self.losses) if self.losses else None,
            dev_recall=correct / len(dev) if dev else 0.0, dev_correct=correct, dev_n=len(dev),
            drift=changed / drift_n if drift_n else 0.0, drift_changed=changed,
            drift_n=drift_n, seconds=round(time.perf_counter() - self.epoch_started, 2),
            train_seconds=round(trained, 2), step_losses=[round(v, 5) for v in self.losses],
            drift_unit="tokens" if on_tokens else "answers",
            drift_prompts=len(self.reference) if on_tokens else None,
        )
        self.curve.append(record)
        if self.trainer is not None and self.recipe.train.report_to:
            self.trainer.log({"dev_recall": record.dev_recall, "drift": record.drift})
        self.losses, self.epoch_started = [], time.perf_counter()
        write_text_atomic(self.job.state_dir / "curve.json", json.dumps([asdict(r) for r in self.curve], indent=1))
        self.decision = self.decide()
        if self.decision.best_epoch == epoch:
            with atomic_dir(self.job.best_adapter_dir) as tmp:
                model.save_pretrained(str(tmp))
                self.tokenizer.save_pretrained(str(tmp))  # the exact template trained with travels along
        if self.progress:
            self.progress.epoch_done(record, self.decision, self.curve, self.recipe.stop)
        if self.decision.stop:
            control.should_training_stop = True
        return control
