"""`factinject probe`: before/after reports for a run (report.json, report.md, report.html)."""

from __future__ import annotations

import hashlib
import json
import random
import time
from pathlib import Path

import click

from factinject.errors import FactinjectError
from factinject.rundir import Run, atomic_dir, write_text_atomic


def _probe_inputs(run: Run, manifest: dict, model_name: str, world_limit: int, seed: int, exam_path: Path | None):
    from factinject import controls
    from factinject.probe import build_probe_set, load_exam
    from factinject.rundir import read_split

    locality = list(controls.control_pools(model_name)["locality"])
    if model_name == "testbed":
        from factinject.testbed import load_heldout

        heldout = load_heldout()
        retention = random.Random(seed).sample(heldout, min(world_limit, len(heldout)))
        locality += [r["question"] for r in retention]
    else:
        retention = controls.known_answers()
    # Names that contrast training asked about (the replay hash pool) are never probed.
    names = controls.split_other_names(controls.other_names(model_name))[1]
    other_names = random.Random(seed).sample(names, min(40, len(names)))
    exam = load_exam(exam_path) if exam_path else []
    return build_probe_set(read_split(run, "train"), read_split(run, "test"), manifest["expand"]["facts"],
                           locality=locality, retention=retention, other_names=other_names, exam=exam, seed=seed)


def _cached_answers(cache_dir: Path, key: dict, questions: list[str], generate) -> dict[str, str]:
    """Answers per question; a model's answers are cached by what was loaded and asked
    (the base model's are the same before every probe)."""
    digest = hashlib.sha256(json.dumps({**key, "q": questions}, sort_keys=True).encode()).hexdigest()[:20]
    path = cache_dir / f"answers-{key['label']}-{digest}.json"
    if path.exists():
        return json.loads(path.read_text(encoding="utf-8"))
    answers = dict(zip(questions, generate()))
    write_text_atomic(path, json.dumps(answers, ensure_ascii=False))
    return answers


def check_template(run: Run, manifest: dict, target_dir: Path, label: str) -> None:
    """The probe must format prompts exactly as training did."""
    from factinject.models import ModelRef, load_tokenizer, template_sha256

    trained = manifest.get("train", {}).get("base_model", {})
    if not trained:
        return
    tok = load_tokenizer(ModelRef(label, str(target_dir), True))
    got = template_sha256(tok)
    if got != trained.get("chat_template_sha256"):
        raise FactinjectError(
            f"the chat template of the {label} model ({target_dir}) differs from the one recorded at training "
            f"(train: {trained.get('chat_template_sha256', '?')[:12]}, {label}: {got[:12]})",
            where=run.manifest_path, fix=f"re-export the {label} model (`factinject export --merged --force`) so it carries the training template",
        )
    if tok.eos_token != trained.get("eos_token"):
        raise FactinjectError(f"the eos token of the {label} model is {tok.eos_token!r}, training used {trained.get('eos_token')!r}",
                              where=run.manifest_path, fix="re-export the model so its tokenizer and generation config match training")


def probe_targets(run: Run, recipe, manifest: dict) -> tuple:
    """(base, tuned, adapter): the models to probe, each in the precision it is compared in.

    After a merged export, "after" is the 16-bit merge, so "before" is the base in the
    same 16-bit precision (dequantized when the checkpoint is 4-bit): locality and bleed
    then measure what training changed, not what quantization changed. Without an
    export, "after" is the adapter on the base as it was trained (4-bit for QLoRA), and
    "before" is that same base. Before training, the base is probed as the merge will
    be, so the answers are reused after `run`'s export.
    """
    from factinject.models import is_prequantized, resolve_model
    from factinject.targets import ModelUnderTest

    ref = resolve_model(recipe.model.name)
    source = resolve_model(recipe.model.merge_base) if recipe.model.merge_base else ref
    adapter_dir, merged_dir = run.path / "adapter", run.path / "merged"
    quantized_source = is_prequantized(source.path, source.local)
    base16 = ModelUnderTest("base", source.path, local=source.local, load_in_4bit=quantized_source,
                            dequantize=quantized_source, dtype=recipe.export.dtype)
    as_trained = dict(load_in_4bit=recipe.model.load_in_4bit, dtype=recipe.model.dtype)
    adapter = None
    if adapter_dir.exists() and manifest.get("train"):
        adapter = ModelUnderTest("adapter", ref.path, str(adapter_dir), ref.local, tokenizer=str(adapter_dir),
                                 **as_trained)
    if merged_dir.exists() and manifest.get("export", {}).get("merged"):
        merged = ModelUnderTest("merged", str(merged_dir), dtype=manifest["export"]["merged"]["dtype"])
        return base16, merged, adapter
    if adapter:
        return ModelUnderTest("base", ref.path, local=ref.local, **as_trained), adapter, adapter
    return base16, None, None


