"""`factinject probe`: before/after reports for a run (report.json, report.md, report.html)."""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Sequence
from pathlib import Path

import click

from factinject.errors import FactinjectError
from factinject.exam import Exam
from factinject.rundir import Run, atomic_dir, write_text_atomic


def _probe_inputs(run: Run, manifest: dict, model_name: str, world_limit: int, seed: int, exams: Sequence[Exam]):
    from factinject import controls
    from factinject.exam import match_fact
    from factinject.probe import Prompt, build_probe_set
    from factinject.train import read_split

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
    facts = manifest["expand"]["facts"]
    exam = [Prompt("exam", q.question, q.answer_key, q.aliases, match_fact(q, facts)) for e in exams for q in e.questions]
    return build_probe_set(read_split(run, "train"), read_split(run, "test"), facts,
                           locality=locality, retention=retention, other_names=other_names, exam=exam, seed=seed)


def next_step(run: Run) -> str:
    """What an untrained run's report says instead of an "after" column."""
    return (f"This run has no trained adapter yet, so only the base model was probed (the 'before' column). "
            f"Train it with `factinject train --run {run.path}`, then `factinject export --run {run.path} --merged` "
            f"and `factinject probe --run {run.path}` for the before/after report.")


def _cached_answers(cache_dir: Path, key: dict, questions: list[str], make_generator, on_miss=None) -> dict[str, str]:
    """Answers per question; the base model's are cached (they are the same before every probe)."""
    digest = hashlib.sha256(json.dumps({**key, "q": questions}, sort_keys=True).encode()).hexdigest()[:20]
    path = cache_dir / f"answers-{key['label']}-{digest}.json"
    if path.exists():
        return json.loads(path.read_text(encoding="utf-8"))
    if on_miss:
        on_miss()
    generator = make_generator()
    try:
        answers = dict(zip(questions, generator.answer(questions)))
    finally:
        generator.close()
    write_text_atomic(path, json.dumps(answers, ensure_ascii=False))
    return answers


def base_model_key(model_name: str, ref) -> dict:
    """What the base model's cached answers depend on: the model's files and the chat
    template supplied to it. The same before and after training, so `run`'s second probe
    reuses the first one's base answers instead of generating them again."""
    from factinject.models import supplied_template

    files = {}
    if ref.local:
        root = Path(ref.path)
        for path in sorted(root.glob("*.safetensors")) + sorted(root.glob("*.json")) + sorted(root.glob("*.jinja")):
            with open(path, "rb") as fh:  # size + first MB: cheap, and changes whenever the file does in practice
                files[path.name] = [path.stat().st_size, hashlib.sha256(fh.read(1 << 20)).hexdigest()]
    template = supplied_template()
    return {"model": model_name, "path": ref.path, "files": files,
            "template": hashlib.sha256(template.encode("utf-8")).hexdigest() if template else None}


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


def run_probe(run: Run, *, backend: str = "auto", exams: Sequence[Exam] = (), bounds_text: str | None = None,
              world_limit: int = 400, seed: int = 0, allow_pickle: bool = False, trust_remote_code: bool = False,
              model_name: str | None = None) -> dict:
    from rich.console import Console

    from factinject.backends.generators import (
        ModelUnderTest,
        make_generator,
        pick_generator,
    )
    from factinject.models import resolve_model
    from factinject.probe import (
        answer_rows,
        compute_metrics,
        missed_bounds,
        misses,
        parse_bounds,
        per_fact,
        regressions,
    )
    from factinject.train import check_data_matches_manifest

    console = Console(stderr=True)
    started = time.perf_counter()
    bounds = parse_bounds(bounds_text)
    manifest = check_data_matches_manifest(run)
    train_record = manifest.get("train")
    if train_record:
        model_name = train_record["recipe"]["model"]["name"]
    model_name = model_name or "testbed"
    ref = resolve_model(model_name)
    probe = _probe_inputs(run, manifest, model_name, world_limit, seed, exams)
    questions = probe.unique_questions()
    chosen = pick_generator(backend)
    lora_rank = train_record["recipe"]["lora"]["r"] if train_record else 16
    opts = dict(allow_pickle=allow_pickle, trust_remote_code=trust_remote_code) if chosen == "hf" else {
        "trust_remote_code": trust_remote_code, "lora_rank": lora_rank}
    cache = run.path / "reports" / ".cache"

    def answers_for(target: ModelUnderTest, key: dict) -> dict[str, str]:
        # Said only when the model really runs: `run` probes the base model twice, the second time from the cache.
        def announce():
            console.print(f"probe: {len(questions)} prompts through the {target.label} model ({chosen})")

        return _cached_answers(cache, {**key, "label": target.label, "backend": chosen}, questions,
                               lambda: make_generator(chosen, target, **opts), on_miss=announce)

    base_target = ModelUnderTest("base", ref.path, local=ref.local)
    before = answers_for(base_target, base_model_key(model_name, ref))
    after = parity = None
    tuned_label = None
    adapter_dir, merged_dir = run.path / "adapter", run.path / "merged"
    if adapter_dir.exists():
        check_template(run, manifest, adapter_dir, "adapter")
        adapter_key = {"adapter": manifest["train"]["adapter_files"]}
        adapter_answers = answers_for(ModelUnderTest("adapter", ref.path, str(adapter_dir), ref.local), adapter_key)
        after, tuned_label = adapter_answers, "adapter"
        if merged_dir.exists() and manifest.get("export", {}).get("merged"):
            check_template(run, manifest, merged_dir, "merged")
            merged_answers = answers_for(ModelUnderTest("merged", str(merged_dir)),
                                         {"merged": manifest["export"]["merged"]["files"]})
            after, parity, tuned_label = merged_answers, adapter_answers, "merged"

    report = {
        "run": str(run.path), "backend": chosen,
        "model": {"base": model_name, "tuned": tuned_label},
        "before": compute_metrics(probe, before, None),
        "after": compute_metrics(probe, after, before, parity) if after else None,
        "facts": per_fact(probe, before, after),
        "thresholds": bounds,
        "regressions": regressions(probe, before, after) if after else [],
        "counts": {k: sum(p.kind == k for p in probe.prompts) for k in sorted({p.kind for p in probe.prompts})},
        "curve": (train_record or {}).get("curve"),
        "best_epoch": (train_record or {}).get("best_epoch"),
        "stop_reason": (train_record or {}).get("stop_reason"),
        "max_drift": (train_record or {}).get("recipe", {}).get("stop", {}).get("max_drift"),
        "exam": [e.record() for e in exams],
        # Every held-out and exam question the model of this report (tuned, else base) got wrong.
        "misses": misses(probe, after or before),
        "next_step": None if after else next_step(run),
        "seconds": None,
    }
    report["missed"] = missed_bounds(report["after"] or report["before"], bounds)
    report["seconds"] = round(time.perf_counter() - started, 2)
    write_reports(run, report, answer_rows(probe, before, after))
    run.update_manifest("probe", {"report": "reports/report.json", "tuned": tuned_label, "backend": chosen,
                                  "exam": report["exam"], "after": report["after"], "before": report["before"],
                                  "seconds": report["seconds"]})
    return report


