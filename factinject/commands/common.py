"""What several commands print or decide the same way."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from factinject.engines import TRAIN, choices

if TYPE_CHECKING:  # for the annotations only: `probe` and `run` need neither module here
    from factinject.expand.expander import Expansion
    from factinject.rundir.files import Run


# `train --backend` and `run --backend`: the training engine.
training_backend_option = click.option(
    "--backend", type=click.Choice(choices(TRAIN, aliases=True)), default=None,
    help="Training engine: auto picks unsloth when CUDA and unsloth are present, else hf (transformers + PEFT, "
         "CPU or GPU; 'cpu' is an old name for it); unsloth also runs on a CPU from Unsloth 2026.10.9.")


# `train`, `probe` and `run`: the base model's answers are kept across runs (models/answer_cache.py).
answer_cache_option = click.option(
    "--no-answer-cache", "no_answer_cache", is_flag=True,
    help="Generate every base-model answer anew, neither reading nor writing the answer cache (`factinject cache`).")


def warn_if_training_is_long(expansion: Expansion, run: Run, recipe=None) -> None:
    """A big sheet expands in seconds and then trains for hours: say so before anyone waits."""
    from factinject.train.estimate import training_warning

    warning = training_warning(len(expansion.split("train")), len(expansion.split("dev")), len(expansion.stats),
                               run.path.parent, recipe)
    if warning:
        click.secho(f"warning: {warning}", fg="yellow", err=True)


def exit_on_missed_bounds(report: dict) -> None:
    """A probe that missed a --fail-under bound says which and exits with status 1."""
    if report["missed"]:
        click.secho("missed bounds: " + "; ".join(report["missed"]), fg="red", err=True)
        raise SystemExit(1)