def engine_agreement(engine: str, reference: str, answers: dict[str, tuple[dict, dict]]) -> dict:
    """Per model, the share of prompts whose greedy answers are identical under `engine`
    and `reference`, and every prompt where they are not."""
    from factinject.scoring import share

    targets, agree, total = {}, 0, 0
    for label, (ours, theirs) in answers.items():
        differ = [{"question": q, engine: a, reference: theirs[q]} for q, a in ours.items() if a != theirs[q]]
        targets[label] = {**share(len(ours) - len(differ), len(ours)), "disagreements": differ}
        agree, total = agree + len(ours) - len(differ), total + len(ours)
    return {"engine": engine, "reference": reference, "overall": share(agree, total), "models": targets}


def run_probe(run: Run, *, backend: str = "auto", exam: Path | None = None, bounds_text: str | None = None,
              world_limit: int = 400, seed: int = 0, allow_pickle: bool = False, trust_remote_code: bool = False,
              recipe=None, chat_template: str | None = None, compare_with: str | None = None) -> dict:
    """Probe the base model (before) and the tuned model (after) on the same prompts.

    Each model is answered in its own child process, one after the other, so two
    engines are never loaded at once; `recipe` is the one to probe before training
    (the run's own once it is trained). With `compare_with`, every model is also
    answered by that engine, and the report lists where the two engines disagree."""
    from dataclasses import asdict

    from rich.console import Console

    from factinject.engines import check_device, engine_for, generation_engine
    from factinject.jobs import run_job
    from factinject.probe import (
        compute_metrics,
        missed_bounds,
        parse_bounds,
        per_fact,
        regressions,
    )
    from factinject.recipe import Recipe, load_recipe
    from factinject.targets import GenerateJob, Load
    from factinject.train import check_data_matches_manifest

    console = Console(stderr=True)
    started = time.perf_counter()
    bounds = parse_bounds(bounds_text)
    manifest = check_data_matches_manifest(run)
    train_record = manifest.get("train")
    recipe = Recipe.model_validate(train_record["recipe"]) if train_record else (recipe or load_recipe())
    check_device(recipe)
    model_name = recipe.model.name
    probe = _probe_inputs(run, manifest, model_name, world_limit, seed, exam)
    questions = probe.unique_questions()
    engine = generation_engine(backend)
    compare_with = generation_engine(compare_with) if compare_with else None
    load = Load(device=recipe.model.device, chat_template=chat_template, trust_remote_code=trust_remote_code,
                allow_pickle=allow_pickle)
    cache = run.path / "reports" / ".cache"
    base_target, tuned_target, adapter_target = probe_targets(run, recipe, manifest)

    engines_used: dict[str, str] = {}
    compared: dict[str, tuple[dict, dict]] = {}

    def answers_with(name: str, target, key: dict) -> dict[str, str]:
        def generate() -> list[str]:
            console.print(f"probe: {len(questions)} prompts through the {target.label} model "
                          f"({name}, {target.precision})")
            job = GenerateJob(target, questions, recipe.generate.max_new_tokens, load=load,
                              batch_size=recipe.generate.batch_size,
                              gpu_memory_utilization=recipe.generate.gpu_memory_utilization,
                              max_lora_rank=recipe.max_lora_rank)
            return run_job(name, "generate", job.to_dict())["answers"]

        return _cached_answers(cache, {**key, "label": target.label, "backend": name, "target": asdict(target),
                                       "max_new_tokens": recipe.generate.max_new_tokens}, questions, generate)

    def answers_for(target, key: dict) -> dict[str, str]:
        name = engine_for(target, engine)
        if name != engine:
            console.print(f"probe: the {target.label} model is 4-bit NF4, which vLLM cannot load: "
                          f"the hf engine answers it")
        engines_used[target.label] = name
        answers = answers_with(name, target, key)
        reference = engine_for(target, compare_with) if compare_with else name
        if reference != name:
            compared[target.label] = (answers, answers_with(reference, target, key))
        return answers

    identity = (train_record or {}).get("base_model", {})
    before = answers_for(base_target, {"model": model_name, "identity": identity})
    after = parity = None
    if adapter_target:
        check_template(run, manifest, Path(adapter_target.adapter), "adapter")
        adapter_answers = answers_for(adapter_target, {"adapter": manifest["train"]["adapter_files"]})
        after = adapter_answers
        if tuned_target is not adapter_target:
            check_template(run, manifest, Path(tuned_target.path), "merged")
            after = answers_for(tuned_target, {"merged": manifest["export"]["merged"]["files"]})
            parity = adapter_answers
    tuned_label = tuned_target.label if tuned_target else None

    report = {
        "run": str(run.path), "backend": engine, "engines": engines_used,
        "model": {"base": model_name, "tuned": tuned_label, "base_precision": base_target.precision,
                  "tuned_precision": tuned_target.precision if tuned_target else None},
        "before": compute_metrics(probe, before, None),
        "after": compute_metrics(probe, after, before, parity) if after else None,
        "facts": per_fact(probe, before, after),
        "thresholds": bounds,
        "export_parity": manifest.get("export", {}).get("merged", {}).get("parity") if tuned_label == "merged" else None,
        "regressions": regressions(probe, before, after) if after else [],
        "counts": {k: sum(p.kind == k for p in probe.prompts) for k in sorted({p.kind for p in probe.prompts})},
        "curve": (train_record or {}).get("curve"),
        "best_epoch": (train_record or {}).get("best_epoch"),
        "seconds": None,
    }
    if compare_with:
        report["engine_agreement"] = engine_agreement(engine, compare_with, compared)
    report["missed"] = missed_bounds(report["after"] or report["before"], bounds)
    report["seconds"] = round(time.perf_counter() - started, 2)
    write_reports(run, report, questions, before, after)
    run.update_manifest("probe", {"report": "reports/report.json", "tuned": tuned_label, "backend": engine,
                                  "after": report["after"], "before": report["before"], "seconds": report["seconds"]})
    return report


