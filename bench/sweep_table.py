"""A sweep's results file as the markdown table docs/benchmarks.md shows: per (sheet,
variant), the mean over its seeds of each metric after training.

    python bench/sweep_table.py bench/results/smollm2_sweep.jsonl
    python bench/sweep_table.py bench/results/smollm2_updates.jsonl --metrics recall_trained \\
        recall_heldout old_value neighbours_tokens locality_tokens retention bleed portability

Shares print as per cent; metrics read teacher-forced (tokens kept) add their KL per
token; --counts prints those metrics as mean counts (retention of a known-answer set
whose size differs per sheet). The last column is the mean of the training stage's
seconds (the base model's answers to prompts no earlier run asked included).
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

DEFAULT_METRICS = ("recall_trained", "recall_heldout", "exam", "locality_tokens", "locality_unchanged", "retention",
                   "bleed")


def cell(runs: list[dict], metric: str, as_count: bool) -> str:
    found = [r["after"][metric] for r in runs if (r["after"].get(metric) or {}).get("share") is not None]
    if not found:
        return "–"
    if as_count:
        return f"{statistics.mean(m['count'] for m in found):.1f} of {found[0]['n']}"
    text = f"{100 * statistics.mean(m['share'] for m in found):.1f} %"
    kl = [m["kl_per_token"] for m in found if m.get("kl_per_token") is not None]
    return f"{text} ({statistics.mean(kl):.3f})" if kl else text


def table(rows: list[dict], metrics: tuple[str, ...], counts: tuple[str, ...]) -> list[str]:
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        groups[(Path(r["sheet"]).stem, r["config"])].append(r)
    lines = ["| sheet | variant | seeds | " + " | ".join(metrics) + " | training s |",
             "|---|---|---|" + "---|" * len(metrics) + "---|"]
    for (sheet, config), runs in groups.items():  # in the order the file first has them
        seeds = ", ".join(str(s) for s in sorted({r["seed"] for r in runs}))
        train = statistics.mean(r["seconds"].get("train", 0.0) for r in runs)
        lines.append(f"| {sheet} | {config} | {seeds} | "
                     + " | ".join(cell(runs, m, m in counts) for m in metrics) + f" | {train:.0f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS))
    parser.add_argument("--counts", nargs="*", default=["retention", "portability"])
    parser.add_argument("--configs", nargs="*", help="only these variants")
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.results.read_text().splitlines() if line.strip()]
    if args.configs:
        rows = [r for r in rows if r["config"] in args.configs]
    print("\n".join(table(rows, tuple(args.metrics), tuple(args.counts))))


if __name__ == "__main__":
    main()
