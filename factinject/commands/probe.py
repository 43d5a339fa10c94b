"""`factinject probe`: before/after reports for a run (report.json, report.md, report.html)."""

from __future__ import annotations

from pathlib import Path

import click

from factinject.commands.common import answer_cache_option
from factinject.engines import GENERATE, choices
from factinject.models.gguf_out import GGUF_TYPES


@click.command()
@click.option("--run", "run_path", type=click.Path(path_type=Path), help="Run directory (default: the last expanded run).")
@click.option("--backend", type=click.Choice(choices(GENERATE)), default="auto", show_default=True,
              help="auto picks vllm when it is importable and a GPU is present; llamacpp answers the run's GGUF "
                   "export (and the base written as GGUF of the same type) with a real llama.cpp.")
@click.option("--gguf", "gguf_type", type=click.Choice(GGUF_TYPES),
              help="With --backend llamacpp: which GGUF export to probe (default: the run's only one).")
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
@click.option("--compare-with", "compare_with", type=click.Choice(choices(GENERATE, auto=False)),
              help="Also answer every model with this engine; the report lists where the two disagree.")
@answer_cache_option
def probe(run_path, backend, exam, fail_under, world_limit, recipe_path, allow_pickle, trust_remote_code,
          chat_template, compare_with, no_answer_cache, gguf_type) -> None:
    """Probe the base model (before) and the tuned model (after) on the same prompts.

    Writes reports/report.json, report.md and report.html in the run. After
    `export --merged`, "after" is the merged model and parity compares it with the
    adapter. With --backend llamacpp, "after" is the run's GGUF export answered by
    llama.cpp, the file a user runs in Ollama. Exits with status 1 when a
    --fail-under bound is missed.
    """
    from factinject.commands.common import exit_on_missed_bounds
    from factinject.models.base import run_template
    from factinject.probe.exam import describe, exams_for
    from factinject.probe.report import fmt_share, print_summary
    from factinject.probe.stage import run_probe
    from factinject.recipe import load_recipe
    from factinject.rundir.files import resolve_run
    from factinject.errors import FactinjectError
    from factinject.rundir.guard import OOM_PROBE_FIX, guarded

    if gguf_type and backend != "llamacpp":
        raise FactinjectError("--gguf picks the GGUF export that --backend llamacpp answers",
                              fix=f"add --backend llamacpp, or leave out --gguf {gguf_type}")

    run = resolve_run(str(run_path) if run_path else None)
    recipe = load_recipe(recipe_path) if recipe_path else None
    interrupt = ("interrupted (Ctrl-C); no report was written",
                 "any previous report is intact; run `factinject probe` again (finished answer sets are cached)")
    with guarded(run, "probe", interrupt, oom_fix=OOM_PROBE_FIX), run_template(run, chat_template) as template:
        expanded = run.record().expand
        sheets = expanded.sheet_paths if expanded else []
        exams = exams_for(exam, sheets)
        if describe(exams):
            click.echo(describe(exams))
        report = run_probe(run, backend=backend, exams=exams, bounds_text=fail_under, world_limit=world_limit,
                           allow_pickle=allow_pickle, trust_remote_code=trust_remote_code, recipe=recipe,
                           chat_template=template, compare_with=compare_with, answer_cache=not no_answer_cache,
                           gguf_type=gguf_type)
    print_summary(report)
    if report["next_step"]:
        click.secho(report["next_step"], fg="yellow")
    if report.get("engine_agreement"):
        agreement = report["engine_agreement"]
        click.echo(f"identical answers, {agreement['engine']} vs {agreement['reference']}: "
                   + "; ".join(f"{label} {fmt_share(m)}" for label, m in agreement["models"].items()))
    click.echo(f"report: {run.path / 'reports' / 'report.html'} ({report['seconds']}s)")
    exit_on_missed_bounds(report)