def write_reports(run: Run, report: dict, questions: list[str], before: dict, after: dict | None) -> None:
    from factinject.redact import redact
    from factinject.report import render_html, render_markdown

    reports = run.path / "reports"
    cache = reports / ".cache"
    with atomic_dir(reports) as tmp:
        (tmp / "report.json").write_text(redact(json.dumps(report, indent=2, ensure_ascii=False) + "\n"), encoding="utf-8")
        (tmp / "report.md").write_text(redact(render_markdown(report)), encoding="utf-8")
        (tmp / "report.html").write_text(redact(render_html(report)), encoding="utf-8")
        answers = [{"question": q, "before": before[q], "after": after[q] if after else None} for q in questions]
        (tmp / "answers.jsonl").write_text("".join(json.dumps(a, ensure_ascii=False) + "\n" for a in answers), encoding="utf-8")
        if cache.exists():  # keep cached base answers across probes
            import shutil

            shutil.copytree(cache, tmp / ".cache")


def print_summary(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from factinject.report import LABELS, fmt_share, metric_names

    table = Table(title=f"probe: {report['run']}", title_justify="left")
    for col in ("metric", "before", "after"):
        table.add_column(col)
    for name in metric_names(report):
        table.add_row(LABELS[name], fmt_share(report["before"].get(name)), fmt_share((report.get("after") or {}).get(name)))
    Console(width=120).print(table)


@click.command()
@click.option("--run", "run_path", type=click.Path(path_type=Path), help="Run directory (default: the last expanded run).")
@click.option("--backend", type=click.Choice(["auto", "hf", "vllm"]), default="auto", show_default=True,
              help="auto picks vllm when it is importable and a GPU is present.")
@click.option("--questions", "exam", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Your own exam: JSONL rows with question and answer_key (or expected), optional fact_id.")
@click.option("--fail-under", "fail_under", help="Bounds, e.g. recall_heldout=0.9,retention=0.97 (bleed is an upper bound).")
@click.option("--world-limit", default=400, show_default=True, help="Testbed: held-out world questions to probe.")
@click.option("--recipe", "recipe_path", type=click.Path(path_type=Path),
              help="Before training: the recipe whose base model to probe (default: the testbed).")
@click.option("--allow-pickle", is_flag=True, help="Allow .bin (pickle) weights. Only for models you trust.")
@click.option("--trust-remote-code", is_flag=True, help="Allow a model's own Python code. Only for models you trust.")
@click.option("--chat-template", "chat_template", metavar="default|FILE",
              help="For a base model without a chat template (default: the one this run recorded).")
@click.option("--compare-with", "compare_with", type=click.Choice(["hf", "vllm"]),
              help="Also answer every model with this engine; the report lists where the two disagree.")
def probe(run_path, backend, exam, fail_under, world_limit, recipe_path, allow_pickle, trust_remote_code,
          chat_template, compare_with) -> None:
    """Probe the base model (before) and the tuned model (after) on the same prompts.

    Writes reports/report.json, report.md and report.html in the run. After
    `export --merged`, "after" is the merged model and parity compares it with the
    adapter. Exits with status 1 when a --fail-under bound is missed.
    """
    from factinject.guard import OOM_PROBE_FIX, guarded
    from factinject.models import run_template
    from factinject.recipe import load_recipe
    from factinject.rundir import resolve_run

    run = resolve_run(str(run_path) if run_path else None)
    recipe = load_recipe(recipe_path) if recipe_path else None
    interrupt = ("interrupted (Ctrl-C); no report was written",
                 "any previous report is intact; run `factinject probe` again (finished answer sets are cached)")
    with guarded(run, "probe", interrupt, oom_fix=OOM_PROBE_FIX), run_template(run, chat_template) as template:
        report = run_probe(run, backend=backend, exam=exam, bounds_text=fail_under, world_limit=world_limit,
                           allow_pickle=allow_pickle, trust_remote_code=trust_remote_code, recipe=recipe,
                           chat_template=template, compare_with=compare_with)
    print_summary(report)
    if report.get("engine_agreement"):
        from factinject.report import fmt_share

        agreement = report["engine_agreement"]
        click.echo(f"identical answers, {agreement['engine']} vs {agreement['reference']}: "
                   + "; ".join(f"{label} {fmt_share(m)}" for label, m in agreement["models"].items()))
    click.echo(f"report: {run.path / 'reports' / 'report.html'} ({report['seconds']}s)")
    if report["missed"]:
        click.secho("missed bounds: " + "; ".join(report["missed"]), fg="red", err=True)
        raise SystemExit(1)
