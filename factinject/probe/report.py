"""Reports for a person: report.md and a self-contained report.html with charts.

Pure functions from the report dict (the content of report.json) to text. The
charts are inline SVG: no plotting library, no network, opens in any browser.
"""

from __future__ import annotations

import html

from factinject.probe.metrics import BY_NAME, LABELS, metric_names


def fmt_share(m: dict | None) -> str:
    if not m or m.get("share") is None:
        return "–"
    lo, hi = m["ci95"]
    return f"{100 * m['share']:.1f}% ({m['count']}/{m['n']}, 95% CI {100 * lo:.0f}–{100 * hi:.0f}%)"


def fact_cell(fact: dict, side: str, kind: str) -> str:
    """'3/6' for one fact's recall on one side (before/after) and kind (trained/heldout)."""
    m = fact.get(side, {}).get(f"recall_{kind}")
    return f"{m['count']}/{m['n']}" if m else "–"


KIND_NAMES = {"trained": "trained", "heldout": "held-out", "exam": "exam", "locality": "locality",
              "retention": "retention", "bleed": "bleed", "misspelling": "misspelling", "neighbour": "neighbour",
              "portability": "portability"}
UPDATE_HEAD = ("fact", "new value", "replaces", "new value before", "after", "old value before", "after",
               "portability before", "after")


def bound_text(name: str, bound: float) -> str:
    return f"{'>=' if BY_NAME[name].higher_is_better else '<='} {bound}"


def _count(m: dict | None) -> str:
    return f"{m['count']}/{m['n']}" if m else "–"


def update_cells(row: dict) -> list[str]:
    """One updated fact: its values, then new, old and portability counts before and after."""
    replaces = f"{row['old_value']} ({'stated' if row['stated'] else 'found in the base answers'})"
    cells = [row["fact_id"], row["new_value"], replaces]
    for what in ("new", "old", "portability"):
        cells += [_count(row.get(side, {}).get(what)) for side in ("before", "after")]
    return cells
MISS_TITLES = {"heldout": "Held-out questions", "exam": "Your exam"}


def _md(text) -> str:
    """A table cell: no pipes or line breaks from model answers."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def fact_kinds(report: dict) -> list[str]:
    """Columns of the per-fact table: trained and held-out, plus exam when the report has one."""
    return ["trained", "heldout"] + (["exam"] if "exam" in report["before"] else [])


def counts_sentence(counts: dict) -> str:
    """{'heldout': 36, 'trained': 263} -> 'Prompts probed: 263 trained, 36 held-out.'"""
    order = [k for k in KIND_NAMES if k in counts] + sorted(set(counts) - set(KIND_NAMES))
    return "Prompts probed: " + ", ".join(f"{counts[k]:,} {KIND_NAMES.get(k, k)}" for k in order) + "."


def misses_model(report: dict) -> str:
    return f"the {report['model']['tuned']} model" if report.get("after") else "the base model"


def exam_sentence(report: dict) -> str | None:
    if not report.get("exam"):
        return None
    return "Exam: " + "; ".join(f"`{e['path']}` ({e['questions']} questions, sha256 {e['sha256'][:12]})"
                                for e in report["exam"]) + "."


def curve_reason(report: dict) -> str:
    """'Kept epoch 4 of 5; training stopped: reached max_epochs 5.'"""
    best, curve = report.get("best_epoch"), report.get("curve") or []
    if best is None:
        return ""
    text = f"Kept epoch {best} of {len(curve)} (chosen on dev recall and drift: docs/recipes.md, `stop`)"
    return text + (f"; training stopped: {report['stop_reason']}." if report.get("stop_reason") else ".")


def parity_lines(report: dict) -> list[str]:
    """The merged export's two parity figures (export/stage.py), as sentences."""
    parity = report.get("export_parity")
    if not parity:
        return []
    if parity.get("engine") == "llama.cpp":  # the GGUF export's check (export/stage.py, gguf_parity)
        return [f"GGUF parity: llama.cpp on the {report['model'].get('tuned_precision')} file against the merged "
                f"model: {parity['identical']}/{parity['n']} identical greedy answers, the same verdict on "
                f"{fmt_share(parity['verdicts'])} of the fact questions (recall {fmt_share(parity['recall_merged'])} "
                f"merged, {fmt_share(parity['recall_gguf'])} GGUF)."]
    exact, quant = parity["exactness"], parity.get("quantization")
    weights = exact.get("weights") or {}
    lines = [f"Exactness: the merge against the adapter on the same 16-bit base: {exact['identical']}/{exact['n']} "
             f"identical greedy answers" + (f", {exact['near_ties']} more apart only at a near-tie" if exact["near_ties"]
                                            else "")
             + f"; largest logit difference {exact['max_logit_diff']:.3g} ({exact['dtype']} weights, "
               f"{exact['arithmetic']} arithmetic)"
             + (f"; merged weights within {weights['max_ulps']:.3g} units of {exact['dtype']} precision of PEFT's "
                f"merge" if weights else "") + "."]
    if quant:
        lines.append(f"Quantization: the adapter on the 4-bit base it was trained on against this 16-bit merge: "
                     f"{fmt_share(quant['agreement'])} identical answers; fact recall {fmt_share(quant['recall_4bit'])} "
                     f"(4-bit) and {fmt_share(quant['recall_merged'])} (merged), a drop of {quant['recall_drop']:.1%} "
                     f"(bound {quant['max_recall_drop']:.0%}).")
    return lines


