"""Reports for a person: report.md and a self-contained report.html with charts.

Pure functions from the report dict (the content of report.json) to text. The
charts are inline SVG: no plotting library, no network, opens in any browser.
"""

from __future__ import annotations

import html

from factinject.probe import METRICS

LABELS = {
    "recall_trained": "recall (trained questions)",
    "recall_heldout": "recall (held-out questions)",
    "locality_unchanged": "locality (answers unchanged)",
    "retention": "retention (known answers)",
    "bleed": "bleed (lower is better)",
    "parity": "parity (adapter = merged)",
    "exam": "your exam",
}


def fmt_share(m: dict | None) -> str:
    if not m or m.get("share") is None:
        return "–"
    lo, hi = m["ci95"]
    return f"{100 * m['share']:.1f}% ({m['count']}/{m['n']}, 95% CI {100 * lo:.0f}–{100 * hi:.0f}%)"


def fact_cell(fact: dict, side: str, kind: str) -> str:
    """'3/6' for one fact's recall on one side (before/after) and kind (trained/heldout)."""
    m = fact.get(side, {}).get(f"recall_{kind}")
    return f"{m['count']}/{m['n']}" if m else "–"


def metric_names(report: dict) -> list[str]:
    names = list(METRICS)
    if "exam" in report["before"]:
        names.append("exam")
    return names


def render_markdown(report: dict) -> str:
    after = report.get("after")
    lines = [f"# factinject report: {report['run']}", "",
             f"Base model: `{report['model']['base']}`; tuned: `{report['model'].get('tuned') or 'not trained yet'}`; "
             f"probe backend: {report['backend']}.", ""]
    lines += ["## Summary", "", "| metric | before | after | bound |", "|---|---|---|---|"]
    for name in metric_names(report):
        bound = report["thresholds"].get(name)
        bound_text = "" if bound is None else (f"<= {bound}" if name == "bleed" else f">= {bound}")
        lines.append(f"| {LABELS[name]} | {fmt_share(report['before'].get(name))} | "
                     f"{fmt_share(after.get(name)) if after else '–'} | {bound_text} |")
    if report.get("missed"):
        lines += ["", "**Missed bounds:** " + "; ".join(report["missed"])]
    lines += ["", "## Per fact", "", "| fact | key | trained before | trained after | held-out before | held-out after |",
              "|---|---|---|---|---|---|"]
    for fact_id, f in report["facts"].items():
        cells = " | ".join(fact_cell(f, side, kind) for kind in ("trained", "heldout") for side in ("before", "after"))
        lines.append(f"| {fact_id} | {f['answer_key']} | {cells} |")
    if report.get("regressions"):
        lines += ["", "## Worst regressions", "", "| kind | question | base answer | tuned answer |", "|---|---|---|---|"]
        for r in report["regressions"]:
            cells = [r["kind"], r["question"], r["before"], r["after"]]
            lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    if report.get("curve"):
        lines += ["", "## Training curve", "", "| epoch | loss | dev recall | drift |", "|---|---|---|---|"]
        for e in report["curve"]:
            loss = "–" if e["loss"] is None else f"{e['loss']:.4f}"
            lines.append(f"| {e['epoch']} | {loss} | {e['dev_correct']}/{e['dev_n']} | {e['drift_changed']}/{e['drift_n']} |")
        lines.append(f"\nKept epoch {report.get('best_epoch')}.")
    lines += agreement_lines(report)
    lines += ["", f"Counts: {report['counts']}", ""]
    return "\n".join(lines)


def agreement_lines(report: dict, limit: int = 50) -> list[str]:
    """The engine-agreement section (probe --compare-with): the share per model and the
    prompts where the two engines' greedy answers differ."""
    agreement = report.get("engine_agreement")
    if not agreement:
        return []
    ours, theirs = agreement["engine"], agreement["reference"]
    used = ", ".join(f"{k}: {v}" for k, v in report.get("engines", {}).items())
    lines = ["", "## Engine agreement", "",
             f"Identical greedy answers from the {ours} and {theirs} engines, per model (engines used: {used}).", "",
             "| model | identical |", "|---|---|"]
    for label, m in agreement["models"].items():
        lines.append(f"| {label} | {fmt_share(m)} |")
    lines.append(f"| all | {fmt_share(agreement['overall'])} |")
    differ = [(label, d) for label, m in agreement["models"].items() for d in m["disagreements"]]
    if differ:
        lines += ["", f"| model | question | {ours} | {theirs} |", "|---|---|---|---|"]
        for label, d in differ[:limit]:
            cells = [label, d["question"], d[ours], d[theirs]]
            lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
        if len(differ) > limit:
            lines.append(f"\n{len(differ) - limit} more in report.json.")
    return lines


