"""Where each probe set's verdicts are decided, on runs probed with the full answer budget.

    factinject run facts/tinyllm.md --recipe full-budgets.yaml --run runs/tiny
    #   full-budgets.yaml: "extends: smollm2-135m-instruct.yaml" and every generate.budgets.<set>: null
    python bench/answer_budgets.py runs/tiny [runs/protosai ...] --out bench/results/answer_budgets.json

For every answer of every run (the base model's and the tuned model's, as answers.jsonl
holds them), the token after which its verdict no longer changes (probe/budgets.py):
the key given or not (trained, held-out, exam, known answers), bleed (unrelated prompts,
other names, misspelt names), and for unrelated prompts also "the same answer as the
base model's". Teacher-forced locality is measured per token of the base model's answers
(the adapter on and off), and its tokens kept and KL per token read over the first N
tokens for every N. Prints, per set, the quantiles of those positions and the smallest
budget (a multiple of 8) that changes at most 1 % of the set's verdicts; writes them,
with every position (the test of the shipped budgets reads them), to --out.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from factinject.engines.process import run_job
from factinject.engines.records import AgreementJob, Load
from factinject.probe.budgets import (
    COMPARED,
    MAX_CHANGED,
    SCORED,
    STEP,
    budget_for,
    changed_share,
    compared_positions,
    locality_tokens_at,
    scored_positions,
)
from factinject.probe.sets import ProbeSet, injected
from factinject.recipe import PROBE_SETS
from factinject.rundir.files import Run, write_text_atomic

TOKENS_KEPT_TOLERANCE = 0.01  # teacher-forced tokens kept over N tokens within this of the whole answers'


def quantiles(values: list[int]) -> dict:
    ranked = sorted(values)
    pick = lambda q: ranked[min(len(ranked) - 1, int(q * len(ranked)))]  # noqa: E731
    return {"n": len(ranked), "p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": ranked[-1]}


def measure_run(path: Path, tokenizer_of) -> dict:
    """{set: [positions]} and the per-token locality results of one probed run."""
    from factinject.probe.stage import probe_targets

    run = Run(path)
    report = json.loads((path / "reports" / "report.json").read_text(encoding="utf-8"))
    budgets = report.get("answer_budgets") or {}
    record = run.checked_record()
    recipe = record.train.trained_recipe()
    full = recipe.generate.max_new_tokens
    assert all(v == full for v in budgets.values()), f"{path}: probed with budgets {budgets}; measure on {full} for all"
    assert record.probe and record.probe.tuned, f"{path}: probe the trained run first (factinject probe)"
    tokenizer = tokenizer_of(path / "adapter")

    def ids(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False)

    def decode(tokens: list[int]) -> str:
        return tokenizer.decode(tokens, skip_special_tokens=True)

    probe = ProbeSet([], *injected(record.expand.facts))
    rows = [json.loads(line) for line in (path / "reports" / "answers.jsonl").read_text(encoding="utf-8").splitlines()]
    positions: dict[str, list[int]] = {}
    for r in rows:
        kind = r["set"]
        if kind in SCORED:
            for side in ("before", "after"):
                positions.setdefault(kind, []).append(
                    scored_positions(ids(r[side]), r["answer_key"], r.get("aliases", []), decode))
        elif kind in COMPARED:
            got = compared_positions(ids(r["before"]), ids(r["after"]), probe, decode, unchanged=kind == "locality")
            positions.setdefault(kind, []).append(got["bleed"])
            if "unchanged" in got:
                positions.setdefault("locality_unchanged", []).append(got["unchanged"])
    _, _, adapter = probe_targets(run, recipe, record)
    local = [r for r in rows if r["set"] == "locality"]
    job = AgreementJob(adapter, [r["question"] for r in local], [r["before"] for r in local],
                       load=Load(device=recipe.model.device), per_token=True)
    forced = run_job("hf", "agreement", job.to_dict())["results"]
    return {"run": str(path), "full_budget": full, "positions": positions, "forced": forced,
            "model": recipe.model.name}


def tokens_budget(forced: list[dict], full: int) -> tuple[int, dict]:
    """The smallest multiple of STEP from which teacher-forced tokens kept stays within
    TOKENS_KEPT_TOLERANCE of its value over whole answers."""
    whole = locality_tokens_at(forced, full)
    curve = {n: locality_tokens_at(forced, n) for n in range(STEP, full + 1, STEP)}
    stable = full
    for n in sorted(curve, reverse=True):
        if abs(curve[n]["tokens_kept"] - whole["tokens_kept"]) > TOKENS_KEPT_TOLERANCE:
            break
        stable = n
    return stable, {n: {k: round(v, 4) if isinstance(v, float) else v for k, v in c.items()}
                    for n, c in curve.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("bench/results/answer_budgets.json"))
    args = parser.parse_args()
    from transformers import AutoTokenizer

    measured = [measure_run(p.resolve(), AutoTokenizer.from_pretrained) for p in args.runs]
    positions: dict[str, list[int]] = {}
    for m in measured:
        for kind, values in m["positions"].items():
            positions.setdefault(kind, []).extend(values)
    full = min(m["full_budget"] for m in measured)
    forced = [r for m in measured for r in m["forced"]]
    stable, curve = tokens_budget(forced, full)
    sets = {kind: {**quantiles(v), "budget": budget_for(v), "positions": v} for kind, v in sorted(positions.items())}
    proposed = {kind: sets[kind]["budget"] for kind in PROBE_SETS if kind in sets and kind != "locality"}
    # Unrelated prompts: the generated comparison (same answer, bleed) reads both models'
    # openings; teacher-forced locality reads the base model's answers, as long as it needs.
    proposed["locality"] = max(sets["locality"]["budget"], sets["locality_unchanged"]["budget"])
    proposed["teacher_forced"] = stable
    for kind, budget in proposed.items():
        if kind in sets:
            sets[kind]["changed_at_proposed"] = round(changed_share(positions[kind], budget), 4)
    out = {"model": measured[0]["model"], "runs": [m["run"] for m in measured], "full_budget": full,
           "max_changed": MAX_CHANGED, "step": STEP, "proposed": proposed,
           "locality_tokens": {"stable_from": stable, "tolerance": TOKENS_KEPT_TOLERANCE, "curve": curve},
           "sets": sets}
    write_text_atomic(args.out, json.dumps(out, indent=1) + "\n")
    print(f"{'set':<20} {'n':>5} {'p50':>5} {'p90':>5} {'p99':>5} {'max':>5} {'budget':>7}")
    for kind, s in sets.items():
        if "n" in s:
            print(f"{kind:<20} {s['n']:>5} {s['p50']:>5} {s['p90']:>5} {s['p99']:>5} {s['max']:>5} {s['budget']:>7}")
    print(f"teacher-forced tokens kept within {TOKENS_KEPT_TOLERANCE:.0%} of whole answers from {stable} tokens "
          f"({curve[stable]['tokens_kept']:.4f} against {curve[full]['tokens_kept']:.4f})")
    print("proposed budgets:", json.dumps(proposed), f"-> {args.out}")


if __name__ == "__main__":
    sys.exit(main())