def trained_by(report: dict) -> str:
    """'; trained by the unsloth engine (Unsloth 2026.10.9)', or nothing before training."""
    engine = report.get("train_engine")
    if not engine:
        return ""
    version = f" {engine['version']}" if engine.get("version") else ""
    return f"; trained by the {engine['name']} engine ({engine['library']}{version})"


def locality_sentence(report: dict) -> str:
    """What the teacher-forced locality row measured, with its KL divergence."""
    m = (report.get("after") or {}).get("locality_tokens")
    if not m or m.get("share") is None:
        return ""
    return (f"Locality, teacher-forced: the tuned model still ranks first {m['count']} of the {m['n']} tokens of "
            f"the base model's {m['answers']} answers to unrelated prompts; KL(base || tuned) "
            f"{m['kl_per_token']:.4f} nats per token."
            + (" Measured on the adapter in transformers, which the GGUF's parity check stands for."
               if report["model"].get("tuned") == "gguf" else ""))


def render_markdown(report: dict) -> str:
    after = report.get("after")
    tuned = report["model"].get("tuned") or "not trained yet"
    models = (f"Base model: `{report['model']['base']}`; tuned: `{tuned}`{trained_by(report)}; probe backend: "
              f"{report['backend']}.")
    lines = [f"# factinject report: {report['run']}", "", models, ""]
    if report.get("next_step"):
        lines += [f"> **Not trained yet.** {report['next_step']}", ""]
    if exam_sentence(report):
        lines += [exam_sentence(report), ""]
    bounds = report.get("thresholds") or {}
    header = ["metric", "before", "after"] + (["bound"] if bounds else [])
    lines += ["## Summary", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in metric_names(report):
        cells = [LABELS[name], fmt_share(report["before"].get(name)), fmt_share(after.get(name)) if after else "–"]
        if bounds:
            bound = bounds.get(name)
            cells.append("" if bound is None else bound_text(name, bound))
        lines.append("| " + " | ".join(cells) + " |")
    locality = locality_sentence(report)
    if locality:
        lines += ["", locality]
    if report.get("missed"):
        lines += ["", "**Missed bounds:** " + "; ".join(report["missed"])]
    if parity_lines(report):
        lines += ["", "## Merged export parity", ""] + [f"- {line}" for line in parity_lines(report)]
    kinds = fact_kinds(report)
    columns = [f"{KIND_NAMES[k]} {side}" for k in kinds for side in ("before", "after")]
    lines += ["", "## Per fact", "", "| fact | key | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
    for fact_id, f in report["facts"].items():
        cells = " | ".join(fact_cell(f, side, kind) for kind in kinds for side in ("before", "after"))
        lines.append(f"| {fact_id} | {_md(f['answer_key'])} | {cells} |")
    if report.get("updates"):
        lines += ["", "## Updates", "", "Facts that replace a value the base model gave (old value: answers that name it "
                  "and not the new one; trained and held-out questions together).", "",
                  "| " + " | ".join(UPDATE_HEAD) + " |", "|" + "---|" * len(UPDATE_HEAD)]
        lines += ["| " + " | ".join(_md(c) for c in update_cells(r)) + " |" for r in report["updates"]]
    for kind, groups in (report.get("misses") or {}).items():
        total = sum(len(g) for g in groups.values())
        lines += ["", f"## Misses: {MISS_TITLES.get(kind, kind)} ({total}, answers of {misses_model(report)})"]
        for fact_id, rows in groups.items():
            lines += ["", f"### {fact_id or 'not matched to a fact'} ({len(rows)})", "",
                      "| question | key | answer |", "|---|---|---|"]
            lines += [f"| {_md(r['question'])} | {_md(r['answer_key'])} | {_md(r['answer'])} |" for r in rows]
    if report.get("regressions"):
        lines += ["", "## Worst regressions", "", "| kind | question | base answer | tuned answer |", "|---|---|---|---|"]
        for r in report["regressions"]:
            lines.append("| " + " | ".join(_md(c) for c in (r["kind"], r["question"], r["before"], r["after"])) + " |")
    if report.get("moved_most"):
        lines += ["", "## Answers moved most (teacher-forced)", "",
                  "The base model's own answers read through the tuned model: tokens it still ranks first, and "
                  "the KL divergence from the base per token (nats), largest first.", "",
                  "| set | question | tokens kept | KL per token |", "|---|---|---|---|"]
        for r in report["moved_most"][:10]:
            lines.append(f"| {r['set']} | {_md(r['question'])} | {r['kept']}/{r['tokens']} | {r['kl_per_token']:.3f} |")
    if report.get("curve"):
        lines += ["", "## Training curve", "", "| epoch | loss | dev recall | drift |", "|---|---|---|---|"]
        for e in report["curve"]:
            loss = "–" if e["loss"] is None else f"{e['loss']:.4f}"
            drift = f"{e['drift_changed']}/{e['drift_n']}" + (" tokens" if e.get("drift_unit") == "tokens" else "")
            lines.append(f"| {e['epoch']} | {loss} | {e['dev_correct']}/{e['dev_n']} | {drift} |")
        lines.append(f"\n{curve_reason(report)}")
    lines += agreement_lines(report)
    lines += ["", counts_sentence(report.get("counts") or {}), ""]
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
    # Room on the left for the longest label (about 6.6 px a character at 12 px), so none is cut off.
    row_h, width = 46, 420
    left = max(120, round(6.6 * max((len(LABELS[n]) for n in names), default=10)) + 16)
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


def _curve_chart(curve: list[dict], best: int | None, max_drift: float | None = None) -> str:
    """Dev recall and drift per epoch (left axis, %), loss scaled to its maximum; the
    max-drift bound as a dashed line and the kept epoch as a dotted one."""
    w, h = 600, 270
    left, right, top, bottom = 58, 24, 40, 46
    n = max(len(curve), 1)

    def x(epoch: float) -> float:  # the axis runs from the start of training (0) to the end of the last epoch
        return left + (w - left - right) * epoch / n

    def y(v: float) -> float:
        return h - bottom - (h - top - bottom) * v

    # The loss at every logging step (an epoch's steps spread over it), so that a run of one
    # or two epochs still shows how training went; older records have one loss an epoch.
    loss_points = [(e["epoch"] - 1 + (i + 1) / len(e["step_losses"]), v) for e in curve
                   for i, v in enumerate(e.get("step_losses") or [])]
    if not loss_points:
        loss_points = [(e["epoch"], e["loss"]) for e in curve if e["loss"] is not None]
    peak = max((v for _, v in loss_points), default=1.0) or 1.0
    series = [("dev recall", "recall", [(e["epoch"], e["dev_recall"]) for e in curve]),
              ("drift", "drift", [(e["epoch"], e["drift"]) for e in curve]),
              ("loss (scaled to its maximum)", "loss", [(at, v / peak) for at, v in loss_points])]
    parts = [f'<svg viewBox="0 0 {w} {h}" width="100%" role="img" aria-label="training curve">',
             f'<line x1="{left}" y1="{h - bottom}" x2="{w - right}" y2="{h - bottom}" class="axis"/>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{h - bottom}" class="axis"/>',
             f'<text x="{(left + w - right) / 2:.1f}" y="{h - 8}" class="tick">epoch</text>',
             (f'<text transform="translate(14 {(top + h - bottom) / 2:.1f}) rotate(-90)" class="tick">'
              "dev recall and drift (%)</text>")]
    for e in curve:
        parts.append(f'<text x="{x(e["epoch"]):.1f}" y="{h - bottom + 16}" class="tick">{e["epoch"]}</text>')
    for v in (0, 0.25, 0.5, 0.75, 1):
        parts.append(f'<line x1="{left}" y1="{y(v):.1f}" x2="{w - right}" y2="{y(v):.1f}" class="grid"/>'
                     f'<text x="{left - 6}" y="{y(v) + 4:.1f}" class="label">{int(v * 100)}%</text>')
    if max_drift is not None:
        yy = y(max_drift)
        parts.append(f'<line x1="{left}" y1="{yy:.1f}" x2="{w - right}" y2="{yy:.1f}" class="bound"/>'
                     f'<text x="{w - right - 4}" y="{yy - 4:.1f}" class="val" text-anchor="end">'
                     f"max drift {100 * max_drift:.0f}%</text>")
    for label, cls, points in series:
        pts = " ".join(f"{x(at):.1f},{y(v):.1f}" for at, v in points)
        parts.append(f'<polyline points="{pts}" class="line {cls}"><title>{label}</title></polyline>')
        if cls != "loss":  # measured once an epoch: a dot each, visible with a single epoch too
            parts += [f'<circle cx="{x(at):.1f}" cy="{y(v):.1f}" r="3" class="dot {cls}"/>' for at, v in points]
    if best is not None:
        # The label goes on the side of the line with room for it, so it is never cut off.
        anchor, dx = ("end", -4) if x(best) > (left + w - right) / 2 else ("start", 4)
        parts.append(f'<line x1="{x(best):.1f}" y1="{top}" x2="{x(best):.1f}" y2="{h - bottom}" class="best"/>'
                     f'<text x="{x(best) + dx:.1f}" y="{top + 12}" class="val" text-anchor="{anchor}">'
                     f"kept epoch {best}</text>")
    legend = "".join(f'<tspan class="{cls}-t">■ {label}  </tspan>' for label, cls, _ in series)
    parts.append(f'<text x="{left}" y="{top - 18}" class="val">{legend}</text></svg>')
    return "".join(parts)


CSS = """
body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:980px;color:#222;padding:0 1rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem}
table{border-collapse:collapse;width:100%;font-size:13px}td,th{border-bottom:1px solid #ddd;padding:4px 6px;text-align:left;vertical-align:top}
.grid{stroke:#eee}.axis{stroke:#999}.tick{font-size:11px;text-anchor:middle;fill:#666}
.label{font-size:12px;text-anchor:end;fill:#333}.val{font-size:11px;fill:#333}
.before{fill:#9aa9bd}.after{fill:#2f6fdb}.ci{stroke:#111;stroke-width:1.5}
.line{fill:none;stroke-width:2.5}.dot.recall{fill:#2f6fdb}.dot.drift{fill:#d9534f}.recall{stroke:#2f6fdb}.drift{stroke:#d9534f}.loss{stroke:#999;stroke-dasharray:4 3}
.recall-t{fill:#2f6fdb}.drift-t{fill:#d9534f}.loss-t{fill:#999}.best{stroke:#2a2;stroke-dasharray:3 3}
.bound{stroke:#d9534f;stroke-dasharray:6 4;stroke-width:1}
.note{background:#fff6db;border-left:4px solid #e0a800;padding:.6rem .9rem}
details{margin:.4rem 0}summary{cursor:pointer;font-weight:600}
.legend span{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;vertical-align:middle}
.missed{color:#b00;font-weight:600}
"""


def _misses_html(report: dict) -> str:
    e = html.escape
    parts = []
    for kind, groups in (report.get("misses") or {}).items():
        total = sum(len(g) for g in groups.values())
        parts.append(f"<h2>Misses: {e(MISS_TITLES.get(kind, kind))} ({total})</h2>"
                     f"<p>Every {e(KIND_NAMES.get(kind, kind))} question whose answer lacks the key, with the answer of "
                     f"{e(misses_model(report))}, grouped per fact. All answers: <code>reports/answers.jsonl</code>.</p>")
        for fact_id, rows in groups.items():
            body = "".join(f"<tr><td>{e(r['question'])}</td><td>{e(r['answer_key'])}</td><td>{e(r['answer'])}</td></tr>"
                           for r in rows)
            parts.append(f"<details open><summary>{e(fact_id or 'not matched to a fact')} ({len(rows)})</summary>"
                         f"<table><tr><th>question</th><th>key</th><th>answer</th></tr>{body}</table></details>")
    return "".join(parts)


def render_html(report: dict) -> str:
    e = html.escape
    kinds = fact_kinds(report)
    fact_rows = []
    for fact_id, f in report["facts"].items():
        cells = "".join(f"<td>{fact_cell(f, side, kind)}</td>" for kind in kinds for side in ("before", "after"))
        fact_rows.append(f"<tr><td>{e(fact_id)}</td><td>{e(f['answer_key'])}</td>{cells}</tr>")
    fact_head = "".join(f"<th>{KIND_NAMES[k]} {side}</th>" for k in kinds for side in ("before", "after"))
    bounds = report.get("thresholds") or {}

    def bound_cell(name: str) -> str:
        if not bounds:
            return ""
        b = bounds.get(name)
        return f"<td>{'' if b is None else e(bound_text(name, b))}</td>"

    summary = "".join(
        f"<tr><td>{e(LABELS[n])}</td><td>{e(fmt_share(report['before'].get(n)))}</td>"
        f"<td>{e(fmt_share((report.get('after') or {}).get(n)))}</td>{bound_cell(n)}</tr>" for n in metric_names(report))
    regressions = "".join(
        f"<tr><td>{e(r['kind'])}</td><td>{e(r['question'])}</td><td>{e(r['before'])}</td><td>{e(r['after'])}</td></tr>"
        for r in report.get("regressions", []))
    missed = f'<p class="missed">Missed bounds: {e("; ".join(report["missed"]))}</p>' if report.get("missed") else ""
    note = f'<p class="note"><b>Not trained yet.</b> {e(report["next_step"])}</p>' if report.get("next_step") else ""
    exam = f"<p>{e(exam_sentence(report))}</p>" if exam_sentence(report) else ""
    curve = ""
    if report.get("curve"):
        curve = (f"<h2>Training curve</h2>{_curve_chart(report['curve'], report.get('best_epoch'), report.get('max_drift'))}"
                 f"<p>{e(curve_reason(report))}</p>")
    tuned = report["model"].get("tuned") or "not trained yet"
    locality = f"<p>{e(locality_sentence(report))}</p>" if locality_sentence(report) else ""
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>factinject report: {e(report['run'])}</title><style>{CSS}</style></head><body>
<h1>factinject report: {e(report['run'])}</h1>
<p>Base model <code>{e(report['model']['base'])}</code>; tuned <code>{e(str(tuned))}</code>{e(trained_by(report))};
probe backend {e(report['backend'])}. Bars: before (grey) and after (blue); whiskers: 95% Wilson intervals.</p>
{note}{exam}{missed}
<h2>Before and after</h2>{_bar_chart(report)}
<table><tr><th>metric</th><th>before</th><th>after</th>{'<th>bound</th>' if bounds else ''}</tr>{summary}</table>
{locality}
{"<h2>Merged export parity</h2><ul>" + "".join(f"<li>{e(t)}</li>" for t in parity_lines(report)) + "</ul>"
 if parity_lines(report) else ""}
{curve}
<h2>Per fact</h2><table><tr><th>fact</th><th>key</th>{fact_head}</tr>{''.join(fact_rows)}</table>
{_updates_html(report)}{_misses_html(report)}
<h2>Worst regressions</h2><table><tr><th>kind</th><th>question</th><th>base answer</th><th>tuned answer</th></tr>
{regressions or '<tr><td colspan="4">none</td></tr>'}</table>
{_moved_html(report)}{_agreement_html(report)}
<p>{e(counts_sentence(report.get('counts') or {}))}</p>
</body></html>
"""


def _moved_html(report: dict) -> str:
    rows = "".join(f"<tr><td>{html.escape(r['set'])}</td><td>{html.escape(r['question'])}</td>"
                   f"<td>{r['kept']}/{r['tokens']}</td><td>{r['kl_per_token']:.3f}</td></tr>"
                   for r in (report.get("moved_most") or [])[:10])
    if not rows:
        return ""
    return ("<h2>Answers moved most (teacher-forced)</h2><p>The base model's own answers read through the tuned "
            "model: tokens it still ranks first, and the KL divergence from the base per token (nats).</p>"
            f"<table><tr><th>set</th><th>question</th><th>tokens kept</th><th>KL per token</th></tr>{rows}</table>")


def _updates_html(report: dict) -> str:
    if not report.get("updates"):
        return ""
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in UPDATE_HEAD)
    rows = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in update_cells(r)) + "</tr>" for r in report["updates"])
    return (f"<h2>Updates</h2><p>Facts that replace a value the base model gave (old value: answers that name it and "
            f"not the new one; trained and held-out questions together).</p><table><tr>{head}</tr>{rows}</table>")


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


def print_summary(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"probe: {report['run']}", title_justify="left")
    for col in ("metric", "before", "after"):
        table.add_column(col)
    for name in metric_names(report):
        table.add_row(LABELS[name], fmt_share(report["before"].get(name)), fmt_share((report.get("after") or {}).get(name)))
    Console(width=120).print(table)
