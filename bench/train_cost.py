"""How good is `expand`'s training-time estimate? Train a sheet and compare.

    python bench/train_cost.py                          # facts/tinyllm.md, the default recipe
    python bench/train_cost.py --sheet facts/lumen.md --per-family 4

Expands the sheet, prints the estimate `factinject expand` would make (the costs
built into factinject/train/estimate.py), trains with the default recipe on the CPU, and
prints the measured time next to it, with the cost per training conversation that
this machine showed (median epoch time, less the per-epoch answering, per
conversation). Time it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from factinject.expand.expander import ExpandConfig, expand_sheets
from factinject.expand.write import write_expansion
from factinject.recipe import load_recipe
from factinject.rundir.files import Run
from factinject.sheet.factsheet import read_sheet
from factinject.train.estimate import (
    SECONDS_PER_ANSWER,
    SECONDS_PER_TRAIN_ROW,
    duration,
    workload,
)
from factinject.train.stage import run_training

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sheet", default="facts/tinyllm.md")
    parser.add_argument("--per-family", type=int, default=ExpandConfig.max_questions_per_family)
    args = parser.parse_args()
    sheets = [read_sheet(REPO / args.sheet)]
    cfg = ExpandConfig(max_questions_per_family=args.per_family)
    expansion = expand_sheets(sheets, cfg)
    recipe = load_recipe("testbed-cpu")
    work = workload(len(expansion.split("train")), len(expansion.split("dev")), len(expansion.stats), recipe)
    estimate = work.seconds()
    print(f"{args.sheet}: {len(expansion.stats)} facts, {work.rows_per_epoch:,} conversations and "
          f"{work.answers_per_epoch} answers per epoch, up to {work.epochs} epochs")
    print(f"estimate: {estimate:.1f} s ({duration(estimate)}) at {1000 * SECONDS_PER_TRAIN_ROW:.1f} ms per "
          f"conversation and {1000 * SECONDS_PER_ANSWER:.1f} ms per answer")
    with tempfile.TemporaryDirectory() as tmp:
        run = Run(Path(tmp) / "run")
        write_expansion(run, expansion, sheets, cfg, force=True)
        t0 = time.perf_counter()
        result = run_training(run, recipe)
        measured = time.perf_counter() - t0
    epoch = statistics.median(r.seconds for r in result.curve)
    per_row = (epoch - work.answers_per_epoch * SECONDS_PER_ANSWER) / work.rows_per_epoch
    print(f"measured: {measured:.1f} s for {len(result.curve)} epochs (median epoch {epoch:.1f} s); "
          f"estimate / measured = {estimate / measured:.2f}")
    print(f"this machine: {1000 * per_row:.1f} ms per training conversation")


if __name__ == "__main__":
    main()
