"""Rank method variants on the mean over seeds: many `bench/quality.py` runs, resumable.

    python bench/sweep.py --seeds 0 1 2 --config base \\
        --config "rep3 train.replay_ratio=3.0" --config "q6 expand.max_questions_per_family=6"
    python bench/sweep.py --workers 15 --device cuda ...   # what docs/benchmarks.md used
    python bench/sweep.py --recipe smollm2-135m-instruct --no-export --seeds 0 1 2 \\
        --config default --config "replay64 train.replay_tokens=64" --out bench/results/smollm2_sweep.jsonl

Every (config, sheet, seed) is one run of the default method (expand, train, export,
probe). On the testbed each run is a single-threaded process, so a 16-core machine runs
15 at once; a real model's recipe runs one at a time with every core (--workers 1, the
default there). Why seeds: on the testbed one run's held-out recall swings by 30+
points with the seed (which question family is held out), so a change is only worth
keeping when it wins on the mean over seeds; that takes dozens of runs.

Results are appended to --out as JSON lines as they finish (the commit, the recipe in
full, every metric before and after, the seconds of each stage); a rerun skips every
(config, its overrides, recipe, sheet, seed, export) already there, so a sweep stopped
anywhere resumes. --no-export probes the adapter itself (screening; parity is checked
by runs with the export). A table of mean/min/max per config and sheet is printed.

--device cuda trains on the GPU instead of the CPU (same code path, TrainingArguments
use_cpu off; probing uses the GPU whenever there is one). On the runs checked, the
figures were identical to the CPU's (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import yaml

from factinject.probe.metrics import METRICS as PROBE_METRICS
from factinject.recipe import load_recipe

BENCH = Path(__file__).resolve().parent
# The probe's metrics but parity, which is 100 % on every run of every variant.
METRICS = tuple(m.name for m in PROBE_METRICS if m.name != "parity")


def parse_config(text: str) -> tuple[str, dict]:
    """'rep3 train.replay_ratio=3.0 lora.r=32' -> ('rep3', {...})."""
    name, *pairs = text.split()
    assert all("=" in p for p in pairs), f"config {text!r}: write NAME KEY=VALUE ..."
    return name, {k: yaml.safe_load(v) for k, v in (p.split("=", 1) for p in pairs)}


def one_job(name: str, overrides: dict, sheet: str, seed: int, device: str, recipe: str, export: bool,
            threads: int | None) -> dict:
    if threads:  # many single-threaded runs at once (the testbed); a real model takes every core
        os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    if threads:
        torch.set_num_threads(threads)
    if device == "cuda":
        overrides = {**overrides, "model.device": "cuda"}
    sys.path.insert(0, str(BENCH))
    from quality import one_run

    with tempfile.TemporaryDirectory() as tmp:
        result = one_run(Path(tmp), sheet, "default", overrides, seed, recipe_name=recipe, export=export)
    return {**job_key(name, overrides, sheet, seed, recipe, export), "commit": commit(), **result}


def job_key(name: str, overrides: dict, sheet: str, seed: int, recipe: str, export: bool) -> dict:
    return {"config": name, "overrides": overrides, "sheet": sheet, "seed": seed, "recipe_name": recipe,
            "export": export}


def same_job(row: dict, key: dict) -> bool:
    return all(row.get(k, {"recipe_name": "testbed-cpu", "export": True}.get(k)) == v for k, v in key.items())


def commit() -> str:
    """The commit the run measured, '+' when the work tree had changes."""
    import subprocess

    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=BENCH.parent, capture_output=True, text=True, check=False).stdout.strip()

    return git("rev-parse", "--short", "HEAD") + ("+" if git("status", "--porcelain", "--untracked-files=no") else "")


def print_table(results: list[dict]) -> None:
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in results:
        groups[(Path(r["sheet"]).stem, r["config"])].append(r)
    print(f"\n{'sheet':<12}{'config':<22}{'seeds':>6}" + "".join(f"{m:>28}" for m in METRICS))
    for (sheet, config), runs in sorted(groups.items()):
        cells = []
        for m in METRICS:
            shares = [100 * r["after"][m]["share"] for r in runs if (r["after"].get(m) or {}).get("share") is not None]
            cells.append(f"{sum(shares) / len(shares):6.1f} ({min(shares):5.1f}–{max(shares):5.1f})" if shares else "–")
        print(f"{sheet:<12}{config:<22}{len(runs):>6}" + "".join(f"{c:>28}" for c in cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sheets", nargs="+", default=["facts/tinyllm.md", "facts/protosai.md"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--config", action="append", default=[], metavar='"NAME KEY=VALUE ..."',
                        help="a variant: a name and recipe/expander overrides (repeat the option)")
    parser.add_argument("--recipe", default="testbed-cpu", help="the recipe every variant starts from")
    parser.add_argument("--no-export", dest="export", action="store_false", help="probe the adapter, no export")
    parser.add_argument("--workers", type=int, default=None,
                        help="runs at once, one thread each (default: cores - 1 on the testbed, else 1 with all cores)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--out", type=Path, default=Path("sweep.jsonl"))
    args = parser.parse_args()
    testbed = load_recipe(args.recipe).model.name == "testbed"
    workers = args.workers or (max(1, (os.cpu_count() or 2) - 1) if testbed else 1)
    threads = 1 if workers > 1 or testbed else None
    configs = [parse_config(c) for c in args.config] or [("default", {})]
    done = [json.loads(line) for line in args.out.read_text().splitlines() if line.strip()] if args.out.exists() else []
    jobs = [(name, over, sheet, seed, args.device, args.recipe, args.export, threads)
            for seed in args.seeds for sheet in args.sheets for name, over in configs]
    todo = [j for j in jobs if not any(same_job(r, job_key(j[0], j[1], j[2], j[3], j[5], j[6])) for r in done)]
    print(f"{len(jobs) - len(todo)} of {len(jobs)} runs already in {args.out}; {len(todo)} to run", flush=True)
    results = [r for r in done if any(same_job(r, job_key(j[0], j[1], j[2], j[3], j[5], j[6])) for j in jobs)]
    spawn = multiprocessing.get_context("spawn")  # no CUDA state inherited by the workers
    with ProcessPoolExecutor(workers, mp_context=spawn) as pool:
        futures = [pool.submit(one_job, *job) for job in todo]
        for future in as_completed(futures):
            r = future.result()
            results.append(r)
            with args.out.open("a") as out:  # one whole line at a time: a stopped sweep loses only runs in flight
                out.write(json.dumps(r) + "\n")
            a = r["after"]
            exam = f", exam {a['exam']['share']:.3f}" if a.get("exam") else ""
            print(f"{r['config']} {r['sheet']} seed {r['seed']}: held-out {a['recall_heldout']['share']:.3f}{exam}, "
                  f"bleed {a['bleed']['count']}/{a['bleed']['n']} ({sum(r['seconds'].values()):.0f} s)", flush=True)
    print_table(results)


if __name__ == "__main__":
    main()
