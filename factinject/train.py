"""The training stage: what to train on, when to stop, and where the adapter goes.

Engine-independent, and imports no engine: a `TrainJob` (plain data, the chat
template included) goes to the `hf` or `unsloth` engine's `train` in a child process
(jobs.py), which reports one `EpochRecord` per epoch; `choose_epoch` (pure) decides
whether to go on and which epoch to keep. The `test` split is never read here: it
belongs to the final report.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from factinject.errors import FactinjectError
from factinject.recipe import Recipe, StopSpec
from factinject.rundir import (
    Run,
    atomic_dir,
    read_split,
    sha256_file,
    write_text_atomic,
)
from factinject.scoring import wilson_interval

STATE_DIR = "train"  # run/train/: checkpoints, curve, base answers (for --resume)


@dataclass
class EpochRecord:
    epoch: int
    loss: float | None
    dev_recall: float
    dev_correct: int
    dev_n: int
    drift: float  # share of drift-control prompts whose greedy answer changed
    drift_changed: int
    drift_n: int
    seconds: float


@dataclass(frozen=True)
class EpochDecision:
    best_epoch: int | None
    stop: bool
    reason: str


def choose_epoch(curve: list[EpochRecord], stop: StopSpec, fixed_epochs: int | None, max_epochs: int) -> EpochDecision:
    """Which epoch to keep so far, and whether to stop.

    auto: the best epoch is the one with the highest dev recall among epochs whose
    drift is within `max_drift`; among epochs within `min_delta` of that top, the
    latest wins (dev sets are small, so a one-question dip is noise, and the later
    epoch has seen the training questions more often: trained recall needs it). Stop when
    dev recall is perfect, when `patience` epochs pass without a gain of `min_delta`,
    when drift is surely above the bound, or at `max_epochs`.
    fixed: train exactly N epochs and keep the last (still recording the curve).
    """
    assert curve, "choose_epoch needs at least one epoch"
    last = curve[-1]
    if fixed_epochs is not None:
        return EpochDecision(last.epoch, last.epoch >= fixed_epochs, f"fixed {fixed_epochs} epochs")
    eligible = [r for r in curve if r.drift <= stop.max_drift]
    if eligible:
        top = max(r.dev_recall for r in eligible)
        best = max((r for r in eligible if r.dev_recall >= top - stop.min_delta), key=lambda r: r.epoch)
    else:  # every epoch drifted: keep the least-drifted one, and say so
        best = min(curve, key=lambda r: (r.drift, r.epoch))
    # An epoch above max_drift is never kept, but training stops only when the drift is
    # above the bound beyond doubt (95 % lower bound): early epochs swing, and with 48
    # control prompts 6 changed answers is within noise of 3.
    if wilson_interval(last.drift_changed, last.drift_n)[0] > stop.max_drift:
        return EpochDecision(best.epoch, True, f"drift {last.drift:.3f} is above max_drift {stop.max_drift} "
                                               f"(95 % interval)")
    if best.dev_recall >= 1.0 and best.epoch == last.epoch:
        return EpochDecision(best.epoch, True, "dev recall is 100%")
    if last.epoch - best.epoch >= stop.patience:
        return EpochDecision(best.epoch, True, f"no dev-recall gain for {stop.patience} epochs")
    if last.epoch >= max_epochs:
        return EpochDecision(best.epoch, True, f"reached max_epochs {max_epochs}")
    return EpochDecision(best.epoch, False, "improving")


def mix_replay(fact_rows: list[dict], replay: list[dict], ratio: float, seed: int,
               contrast: list[dict] = ()) -> list[dict]:
    """Fact rows plus round(ratio * len(fact_rows)) replay rows plus every contrast row, shuffled with `seed`.

    Each row is one conversation and is never packed with another, so the paraphrases
    of one fact cannot see each other inside a training sequence.
    """
    rng = random.Random(seed)
    n_replay = round(ratio * len(fact_rows)) if replay else 0
    pool = list(replay)
    rng.shuffle(pool)
    chosen = [pool[i % len(pool)] for i in range(n_replay)] if pool else []
    rows = [{"messages": r["messages"], "source": r.get("fact_id", "fact")} for r in fact_rows]
    rows += [{"messages": r["messages"], "source": "replay"} for r in chosen]
    rows += [{"messages": r["messages"], "source": "contrast"} for r in contrast]
    rng.shuffle(rows)
    return rows


@dataclass
class TrainJob:
    """Everything a training engine needs; JSON-serialisable (it runs in a child process)."""

    run_dir: str
    model_name: str
    model_path: str
    recipe: dict
    fact_rows: list[dict]
    dev_rows: list[dict]  # {"fact_id", "question", "answer_key"}
    replay_prompts: list[str]
    drift_prompts: list[str]
    contrast_prompts: list[str] = field(default_factory=list)  # always trained, never sampled away
    resume: bool = False
    allow_pickle: bool = False
    trust_remote_code: bool = False
    chat_template: str | None = None  # for a base model that ships none (--chat-template)
    model_local: bool = True
    fingerprint: str = ""

    @property
    def state_dir(self) -> Path:
        return Path(self.run_dir) / STATE_DIR

    @property
    def checkpoint_dir(self) -> Path:
        return self.state_dir / "checkpoints"

    @property
    def best_adapter_dir(self) -> Path:
        return self.state_dir / "best-adapter"

    def recipe_obj(self) -> Recipe:
        return Recipe.model_validate(self.recipe)


@dataclass
class TrainResult:
    curve: list[EpochRecord]
    best_epoch: int
    reason: str
    backend: str
    seconds: float
    base_identity: dict
    replay_rows: int = 0
    row_counts: dict = field(default_factory=dict)  # replay, contrast, unfinished_left_out

    @classmethod
    def from_dict(cls, data: dict) -> "TrainResult":
        return cls(**{**data, "curve": [EpochRecord(**r) for r in data["curve"]]})


def check_data_matches_manifest(run: Run) -> dict:
    manifest = run.manifest()
    expand = manifest.get("expand")
    if not expand:
        raise FactinjectError("this run has no expand record in its manifest", where=run.manifest_path,
                              fix="run `factinject expand facts/<sheet>.md --run <this run>`")
    for rel, digest in expand["files"].items():
        path = run.path / rel
        if sha256_file(path) != digest:
            if path.parent == run.data_dir and path.suffix == ".jsonl":
                read_split(run, path.stem)  # a broken line is named by file and line, not just as a changed hash
            raise FactinjectError(f"{rel} changed since it was expanded", where=run.path / rel,
                                  fix="re-run `factinject expand`; do not edit generated data by hand")
    return manifest


def build_job(run: Run, recipe: Recipe, *, resume: bool, allow_pickle: bool, trust_remote_code: bool,
              chat_template: str | None = None) -> TrainJob:
    from factinject import contrast, controls
    from factinject.models import resolve_model

    manifest = check_data_matches_manifest(run)
    ref = resolve_model(recipe.model.name)
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
            fact_rows, manifest["expand"]["facts"], contrast.training_other_names(controls.other_names(recipe.model.name)),
            recipe.train.contrast_per_fact, seed + 2),
        resume=resume, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code, chat_template=chat_template,
        model_local=ref.local,
    )
    job.fingerprint = _fingerprint(job, manifest)
    return job


def _fingerprint(job: TrainJob, manifest: dict) -> str:
    import hashlib

    payload = json.dumps({"recipe": job.recipe, "data": manifest["expand"]["files"], "model": job.model_name},
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
    from factinject.engines import check_device, training_engine
    from factinject.jobs import run_job

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
    record = {
        "backend": result.backend,
        "recipe": job.recipe,
        "base_model": result.base_identity,
        "best_epoch": result.best_epoch,
        "stop_reason": result.reason,
        "curve": [asdict(r) for r in result.curve],
        "rows": {"facts": len(job.fact_rows), "replay": result.replay_rows,
                 "contrast": result.row_counts.get("contrast", 0), "dev": len(job.dev_rows),
                 "drift_prompts": len(job.drift_prompts),
                 "unfinished_left_out": result.row_counts.get("unfinished_left_out", 0)},
        "adapter_files": {p.name: sha256_file(p) for p in sorted(target.iterdir()) if p.is_file()},
        "seconds": round(result.seconds, 2),
        "seed": job.recipe["train"]["seed"],
        "versions": package_versions(),
    }
    run.update_manifest("train", record)
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