def _bar_chart(report: dict) -> str:
    """Before/after bars per metric with 95 % interval whiskers."""
    names = [n for n in metric_names(report) if report["before"].get(n) or (report.get("after") or {}).get(n)]
    row_h, left, width = 46, 230, 420
    height = row_h * len(names) + 40
    parts = [f'<svg viewBox="0 0 {left + width + 90} {height}" width="100%" role="img" aria-label="metrics before and after">']
    for i in range(0, 101, 25):
        x = left + width * i / 100
        parts.append(f'<line x1="{x}" y1="20" x2="{x}" y2="{height - 10}" class="grid"/>'
                     f'<text x="{x}" y="14" class="tick">{i}%</text>')
    for row, name in enumerate(names):
        y = 24 + row * row_h
        parts.append(f'<text x="{left - 8}" y="{y + 18}" class="label">{html.escape(LABELS[name])}</text>')
        for j, (side, cls) in enumerate((("before", "before"), ("after", "after"))):
            m = (report.get(side) or {}).get(name)
            if not m or m.get("share") is None:
                continue
            yy = y + j * 17
            w = width * m["share"]
            lo, hi = (left + width * v for v in m["ci95"])
            parts.append(f'<rect x="{left}" y="{yy}" width="{w:.1f}" height="13" class="{cls}"><title>{side}: '
                         f'{html.escape(fmt_share(m))}</title></rect>'
                         f'<line x1="{lo:.1f}" y1="{yy + 6.5}" x2="{hi:.1f}" y2="{yy + 6.5}" class="ci"/>'
                         f'<text x="{left + width + 8}" y="{yy + 11}" class="val">{100 * m["share"]:.1f}%</text>')
    parts.append("</svg>")
    return "".join(parts)


