"""`factinject run`: expand, probe before, train, export merged, probe after, in order."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import click

from factinject.commands.common import answer_cache_option, training_backend_option
from factinject.errors import FactinjectError


@click.command(name="run")
@click.argument("sheets", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--run", "run_path", type=click.Path(path_type=Path), help="Run directory (default: exports/<sheet name>).")
@click.option("--recipe", "recipe_path", type=click.Path(path_type=Path), help="Recipe YAML, or a shipped recipe's name (default: testbed-cpu).")
@click.option("--seed", default=0, show_default=True, help="Expansion seed.")
@click.option("--fail-under", "fail_under", help="Bounds for the final probe, e.g. recall_heldout=0.9,retention=0.97.")
@click.option("--questions", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Your own exam (JSONL: question, answer_key, optional fact_id and aliases), probed before and "
                   "after. Default: <sheet>.exam.jsonl next to each sheet, if there is one.")
@click.option("--force", is_flag=True, help="Replace this run's earlier data, adapter and export.")
@training_backend_option
@answer_cache_option
@click.option("--chat-template", "chat_template", metavar="default|FILE",
              help="For a base model without a chat template: 'default' (see docs/troubleshooting.md) or a Jinja file.")
def run(sheets, run_path, recipe_path, seed, fail_under, questions, force, backend, no_answer_cache,
        chat_template) -> None:
    """Inject the facts of SHEETS and prove it: the whole pipeline in one command.

    Prints a before/after table and where the report is, with the time each stage took.
    With an exam (--questions, or facts/<name>.exam.jsonl next to facts/<name>.md) the
    report lists every exam question the model missed, with its answer.
    """
    from rich.console import Console
    from rich.table import Table

    from factinject.commands.common import (
        exit_on_missed_bounds,
        warn_if_training_is_long,
    )
    from factinject.engines.choice import check_device, training_engine
    from factinject.expand.expander import ExpandConfig
    from factinject.expand.write import expand_into_run
    from factinject.export.stage import export_merged
    from factinject.models.base import chat_template_record, read_chat_template
    from factinject.probe.exam import checked_exams, describe
    from factinject.probe.report import print_summary
    from factinject.probe.stage import run_probe
    from factinject.recipe import load_recipe
    from factinject.rundir.files import Run, default_run_for
    from factinject.rundir.guard import OOM_TRAIN_FIX, guarded
    from factinject.rundir.owned import check_run_folder
    from factinject.train.stage import run_training

    timings: list[tuple[str, float]] = []

    def timed(stage: str, fn):
        t0 = time.perf_counter()
        out = fn()
        timings.append((stage, time.perf_counter() - t0))
        return out

    recipe = load_recipe(recipe_path).with_overrides(**{"model.backend": backend})
    check_device(recipe, str(recipe_path) if recipe_path else None)  # before anything is written or downloaded
    training_engine(recipe)  # an engine this machine cannot run fails here too
    exams = checked_exams(questions, sheets)  # a bad exam fails here, before anything is written
    if describe(exams):
        click.echo(describe(exams))
    the_run = Run(run_path or default_run_for(list(sheets)))
    check_run_folder(the_run.path)  # before the lock: a refused folder is left exactly as it was
    template = read_chat_template(chat_template) if chat_template else None
    go_on = (f"go on stage by stage (`factinject train --run {the_run.path} --resume`, `export --merged`, `probe`), "
             "or start over with `factinject run ... --force`")
    interrupt = ("interrupted (Ctrl-C); every finished stage's output is complete", go_on)
    with guarded(the_run, "run", interrupt, create=True, oom_fix=OOM_TRAIN_FIX):
        if (the_run.path / "adapter").exists():
            if not force:
                raise FactinjectError("this run already holds a trained adapter", where=the_run.path,
                                      fix="pass --force to redo it from scratch, or --run exports/<new-name>")
            for stale in ("adapter", "merged", "export", "train"):  # a fresh run must not probe an old adapter
                shutil.rmtree(the_run.path / stale, ignore_errors=True)

        expansion = timed("expand", lambda: expand_into_run(sheets, the_run, ExpandConfig(seed=seed), force=force))
        warn_if_training_is_long(expansion, the_run, recipe)
        cache = not no_answer_cache
        timed("probe (before)", lambda: run_probe(the_run, exams=exams, recipe=recipe, chat_template=template,
                                                  answer_cache=cache))
        timed("train", lambda: run_training(the_run, recipe, fresh=True, chat_template=template, answer_cache=cache))
        if chat_template:
            the_run.write_section(chat_template_record(chat_template, template))
        timed("export --merged", lambda: export_merged(the_run, force=True, chat_template=template, answer_cache=cache))
        report = timed("probe (after)", lambda: run_probe(the_run, exams=exams, bounds_text=fail_under,
                                                          chat_template=template, answer_cache=cache))
    print_summary(report)
    table = Table(title="time per stage", title_justify="left")
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    for stage, seconds in timings:
        table.add_row(stage, f"{seconds:.1f}")
    table.add_row("total", f"{sum(s for _, s in timings):.1f}")
    Console(width=120).print(table)
    click.echo(f"report: {the_run.path / 'reports' / 'report.html'}")
    exit_on_missed_bounds(report)
