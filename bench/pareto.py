"""The method variants of a sweep on one chart: recall against tokens kept, bleed as colour.

    python bench/pareto.py bench/results/smollm2_sweep.jsonl --out docs/pareto_smollm2.svg
    python bench/pareto.py bench/results/smollm2_updates.jsonl --x neighbours_tokens --out docs/pareto_updates.svg \
        --title "SmolLM2-135M-Instruct: updates of capitals (mean over runs)"

One point per variant (config): the mean over its runs (seeds, sheets) of held-out
recall (y, `--y`) and teacher-forced tokens kept (x, `--x`: any probe metric), coloured by
mean bleed (green 0 %, red at 10 % or more), labelled with the variant and its number of
runs. Up and to the right is better; a variant is on the front when no other is at least
as good on both axes. A plain SVG (no plotting library), written atomically.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

from factinject.probe.metrics import LABELS
from factinject.rundir.files import write_text_atomic


def points(rows: list[dict], x: str = "locality_tokens", y: str = "recall_heldout") -> list[dict]:
    """Per config: the mean of metric `y` ("recall"), metric `x` ("kept") and bleed over its runs."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[r["config"]].append(r["after"])
    out = []
    for name, runs in sorted(groups.items()):
        def mean(metric: str) -> float | None:
            values = [a[metric]["share"] for a in runs if (a.get(metric) or {}).get("share") is not None]
            return sum(values) / len(values) if values else None
        out.append({"config": name, "runs": len(runs), "recall": mean(y), "kept": mean(x), "bleed": mean("bleed")})
    return [p for p in out if p["recall"] is not None and p["kept"] is not None]


def on_front(p: dict, others: list[dict]) -> bool:
    return not any(o is not p and o["recall"] >= p["recall"] and o["kept"] >= p["kept"]
                   and (o["recall"], o["kept"]) != (p["recall"], p["kept"]) for o in others)


def svg(pts: list[dict], title: str, x_label: str = "tokens kept, teacher-forced (higher: less damage)",
        y_label: str = "held-out recall") -> str:
    w, h, m = 640, 420, 60
    xs, ys = [p["kept"] for p in pts], [p["recall"] for p in pts]
    x0, x1 = min(xs + [0.8]) - 0.01, max(xs + [1.0])
    y0, y1 = min(ys + [0.5]) - 0.02, 1.0
    sx = lambda v: m + (v - x0) / (x1 - x0) * (w - 2 * m)  # noqa: E731
    sy = lambda v: h - m - (v - y0) / (y1 - y0) * (h - 2 * m)  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}" '
             f'font-family="sans-serif" font-size="12" role="img" aria-label="{title}">',
             f'<rect width="{w}" height="{h}" fill="white"/>',
             f'<text x="{w / 2}" y="20" text-anchor="middle" font-size="14">{title}</text>',
             f'<line x1="{m}" y1="{h - m}" x2="{w - m}" y2="{h - m}" stroke="black"/>',
             f'<line x1="{m}" y1="{m}" x2="{m}" y2="{h - m}" stroke="black"/>',
             f'<text x="{w / 2}" y="{h - 15}" text-anchor="middle">{x_label}</text>',
             f'<text x="15" y="{h / 2}" text-anchor="middle" transform="rotate(-90 15 {h / 2})">{y_label}</text>']
    for i in range(5):
        vx, vy = x0 + i * (x1 - x0) / 4, y0 + i * (y1 - y0) / 4
        parts += [f'<text x="{sx(vx)}" y="{h - m + 16}" text-anchor="middle">{vx:.0%}</text>',
                  f'<text x="{m - 6}" y="{sy(vy) + 4}" text-anchor="end">{vy:.0%}</text>']
    for p in pts:
        bleed = min(1.0, (p["bleed"] or 0.0) / 0.10)
        colour = f"rgb({int(40 + 200 * bleed)},{int(160 - 120 * bleed)},60)"
        edge = "black" if on_front(p, pts) else "none"
        parts += [f'<circle cx="{sx(p["kept"]):.1f}" cy="{sy(p["recall"]):.1f}" r="7" fill="{colour}" '
                  f'stroke="{edge}" stroke-width="2"/>',
                  f'<text x="{sx(p["kept"]) + 10:.1f}" y="{sy(p["recall"]) - 8:.1f}">{p["config"]} '
                  f'(n={p["runs"]}, bleed {100 * (p["bleed"] or 0):.1f} %)</text>']
    parts.append(f'<text x="{w - m}" y="{m - 10}" text-anchor="end">colour: bleed, green 0 % to red 10 %+; '
                 'ringed: on the front</text>')
    return "\n".join(parts + ["</svg>"]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--out", type=Path, default=Path("docs/pareto_smollm2.svg"))
    parser.add_argument("--title", default="SmolLM2-135M-Instruct: method variants (mean over runs)")
    parser.add_argument("--x", default="locality_tokens", choices=sorted(LABELS), help="the metric across")
    parser.add_argument("--y", default="recall_heldout", choices=sorted(LABELS), help="the metric up")
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.results.read_text(encoding="utf-8").splitlines() if line.strip()]
    pts = points(rows, args.x, args.y)
    write_text_atomic(args.out, svg(pts, args.title, LABELS[args.x], LABELS[args.y]))
    for p in sorted(pts, key=lambda p: (-p["recall"], -p["kept"])):
        print(f"{p['config']:<28} runs {p['runs']}  {args.y} {p['recall']:.3f}  {args.x} {p['kept']:.3f}  "
              f"bleed {p['bleed'] or 0:.3f}{'  (front)' if on_front(p, pts) else ''}")
    print(f"-> {args.out}")


if __name__ == "__main__":
    sys.exit(main())