def _curve_chart(curve: list[dict], best: int | None) -> str:
    """Dev recall and drift per epoch (left axis, %), loss (right axis, scaled)."""
    w, h, pad = 560, 240, 40
    n = max(len(curve), 2)
    x = lambda e: pad + (w - 2 * pad) * (e - 1) / (n - 1)  # noqa: E731
    y = lambda v: h - pad - (h - 2 * pad) * v  # noqa: E731
    losses = [e["loss"] for e in curve if e["loss"] is not None]
    top = max(losses) if losses else 1.0
    series = [("dev recall", "recall", [e["dev_recall"] for e in curve]), ("drift", "drift", [e["drift"] for e in curve]),
              ("loss (scaled)", "loss", [(e["loss"] or 0) / top for e in curve])]
    parts = [f'<svg viewBox="0 0 {w} {h}" width="100%" role="img" aria-label="training curve">',
             f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" class="axis"/>',
             f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" class="axis"/>']
    for e in curve:
        parts.append(f'<text x="{x(e["epoch"]):.1f}" y="{h - pad + 16}" class="tick">{e["epoch"]}</text>')
    for v in (0, 0.5, 1):
        parts.append(f'<text x="{pad - 6}" y="{y(v) + 4:.1f}" class="label">{int(v * 100)}%</text>')
    for label, cls, values in series:
        pts = " ".join(f"{x(e['epoch']):.1f},{y(v):.1f}" for e, v in zip(curve, values))
        parts.append(f'<polyline points="{pts}" class="line {cls}"><title>{label}</title></polyline>')
    if best is not None:
        parts.append(f'<line x1="{x(best):.1f}" y1="{pad}" x2="{x(best):.1f}" y2="{h - pad}" class="best"/>'
                     f'<text x="{x(best) + 4:.1f}" y="{pad + 10}" class="val">kept epoch {best}</text>')
    legend = "".join(f'<tspan class="{cls}-t">■ {label}  </tspan>' for label, cls, _ in series)
    parts.append(f'<text x="{pad}" y="{pad - 14}" class="val">{legend}</text></svg>')
    return "".join(parts)


CSS = """
body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:980px;color:#222;padding:0 1rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem}
table{border-collapse:collapse;width:100%;font-size:13px}td,th{border-bottom:1px solid #ddd;padding:4px 6px;text-align:left;vertical-align:top}
.grid{stroke:#eee}.axis{stroke:#999}.tick{font-size:11px;text-anchor:middle;fill:#666}
.label{font-size:12px;text-anchor:end;fill:#333}.val{font-size:11px;fill:#333}
.before{fill:#9aa9bd}.after{fill:#2f6fdb}.ci{stroke:#111;stroke-width:1.5}
.line{fill:none;stroke-width:2.5}.recall{stroke:#2f6fdb}.drift{stroke:#d9534f}.loss{stroke:#999;stroke-dasharray:4 3}
.recall-t{fill:#2f6fdb}.drift-t{fill:#d9534f}.loss-t{fill:#999}.best{stroke:#2a2;stroke-dasharray:3 3}
.legend span{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;vertical-align:middle}
.missed{color:#b00;font-weight:600}
"""


def render_html(report: dict) -> str:
    e = html.escape
    fact_rows = []
    for fact_id, f in report["facts"].items():
        cells = "".join(f"<td>{fact_cell(f, side, kind)}</td>" for kind in ("trained", "heldout") for side in ("before", "after"))
        fact_rows.append(f"<tr><td>{e(fact_id)}</td><td>{e(f['answer_key'])}</td>{cells}</tr>")
    summary = "".join(
        f"<tr><td>{e(LABELS[n])}</td><td>{e(fmt_share(report['before'].get(n)))}</td>"
        f"<td>{e(fmt_share((report.get('after') or {}).get(n)))}</td></tr>" for n in metric_names(report))
    regressions = "".join(
        f"<tr><td>{e(r['kind'])}</td><td>{e(r['question'])}</td><td>{e(r['before'])}</td><td>{e(r['after'])}</td></tr>"
        for r in report.get("regressions", []))
    missed = f'<p class="missed">Missed bounds: {e("; ".join(report["missed"]))}</p>' if report.get("missed") else ""
    curve = ""
    if report.get("curve"):
        curve = f"<h2>Training curve</h2>{_curve_chart(report['curve'], report.get('best_epoch'))}"
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>factinject report: {e(report['run'])}</title><style>{CSS}</style></head><body>
<h1>factinject report: {e(report['run'])}</h1>
<p>Base model <code>{e(report['model']['base'])}</code>; tuned <code>{e(str(report['model'].get('tuned') or 'not trained yet'))}</code>;
probe backend {e(report['backend'])}. Bars: before (grey) and after (blue); whiskers: 95% Wilson intervals.</p>
{missed}
<h2>Before and after</h2>{_bar_chart(report)}
<table><tr><th>metric</th><th>before</th><th>after</th></tr>{summary}</table>
{curve}
<h2>Per fact</h2><table><tr><th>fact</th><th>key</th><th>trained before</th><th>trained after</th>
<th>held-out before</th><th>held-out after</th></tr>{''.join(fact_rows)}</table>
<h2>Worst regressions</h2><table><tr><th>kind</th><th>question</th><th>base answer</th><th>tuned answer</th></tr>
{regressions or '<tr><td colspan="4">none</td></tr>'}</table>
{_agreement_html(report)}
</body></html>
"""


def _agreement_html(report: dict, limit: int = 50) -> str:
    agreement = report.get("engine_agreement")
    if not agreement:
        return ""
    e = html.escape
    ours, theirs = agreement["engine"], agreement["reference"]
    rows = "".join(f"<tr><td>{e(label)}</td><td>{e(fmt_share(m))}</td></tr>" for label, m in agreement["models"].items())
    differ = [(label, d) for label, m in agreement["models"].items() for d in m["disagreements"]][:limit]
    diff_rows = "".join(f"<tr><td>{e(label)}</td><td>{e(d['question'])}</td><td>{e(d[ours])}</td><td>{e(d[theirs])}</td></tr>"
                        for label, d in differ)
    return (f"<h2>Engine agreement ({e(ours)} vs {e(theirs)})</h2><table><tr><th>model</th><th>identical answers</th></tr>"
            f"{rows}<tr><td>all</td><td>{e(fmt_share(agreement['overall']))}</td></tr></table>"
            f"<table><tr><th>model</th><th>question</th><th>{e(ours)}</th><th>{e(theirs)}</th></tr>"
            f"{diff_rows or '<tr><td colspan=4>none</td></tr>'}</table>")