def write_reports(run: Run, report: dict, rows: list[dict]) -> None:
    from factinject.redact import redact
    from factinject.report import render_html, render_markdown

    reports = run.path / "reports"
    cache = reports / ".cache"
    with atomic_dir(reports) as tmp:
        (tmp / "report.json").write_text(redact(json.dumps(report, indent=2, ensure_ascii=False) + "\n"), encoding="utf-8")
        (tmp / "report.md").write_text(redact(render_markdown(report)), encoding="utf-8")
        (tmp / "report.html").write_text(redact(render_html(report)), encoding="utf-8")
        (tmp / "answers.jsonl").write_text(redact("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)),
                                           encoding="utf-8")
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
              help="Your own exam: JSONL rows with question and answer_key (or expected), optional fact_id and "
                   "aliases. Default: <sheet>.exam.jsonl next to each of the run's sheets, if there is one.")
@click.option("--fail-under", "fail_under", help="Bounds, e.g. recall_heldout=0.9,retention=0.97 (bleed is an upper bound).")
@click.option("--world-limit", default=400, show_default=True, help="Testbed: held-out world questions to probe.")
@click.option("--recipe", "recipe_path", type=click.Path(path_type=Path),
              help="Before training: the recipe whose base model to probe (default: the testbed).")
@click.option("--allow-pickle", is_flag=True, help="Allow .bin (pickle) weights. Only for models you trust.")
@click.option("--trust-remote-code", is_flag=True, help="Allow a model's own Python code. Only for models you trust.")
@click.option("--chat-template", "chat_template", metavar="default|FILE",
              help="For a base model without a chat template (default: the one this run recorded).")
def probe(run_path, backend, exam, fail_under, world_limit, recipe_path, allow_pickle, trust_remote_code,
          chat_template) -> None:
    """Probe the base model (before) and the tuned model (after) on the same prompts.

    Writes reports/report.json, report.md and report.html in the run. After
    `export --merged`, "after" is the merged model and parity compares it with the
    adapter. Exits with status 1 when a --fail-under bound is missed.
    """
    from factinject.exam import describe, exams_for
    from factinject.guard import OOM_PROBE_FIX, guarded
    from factinject.models import run_template
    from factinject.recipe import load_recipe
    from factinject.rundir import resolve_run

    run = resolve_run(str(run_path) if run_path else None)
    model_name = load_recipe(recipe_path).model.name if recipe_path else None
    interrupt = ("interrupted (Ctrl-C); no report was written",
                 "any previous report is intact; run `factinject probe` again (finished answer sets are cached)")
    with guarded(run, "probe", interrupt, oom_fix=OOM_PROBE_FIX), run_template(run, chat_template):
        sheets = [s["path"] for s in run.manifest().get("expand", {}).get("sheets", [])]
        exams = exams_for(exam, sheets)
        if describe(exams):
            click.echo(describe(exams))
        report = run_probe(run, backend=backend, exams=exams, bounds_text=fail_under, world_limit=world_limit,
                           allow_pickle=allow_pickle, trust_remote_code=trust_remote_code, model_name=model_name)
    print_summary(report)
    if report["next_step"]:
        click.secho(report["next_step"], fg="yellow")
    click.echo(f"report: {run.path / 'reports' / 'report.html'} ({report['seconds']}s)")
    if report["missed"]:
        click.secho("missed bounds: " + "; ".join(report["missed"]), fg="red", err=True)
        raise SystemExit(1)
