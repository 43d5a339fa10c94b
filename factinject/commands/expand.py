"""`factinject expand`: fact sheets -> exports/<name>/data/{train,dev,test}.jsonl.

Light on purpose: no torch, no transformers (a test checks).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from factinject.commands.common import warn_if_training_is_long
from factinject.errors import FactinjectError
from factinject.expand.expander import SPLITS, ExpandConfig, Expansion
from factinject.expand.write import expand_into_run
from factinject.rundir.files import Run, default_run_for
from factinject.rundir.guard import command_errors

PER_FACT_TABLE_LIMIT = 40  # beyond this the summary is per subject, not per fact


def plural(n: int, noun: str) -> str:
    """plural(1, 'fact') -> '1 fact'; plural(5, 'fact') -> '5 facts'."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def print_summary(expansion: Expansion, run: Run, seconds: float) -> None:
    from rich.console import Console
    from rich.table import Table

    # Piped output (CI logs, CliRunner) would otherwise be squeezed to 80 columns.
    console = Console(width=None if sys.stdout.isatty() else 110)
    stats = expansion.stats
    table = Table(title=f"expanded {plural(len(stats), 'fact')} into {run.data_dir}", title_justify="left")
    if len(stats) <= PER_FACT_TABLE_LIMIT:
        table.add_column("fact")
        table.add_column("key")
        for split in SPLITS:
            table.add_column(split, justify="right")
        table.add_column("near-dups dropped", justify="right")
        for s in stats:
            table.add_row(s.fact_id, s.answer_key[:24], *(str(s.rows[x]) for x in SPLITS), str(s.near_duplicates_removed))
    else:
        table.add_column("subject")
        table.add_column("facts", justify="right")
        for split in SPLITS:
            table.add_column(split, justify="right")
        by_subject: dict[str, list] = {}
        for s in stats:
            by_subject.setdefault(s.fact_id.split("/")[0], []).append(s)
        for subject, group in by_subject.items():
            table.add_row(subject, str(len(group)), *(str(sum(g.rows[x] for g in group)) for x in SPLITS))
    table.add_section()
    totals = [str(len(expansion.split(x))) for x in SPLITS]
    if len(stats) <= PER_FACT_TABLE_LIMIT:
        table.add_row("total", "", *totals, str(sum(s.near_duplicates_removed for s in stats)))
    else:
        table.add_row("total", str(len(stats)), *totals)
    console.print(table)
    console.print(f"wrote {run.data_dir}/{{train,dev,test}}.jsonl and {run.manifest_path} in {seconds:.2f}s")


@click.command()
@click.argument("sheets", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--run", "run_path", type=click.Path(path_type=Path), help="Run directory (default: exports/<sheet name>).")
@click.option("--seed", default=0, show_default=True, help="Seed for question sampling and family splits.")
@click.option("--per-family", default=ExpandConfig.max_questions_per_family, show_default=True,
              help="At most this many questions per family and fact.")
@click.option("--force", is_flag=True, help="Replace data even if the run already has a trained adapter.")
def expand(sheets: tuple[Path, ...], run_path: Path | None, seed: int, per_family: int, force: bool) -> None:
    """Expand fact sheets into train/dev/test question-answer data.

    Each fact becomes many questions in several families (question forms); a fact's
    dev and test questions come from families never used in its training rows.
    """
    started = time.perf_counter()
    if per_family < 1:
        raise FactinjectError("--per-family must be at least 1", fix=f"pass --per-family {ExpandConfig.max_questions_per_family} (the default)")
    cfg = ExpandConfig(seed=seed, max_questions_per_family=per_family)
    run = Run(run_path or default_run_for(list(sheets)))
    with command_errors(("interrupted (Ctrl-C); the run's data was not changed", "run `factinject expand` again"),
                        where=run.path):
        expansion = expand_into_run(sheets, run, cfg, force=force)
    print_summary(expansion, run, time.perf_counter() - started)
    warn_if_training_is_long(expansion, run)
