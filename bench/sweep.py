"""Rank method variants on the mean over seeds: many `bench/quality.py` runs in parallel.

    python bench/sweep.py --seeds 0 1 2 --config base \\
        --config "rep3 train.replay_ratio=3.0" --config "q6 expand.max_questions_per_family=6"
    python bench/sweep.py --workers 15 --device cuda ...   # what docs/benchmarks.md used

Every (config, sheet, seed) is one run of the default method (expand, train, export,
probe) in its own single-threaded process, so a 16-core machine runs 15 at once.
Why: on the testbed one run's held-out recall swings by 30+ points with the seed
(which question family is held out), so a change is only worth keeping when it wins
on the mean over seeds; that takes dozens of runs.

--device cuda trains on the GPU instead of the CPU (same code path, TrainingArguments
use_cpu off; probing uses the GPU whenever there is one). On the runs checked, the
figures were identical to the CPU's (docs/benchmarks.md). Results go to --out as JSON
lines, as they finish, and a table of mean/min/max per config and sheet is printed.
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

BENCH = Path(__file__).resolve().parent
# The probe's metrics but parity, which is 100 % on every run of every variant.
METRICS = tuple(m.name for m in PROBE_METRICS if m.name != "parity")


def parse_config(text: str) -> tuple[str, dict]:
    """'rep3 train.replay_ratio=3.0 lora.r=32' -> ('rep3', {...})."""
    name, *pairs = text.split()
    assert all("=" in p for p in pairs), f"config {text!r}: write NAME KEY=VALUE ..."
    return name, {k: yaml.safe_load(v) for k, v in (p.split("=", 1) for p in pairs)}


def one_job(name: str, overrides: dict, sheet: str, seed: int, device: str) -> dict:
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
    if device == "cuda":
        overrides = {**overrides, "model.device": "cuda"}
    sys.path.insert(0, str(BENCH))
    from quality import one_run

    with tempfile.TemporaryDirectory() as tmp:
        result = one_run(Path(tmp), sheet, "default", overrides, seed)
    return {"config": name, "overrides": overrides, "seed": seed, **result}


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
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--out", type=Path, default=Path("sweep.jsonl"))
    args = parser.parse_args()
    configs = [parse_config(c) for c in args.config] or [("default", {})]
    jobs = [(name, over, sheet, seed, args.device) for seed in args.seeds for sheet in args.sheets
            for name, over in configs]
    results = []
    spawn = multiprocessing.get_context("spawn")  # no CUDA state inherited by the workers
    with ProcessPoolExecutor(args.workers, mp_context=spawn) as pool, args.out.open("w") as out:
        futures = [pool.submit(one_job, *job) for job in jobs]
        for future in as_completed(futures):
            r = future.result()
            results.append(r)
            out.write(json.dumps(r) + "\n")
            out.flush()
            a = r["after"]
            exam = f", exam {a['exam']['share']:.3f}" if a.get("exam") else ""
            print(f"{r['config']} {r['sheet']} seed {r['seed']}: held-out {a['recall_heldout']['share']:.3f}{exam}, "
                  f"bleed {a['bleed']['count']}/{a['bleed']['n']}", flush=True)
    print_table(results)


if __name__ == "__main__":
    main()
