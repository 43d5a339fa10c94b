"""The expand stage's I/O edge: write an expansion into a run's data/ and manifest.

`expander.expand_sheets` is pure; this writes its rows whole (temporary folder and
rename) and records the sheets, counts, hashes and facts in the manifest.
"""

from __future__ import annotations

import hashlib
import json

from factinject.errors import FactinjectError
from factinject.expand.expander import SPLITS, ExpandConfig, Expansion, expand_sheets
from factinject.rundir.files import Run, atomic_dir, set_current
from factinject.rundir.lock import run_lock
from factinject.rundir.owned import check_run_folder
from factinject.rundir.record import ExpandRecord
from factinject.sheet.factsheet import read_sheet


def write_expansion(run: Run, expansion: Expansion, sheets, cfg: ExpandConfig, *, force: bool) -> dict:
    """Write data/ whole (temp dir + rename) and record it in the manifest."""
    data_texts = {split: "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in expansion.split(split)) for split in SPLITS}
    hashes = {f"data/{s}.jsonl": _sha(t) for s, t in data_texts.items()}
    # What later stages need to know about each fact (probe builds bleed prompts from it).
    facts = {f.id: {"subject": sub.name, "aliases": sub.aliases, "kind": sub.kind, "relation": f.relation,
                    "statement": f.statement, "answer_key": f.answer_key, "polarity": f.polarity,
                    "source": f"{f.path}:{f.line}", **update_info(sub, f)}
             for sheet in sheets for sub in sheet.subjects for f in sub.facts}
    if (run.path / "adapter").exists() and not force:
        earlier = run.record().expand
        if hashes != (earlier.files if earlier else None):
            raise FactinjectError(
                "this run already has a trained adapter, and the new data differs from what it was trained on",
                where=run.path, fix="expand into a new run with --run exports/<new-name>, or pass --force to replace the data",
            )
    record = ExpandRecord(
        sheets=[{"path": s.path, "sha256": s.sha256, "facts": len(s.facts)} for s in sheets],
        config=cfg.__dict__,
        counts={"facts": len(expansion.stats), **{s: len(expansion.split(s)) for s in SPLITS}},
        files=hashes,
        facts={s.fact_id: {**facts[s.fact_id], "families": s.families, "rows": dict(s.rows),
                           "near_duplicates_removed": s.near_duplicates_removed} for s in expansion.stats},
    )
    with atomic_dir(run.data_dir, then=lambda: run.write_section(record)) as tmp:  # data and its record together
        for split, text in data_texts.items():
            (tmp / f"{split}.jsonl").write_text(text, encoding="utf-8")
    return record.to_dict()


def update_info(subject, fact) -> dict:
    """What the probe needs to measure an update: the value replaced (None: a new fact, or
    one the probe may find the base model knowing otherwise), the subject's neighbours and
    the fact's portability questions (never trained)."""
    return {"replaces": fact.replaces, "neighbours": list(subject.neighbours),
            "portability": [{"question": q.question, "answer_key": q.answer_key, "source": f"{q.path}:{q.line}"}
                            for q in subject.portability if q.fact_id == fact.id]}


def expand_into_run(sheet_paths, run: Run, cfg: ExpandConfig, *, force: bool) -> Expansion:
    """Parse every sheet (all errors before any write), expand, write data/ and the
    manifest, and make this the current run. Shared by `expand` and `run`."""
    parsed = [read_sheet(p) for p in sheet_paths]
    expansion = expand_sheets(parsed, cfg)
    check_run_folder(run.path)  # never into a folder of the user's
    with run_lock(run.path, "expand"):  # only now: a sheet with errors must not even create the run folder
        write_expansion(run, expansion, parsed, cfg, force=force)
        set_current(run)
    return expansion


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
