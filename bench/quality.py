"""Does the default method meet the quality bar? And how does the seed-001 method do?

    python bench/quality.py                      # tinyllm, protosai, lumen (22 facts)
    python bench/quality.py --sheets facts/kestrel.md
    python bench/quality.py --methods default --set train.contrast_per_fact=0   # an ablation
    python bench/quality.py --sheets facts/tinyllm.md --seeds 0 1 2             # mean and range over seeds

For each sheet, on the embedded testbed model, in this one process:
  default  - factinject's method: paraphrase families, replay, epochs chosen on dev,
             merged export, probe;
  seed001  - the method of seed 001: one phrasing per fact, a fixed 25 epochs,
             no replay, no dev split (probed on the same held-out questions).
Prints both side by side and checks the default against the quality bar:
recall_trained 100 %, recall_heldout >= 95 %, retention >= 98 % of the base model's,
locality_unchanged >= 95 %, bleed <= 1 %, parity 100 %.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import yaml

from factinject.expand import ExpandConfig, Expansion, expand_sheets
from factinject.expand_cmd import write_expansion
from factinject.export import export_merged
from factinject.factsheet import read_sheet
from factinject.probe_cmd import run_probe
from factinject.recipe import load_recipe
from factinject.rundir import Run
from factinject.train import run_training

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SHEETS = ["facts/tinyllm.md", "facts/protosai.md", "facts/lumen.md"]


def seed001_rows(expansion: Expansion) -> Expansion:
    """One training question per fact (its first), the fact's statement as the answer, no dev split."""
    seen, rows = set(), []
    for row in expansion.rows:
        if row["split"] == "train" and row["fact_id"] not in seen and row["family"] != "user":
            seen.add(row["fact_id"])
            rows.append(row)
        elif row["split"] == "test":
            rows.append(row)
    return Expansion(rows=rows, stats=expansion.stats)


def one_run(root: Path, sheet: str, method: str, overrides: dict | None = None, seed: int = 0) -> dict:
    overrides = dict(overrides or {})
    # "expand.max_questions_per_family=6" goes to the expander, the rest to the recipe.
    expand_knobs = {k.split(".", 1)[1]: overrides.pop(k) for k in list(overrides) if k.startswith("expand.")}
    parsed = [read_sheet(REPO / sheet)]
    cfg = ExpandConfig(seed=seed, **expand_knobs)
    expansion = expand_sheets(parsed, cfg)
    recipe = load_recipe("testbed-cpu")
    if overrides:  # ablations: --set train.contrast_per_fact=0
        recipe = recipe.with_overrides(**overrides)
    if seed:  # another seed draws other questions, splits, replay, contrast and LoRA init
        recipe = recipe.with_overrides(**{"train.seed": seed})
    if method == "seed001":
        expansion = seed001_rows(expansion)
        recipe = recipe.with_overrides(**{"train.epochs": 25, "train.replay_ratio": 0.0, "train.contrast_per_fact": 0,
                                           "stop.control_prompts": 0})
    run = Run(root / f"{Path(sheet).stem}-{method}-seed{seed}")
    timings = {}
    t0 = time.perf_counter()
    write_expansion(run, expansion, parsed, cfg, force=True)
    timings["expand"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = run_training(run, recipe)
    timings["train"] = time.perf_counter() - t0
    if method == "default":
        t0 = time.perf_counter()
        export_merged(run, force=True)
        timings["export"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    report = run_probe(run)
    timings["probe"] = time.perf_counter() - t0
    return {"sheet": sheet, "method": method, "before": report["before"], "after": report["after"],
            "epochs": len(result.curve), "best_epoch": result.best_epoch, "train_rows": len(expansion.split("train")),
            "seconds": {k: round(v, 1) for k, v in timings.items()}}


def check_bar(r: dict) -> list[str]:
    a, b = r["after"], r["before"]
    missed = []
    if a["recall_trained"]["share"] < 1.0:
        missed.append(f"recall_trained {a['recall_trained']['share']:.3f} < 1.0")
    if a["recall_heldout"]["share"] < 0.95:
        missed.append(f"recall_heldout {a['recall_heldout']['share']:.3f} < 0.95")
    if a["retention"]["share"] < 0.98 * b["retention"]["share"]:
        missed.append(f"retention {a['retention']['share']:.3f} < 0.98 x base {b['retention']['share']:.3f}")
    if a["locality_unchanged"]["share"] < 0.95:
        missed.append(f"locality {a['locality_unchanged']['share']:.3f} < 0.95")
    if a["bleed"]["share"] > 0.01:
        missed.append(f"bleed {a['bleed']['share']:.3f} > 0.01")
    if a["parity"] is None or a["parity"]["share"] < 1.0:
        missed.append("parity < 1.0")
    return missed


def fmt(m: dict | None) -> str:
    return "–" if not m or m.get("share") is None else f"{100 * m['share']:5.1f}% ({m['count']}/{m['n']})"


def print_spread(results: list[dict], metrics: list[str]) -> None:
    """Mean and range of each after-share over the seeds, per sheet and method."""
    print(f"\n{'sheet':<20}{'method':<9}{'metric':<20}{'mean':>8}{'min':>8}{'max':>8}")
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in results:
        groups.setdefault((r["sheet"], r["method"]), []).append(r)
    for (sheet, method), runs in groups.items():
        for m in metrics:
            shares = [100 * r["after"][m]["share"] for r in runs if r["after"].get(m) and r["after"][m]["share"] is not None]
            if shares:
                print(f"{Path(sheet).stem:<20}{method:<9}{m:<20}{sum(shares) / len(shares):8.1f}{min(shares):8.1f}{max(shares):8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sheets", nargs="+", default=DEFAULT_SHEETS)
    parser.add_argument("--methods", nargs="+", default=["default", "seed001"])
    parser.add_argument("--out", type=Path, help="Write the results as JSON here.")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0],
                        help="Repeat every run with these seeds and print the mean and range (single runs differ by a few prompts)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="Recipe overrides for an ablation, e.g. train.contrast_per_fact=0 train.lr_scheduler=constant; "
                             "expand.* keys set the expander (expand.max_questions_per_family=6)")
    args = parser.parse_args()
    overrides = {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.set)}
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for sheet in args.sheets:
            for method in args.methods:
                for seed in args.seeds:
                    results.append({**one_run(Path(tmp), sheet, method, overrides, seed), "seed": seed})
    metrics = ["recall_trained", "recall_heldout", "retention", "locality_unchanged", "bleed", "parity"]
    print(f"\n{'sheet':<20}{'method':<9}{'metric':<20}{'before':>20}{'after':>20}   (seed {', '.join(map(str, args.seeds))})")
    failures = []
    for r in results:
        for m in metrics:
            print(f"{Path(r['sheet']).stem:<20}{r['method']:<9}{m:<20}{fmt(r['before'].get(m)):>20}{fmt(r['after'].get(m)):>20}")
        print(f"{'':<29}epochs run {r['epochs']}, kept {r['best_epoch']}, train rows {r['train_rows']}, seconds {r['seconds']}")
        if r["method"] == "default":
            missed = check_bar(r)
            failures += [f"{r['sheet']}: {x}" for x in missed]
            print(f"{'':<29}bar: {'MET' if not missed else 'MISSED: ' + '; '.join(missed)}")
    if len(args.seeds) > 1:
        print_spread(results, metrics)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    raise SystemExit(1 if failures else 0)


if __name__ == "__main__":
    main()
