"""The training stage: what to train on, when to stop, and where the adapter goes.

Engine-independent, and imports no engine: a `TrainJob` (engines/records.py, plain
data, the chat template included) goes to the `hf` or `unsloth` engine's `train` in a
child process (engines/process.py), which reports one `EpochRecord` per epoch;
`policy.choose_epoch` (pure) decides whether to go on and which epoch to keep. The `test` split is never read here: it
belongs to the final report.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import zipfile
from dataclasses import asdict

from factinject import controls
from factinject.engines.choice import check_device, training_engine
from factinject.engines.process import run_job
from factinject.engines.records import TrainJob, TrainResult
from factinject.errors import FactinjectError
from factinject.models.answer_cache import library_versions
from factinject.models.base import resolve_base
from factinject.models.checkpoint import check_safetensors
from factinject.recipe import Recipe
from factinject.rundir.files import (
    Run,
    atomic_dir,
    read_split,
    sha256_file,
    write_text_atomic,
)
from factinject.rundir.record import TrainRecord
from factinject.train import contrast
from factinject.train.distill import teacher_prompts
from factinject.train.updates import contradiction_rows, subject_locality_prompts


def build_job(run: Run, recipe: Recipe, *, resume: bool, allow_pickle: bool, trust_remote_code: bool,
              chat_template: str | None = None, answer_cache: bool = True) -> TrainJob:

    record = run.checked_record()
    ref = resolve_base(recipe.model)
    fact_rows = read_split(run, "train")
    if recipe.train.update_contradict:
        fact_rows += contradiction_rows(record.expand.facts)
    dev_rows = [{"fact_id": r["fact_id"], "question": r["messages"][0]["content"], "answer_key": r["answer_key"]}
                for r in read_split(run, "dev")]
    pools = controls.control_pools(recipe.model.name)
    n_replay = max(1, round(recipe.train.replay_ratio * len(fact_rows))) if recipe.train.replay_ratio > 0 else 0
    seed = recipe.train.seed
    job = TrainJob(
        run_dir=str(run.path), model_name=recipe.model.name, model_path=ref.path, recipe=recipe.model_dump(),
        fact_rows=fact_rows, dev_rows=dev_rows,
        replay_prompts=controls.replay_sample(pools["replay"], min(n_replay, 512), seed),
        drift_prompts=controls.sample(pools["drift"], recipe.stop.control_prompts, seed + 1),
        contrast_prompts=contrast.contrast_prompts(
            fact_rows, record.expand.facts, contrast.training_other_names(controls.other_names(recipe.model.name)),
            recipe.train.contrast_per_fact, seed + 2)
        + subject_locality_prompts(record.expand.facts, recipe.train.update_locality, seed + 3),
        teacher_prompts=teacher_prompts(fact_rows, record.expand.facts)
        if recipe.train.fact_answers == "own_words" else [],
        resume=resume, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code, chat_template=chat_template,
        model_local=ref.local, answer_cache=answer_cache,
    )
    job.fingerprint = _fingerprint(job, record.expand.files)
    return job


def _fingerprint(job: TrainJob, data_files: dict[str, str]) -> str:
    import hashlib

    payload = json.dumps({"recipe": job.recipe, "data": data_files, "model": job.model_name},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def checkpoint_problem(ckpt) -> str | None:
    """Why an epoch checkpoint cannot be resumed from, or None when it is whole: its
    trainer_state.json (written last) parses, its safetensors end where their headers say,
    and torch's .pt/.pth files (zip archives) have their central directory."""
    try:
        json.loads((ckpt / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return "it was cut short (no complete trainer_state.json)"
    for path in sorted(ckpt.glob("*.safetensors")):
        try:
            check_safetensors(path, fix="")
        except FactinjectError as err:
            return f"{path.name}: {err.what}"
    for path in sorted([*ckpt.glob("*.pt"), *ckpt.glob("*.pth")]):
        try:
            zipfile.ZipFile(path).close()
        except (OSError, zipfile.BadZipFile):
            return f"{path.name} is damaged or truncated"
    return None


def drop_incomplete_checkpoints(job: TrainJob) -> None:
    """A checkpoint cut short by a kill or Ctrl-C, or damaged since, would break --resume
    with a traceback minutes in: it goes (said when it had been complete), and the
    previous one is used."""
    for ckpt in job.checkpoint_dir.glob("checkpoint-*"):
        problem = checkpoint_problem(ckpt)
        if problem is None:
            continue
        if not problem.startswith("it was cut short"):
            print(f"warning: {ckpt} cannot be resumed from ({problem}); it is removed and an earlier epoch's "
                  "checkpoint is used, if there is one", file=sys.stderr)
        shutil.rmtree(ckpt, ignore_errors=True)


def prepare_state(job: TrainJob) -> None:
    """Fresh start: clear old state. Resume: check it belongs to this job."""
    drop_incomplete_checkpoints(job)
    state_file = job.state_dir / "job.json"
    if job.resume:
        if not state_file.exists() or not any(job.checkpoint_dir.glob("checkpoint-*")):
            raise FactinjectError("there is no interrupted training to resume in this run", where=job.state_dir,
                                  fix="run `factinject train` without --resume")
        old = json.loads(state_file.read_text())
        if old.get("fingerprint") != job.fingerprint:
            raise FactinjectError("the interrupted training used another recipe or other data", where=state_file,
                                  fix="resume with the recipe and flags the interrupted training was started with, or "
                                      "discard it and start over with `factinject train --fresh` (same options)")
        return
    if job.state_dir.exists() and any(job.checkpoint_dir.glob("checkpoint-*")):
        raise FactinjectError(
            "this run has an interrupted training", where=job.state_dir,
            fix="continue it with `factinject train --resume`, or start over with `factinject train --fresh`",
        )
    shutil.rmtree(job.state_dir, ignore_errors=True)
    job.state_dir.mkdir(parents=True)
    write_text_atomic(state_file, json.dumps({"fingerprint": job.fingerprint}) + "\n")


def refuse_retraining(run: Run, force: bool) -> None:
    """A trained adapter is replaced only on request: its export and report would no
    longer describe the adapter in the run (they are then reported as stale)."""
    if force or not (run.path / "adapter").exists():
        return
    made = [what for what, folder in (("a merged export", "merged"), ("an adapter export", "export"),
                                      ("a report", "reports")) if (run.path / folder).exists()]
    also = f" (and {' and '.join(made)} made from it)" if made else ""
    raise FactinjectError(f"this run already holds a trained adapter{also}", where=run.path / "adapter",
                          fix="pass --force to train it again (then re-export and probe), or expand into a new run "
                              "with --run exports/<new-name>")


def run_training(run: Run, recipe: Recipe, *, backend: str | None = None, resume: bool = False, fresh: bool = False,
                 force: bool = False, allow_pickle: bool = False, trust_remote_code: bool = False,
                 chat_template: str | None = None, answer_cache: bool = True) -> TrainResult:
    """Train in the chosen engine's child process and publish the kept epoch's adapter.

    An existing adapter is replaced only with `force`; resuming goes on with a training
    that was started (with `force`, where an adapter existed) and interrupted."""

    started = time.perf_counter()
    if not resume:
        refuse_retraining(run, force)
    check_device(recipe)
    check_trackers(recipe)
    engine = training_engine(recipe, backend)
    job = build_job(run, recipe, resume=resume, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code,
                    chat_template=chat_template, answer_cache=answer_cache)
    if fresh:
        shutil.rmtree(job.state_dir, ignore_errors=True)
    prepare_state(job)
    result = TrainResult.from_dict(run_job(engine, "train", asdict(job)))
    result.seconds = time.perf_counter() - started
    publish_adapter(run, job, result)
    return result


TRACKER_MODULES = {"tensorboard": ("tensorboard", "tensorboardX"), "trackio": ("trackio",), "wandb": ("wandb",),
                   "mlflow": ("mlflow",)}


def check_trackers(recipe: Recipe) -> None:
    """Every tracker the recipe's train.report_to names is installed (before any work)."""
    import importlib.util

    for name in recipe.train.report_to:
        if not any(importlib.util.find_spec(m) for m in TRACKER_MODULES[name]):
            raise FactinjectError(f"the recipe's train.report_to names {name}, which is not installed",
                                  fix=f"pip install {name}, or take it out of train.report_to")


def publish_adapter(run: Run, job: TrainJob, result: TrainResult) -> None:
    """Copy the kept epoch's adapter to run/adapter whole (it is complete or absent), then record it."""
    best = job.best_adapter_dir
    assert (best / "adapter_config.json").exists(), f"backend left no adapter in {best}"
    target = run.path / "adapter"
    files = {p.name: sha256_file(p) for p in sorted(best.iterdir()) if p.is_file()}
    record = TrainRecord(
        backend=result.backend,
        recipe=job.recipe,
        base_model=result.base_identity,
        best_epoch=result.best_epoch,
        stop_reason=result.reason,
        curve=[asdict(r) for r in result.curve],
        rows={"facts": len(job.fact_rows), "replay": result.replay_rows,
              "contrast": result.row_counts.get("contrast", 0), "dev": len(job.dev_rows),
              "drift_prompts": len(job.drift_prompts),
              "unfinished_left_out": result.row_counts.get("unfinished_left_out", 0),
              "tokens_per_epoch": result.row_counts.get("tokens_per_epoch"),
              "base_answers_cached": result.row_counts.get("base_answers_cached", 0),
              "own_words": result.row_counts.get("own_words", 0)},
        adapter_files=files,
        seconds=round(result.seconds, 2),
        seed=job.recipe["train"]["seed"],
        versions=package_versions(),
        compute=result.compute,
    )
    with atomic_dir(target, then=lambda: run.write_section(record)) as tmp:  # the adapter and its record together
        for item in best.iterdir():
            shutil.copy2(item, tmp / item.name)
        copied = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        assert copied == files, f"the adapter changed while it was copied from {best}"
    shutil.rmtree(job.checkpoint_dir, ignore_errors=True)  # only needed to resume; the adapter is published


def package_versions() -> dict:
    return library_versions("factinject", "torch", "transformers", "trl", "peft", "datasets", "accelerate",
                            "bitsandbytes", "unsloth", "vllm")
