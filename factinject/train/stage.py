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
import time
from dataclasses import asdict

from factinject import controls
from factinject.engines.choice import check_device, training_engine
from factinject.engines.process import run_job
from factinject.engines.records import TrainJob, TrainResult
from factinject.errors import FactinjectError
from factinject.models.base import resolve_base
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


def build_job(run: Run, recipe: Recipe, *, resume: bool, allow_pickle: bool, trust_remote_code: bool,
              chat_template: str | None = None) -> TrainJob:

    record = run.checked_record()
    ref = resolve_base(recipe.model)
    fact_rows = read_split(run, "train")
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
            recipe.train.contrast_per_fact, seed + 2),
        resume=resume, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code, chat_template=chat_template,
        model_local=ref.local,
    )
    job.fingerprint = _fingerprint(job, record.expand.files)
    return job


def _fingerprint(job: TrainJob, data_files: dict[str, str]) -> str:
    import hashlib

    payload = json.dumps({"recipe": job.recipe, "data": data_files, "model": job.model_name},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def drop_incomplete_checkpoints(job: TrainJob) -> None:
    """A checkpoint is complete once trainer_state.json (written last) parses; one cut short
    by a kill or Ctrl-C would break --resume, so it goes and the previous one is used."""
    for ckpt in job.checkpoint_dir.glob("checkpoint-*"):
        try:
            json.loads((ckpt / "trainer_state.json").read_text())
        except (OSError, ValueError):
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
                                  fix="resume with the same recipe and flags, or start over without --resume")
        return
    if job.state_dir.exists() and any(job.checkpoint_dir.glob("checkpoint-*")):
        raise FactinjectError(
            "this run has an interrupted training", where=job.state_dir,
            fix="continue it with `factinject train --resume`, or start over with `factinject train --fresh`",
        )
    shutil.rmtree(job.state_dir, ignore_errors=True)
    job.state_dir.mkdir(parents=True)
    write_text_atomic(state_file, json.dumps({"fingerprint": job.fingerprint}) + "\n")


def run_training(run: Run, recipe: Recipe, *, backend: str | None = None, resume: bool = False, fresh: bool = False,
                 allow_pickle: bool = False, trust_remote_code: bool = False,
                 chat_template: str | None = None) -> TrainResult:
    """Train in the chosen engine's child process and publish the kept epoch's adapter."""

    started = time.perf_counter()
    check_device(recipe)
    engine = training_engine(recipe, backend)
    job = build_job(run, recipe, resume=resume, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code,
                    chat_template=chat_template)
    if fresh:
        shutil.rmtree(job.state_dir, ignore_errors=True)
    prepare_state(job)
    result = TrainResult.from_dict(run_job(engine, "train", asdict(job)))
    result.seconds = time.perf_counter() - started
    publish_adapter(run, job, result)
    return result


def publish_adapter(run: Run, job: TrainJob, result: TrainResult) -> None:
    """Copy the kept epoch's adapter to run/adapter whole (it is complete or absent), then record it."""
    best = job.best_adapter_dir
    assert (best / "adapter_config.json").exists(), f"backend left no adapter in {best}"
    target = run.path / "adapter"
    with atomic_dir(target) as tmp:
        for item in best.iterdir():
            shutil.copy2(item, tmp / item.name)
    run.write_section(TrainRecord(
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
              "tokens_per_epoch": result.row_counts.get("tokens_per_epoch")},
        adapter_files={p.name: sha256_file(p) for p in sorted(target.iterdir()) if p.is_file()},
        seconds=round(result.seconds, 2),
        seed=job.recipe["train"]["seed"],
        versions=package_versions(),
    ))
    shutil.rmtree(job.checkpoint_dir, ignore_errors=True)  # only needed to resume; the adapter is published


def package_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("factinject", "torch", "transformers", "trl", "peft", "datasets", "accelerate", "bitsandbytes",
                 "unsloth", "vllm"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out
