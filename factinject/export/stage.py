"""The export stage: the adapter as a self-contained folder, or a merged model.

A merged export is a plain transformers model folder: 16-bit safetensors (bf16 by
default, `export.dtype`), sharded with an index, merged tensor by tensor
(backends/merge.py) so that peak memory is about one tensor plus the adapter; the
tokenizer with the exact chat template used in training; a generation config whose
eos covers the end-of-turn token; a model card. It is written to a temporary folder,
checked for parity, and only then renamed into place.

Parity, two figures (both in the manifest, the model card and the probe report):
  exactness     the merge against the adapter on the same 16-bit base, same engine:
                identical greedy answers (must be 100 %) and the largest logit difference;
  quantization  the adapter on the 4-bit base as trained against the 16-bit merge:
                answer agreement and fact recall of each; a drop in recall larger than
                `export.max_recall_drop` is an error.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from factinject import controls
from factinject.engines.choice import check_device
from factinject.engines.process import run_job
from factinject.engines.records import Load, MergeJob, ModelUnderTest, ParityJob
from factinject.errors import FactinjectError
from factinject.models.base import ModelRef, load_tokenizer, template_sha256
from factinject.models.checkpoint import (  # reads headers only, no torch
    FLOAT_DTYPES,
    Checkpoint,
    nbytes,
)
from factinject.models.targets import base_weights
from factinject.rundir.files import Run, atomic_dir, read_split, sha256_file
from factinject.rundir.guard import DISK_FULL, disk_full, gigabytes
from factinject.rundir.owned import check_export_target, write_export_marker
from factinject.rundir.record import ExportRecord, MergedExport, RunRecord
from factinject.scoring import contains_key, same_answer, share

PARITY_BOUND = 1.0  # every answer as the adapter's on the same 16-bit base (or apart only at a near-tie)
PARITY_PROMPTS = 160  # fact questions first, then unrelated prompts, up to this many


def export_target(run: Run, merged: bool, out: Path | None = None) -> Path:
    if out is not None:
        return Path(out)
    return run.path / "merged" if merged else run.path / "export" / "adapter"


def disk_full_fix(target: Path, need: int | None) -> str:

    amount = f"about {gigabytes(need)}" if need else "some space"
    return (f"free {amount} on the disk of {target.parent} and run the export again, or write it to another disk "
            "with --out DIR; nothing was exported and any previous export is intact")


def ensure_trained(run: Run) -> RunRecord:
    record = run.record()
    if not (run.path / "adapter" / "adapter_config.json").exists() or not record.train:
        raise FactinjectError("this run has no trained adapter", where=run.path,
                              fix="run `factinject train` first (or pass --run)")
    run.check_adapter(record)
    return record


def refuse_overwrite(run: Run, record: RunRecord, target: Path, force: bool) -> None:
    """Only an export factinject wrote may be replaced, and only with --force (rundir/owned.py).
    The manifest's record of an earlier export there (one written before exports carried
    their marker) also vouches for it."""
    exported = record.export or ExportRecord()
    earlier = [(run.path / "export" / "adapter", e["path"], e["files"]) for e in [exported.adapter] if e]
    earlier += [(run.path / "merged", e.path, e.files) for e in [exported.merged] if e]
    here = target.resolve()
    recorded = next((files for default, path, files in earlier
                     if here in (Path(path).resolve(), default.resolve())), None)
    check_export_target(target, force, recorded)


def model_card(record: RunRecord, base_name: str, parity: dict | None) -> str:
    facts = record.expand.facts if record.expand else {}
    lines = [f"# {record.name or 'factinject'} (factinject export)", "",
             f"Base model: `{base_name}`. LoRA adapter trained by factinject {record.factinject_version} "
             f"({record.train.backend} backend, kept epoch {record.train.best_epoch}), merged into the base weights.",
             "", "## Injected facts", "", "| fact | statement | answer key |", "|---|---|---|"]
    for fact_id, f in facts.items():
        lines.append(f"| {fact_id} | {f.get('statement', '')} | {f.get('answer_key', '')} |")
    probe = record.probe
    if probe and probe.after:
        lines += ["", "## Latest probe (tuned model)", "", "| metric | share | count |", "|---|---|---|"]
        for name, m in probe.after.items():
            if m and m.get("share") is not None:
                lines.append(f"| {name} | {100 * m['share']:.1f}% | {m['count']}/{m['n']} |")
    if parity:
        exact, quant = parity["exactness"], parity.get("quantization")
        lines += ["", f"Parity with the adapter on the same 16-bit base: {exact['identical']}/{exact['n']} identical "
                      f"greedy answers; largest logit difference {exact['max_logit_diff']:.2e}."]
        if quant:
            lines += ["", f"Against the adapter on the 4-bit base it was trained on: {quant['agreement']['count']}/"
                          f"{quant['agreement']['n']} identical answers; fact recall {quant['recall_4bit']['count']}/"
                          f"{quant['recall_4bit']['n']} (4-bit) and {quant['recall_merged']['count']}/"
                          f"{quant['recall_merged']['n']} (this merge)."]
    lines += ["", "Use the tokenizer's chat template from this folder: it is the one the facts were trained with.", ""]
    return "\n".join(lines)


def parity_prompts(run: Run, model_name: str) -> list[dict]:
    """Fact questions first (with their keys, for recall), then unrelated prompts: up to PARITY_PROMPTS."""

    prompts: dict[str, dict] = {}
    for split in ("train", "test"):
        for r in read_split(run, split):
            prompts.setdefault(r["messages"][0]["content"], {"question": r["messages"][0]["content"],
                                                              "answer_key": r["answer_key"]})
    for q in controls.control_pools(model_name)["locality"]:
        prompts.setdefault(q, {"question": q, "answer_key": None})
    return list(prompts.values())[:PARITY_PROMPTS]


# Near-ties: greedy decoding follows the larger of two logits, and where two tokens are
# closer than the rounding of the weights and the arithmetic carried through the model,
# either answer is the same model's. The margin allowed, relative to the largest logit,
# by (export dtype, arithmetic). A wrong merge shows in the weights themselves
# (compare_weights), and wrong tokenizer or generation files in answers that part at
# clear margins.
TIE_MARGIN = {("float32", "float32"): 1e-4, ("bfloat16", "float32"): 2 ** -6, ("float16", "float32"): 2 ** -9,
              ("bfloat16", "bfloat16"): 2 ** -3, ("float16", "float16"): 2 ** -6}
MAX_WEIGHT_ULPS = 1.0  # our merge and PEFT's may differ in the last bit: one rounds once, the other twice


def parity_figures(prompts: list[dict], result: dict, dtype: str, max_recall_drop: float) -> dict:
    """Both parity figures from the parity job's answers ('adapter-16bit', 'merged' and,
    for 4-bit runs, 'adapter-4bit') and its token-level comparison of the first two."""

    answers = result["answers"]
    questions = [p["question"] for p in prompts]

    def compare(a: list[str], b: list[str], label_a: str, label_b: str) -> tuple[int, list[dict]]:
        same = [same_answer(x, y) for x, y in zip(a, b)]
        differ = [{"question": q, label_a: x, label_b: y} for q, x, y, s in zip(questions, a, b, same) if not s]
        return sum(same), differ

    identical, differ = compare(answers["adapter-16bit"], answers["merged"], "adapter", "merged")
    arithmetic = result["compute_dtype"]["merged"]
    tolerance = TIE_MARGIN[(dtype, arithmetic)] * (result["logit_scale"] or 0.0)
    where = {d["index"]: d for d in result["divergences"]}
    for row in differ:
        d = where.get(questions.index(row["question"]), {})
        row.update({k: d.get(k) for k in ("position", "margin_first", "margin_second")})
    for r in differ:
        r["near_tie"] = (r["margin_first"] is not None and r["margin_second"] is not None
                         and max(r["margin_first"], r["margin_second"]) <= tolerance)
    ties = sum(r["near_tie"] for r in differ)
    differ.sort(key=lambda r: r["near_tie"])  # real differences first
    figures = {"exactness": {"identical": identical, "near_ties": ties, "n": len(questions),
                             "share": (identical + ties) / len(questions),
                             "max_logit_diff": result["max_logit_diff"], "tie_margin": tolerance,
                             "dtype": dtype, "arithmetic": arithmetic, "weights": result.get("weights"),
                             "disagreements": differ[:5]},
               "quantization": None}
    if "adapter-4bit" in answers:
        facts = [i for i, p in enumerate(prompts) if p["answer_key"]]

        def recall(label: str) -> dict:
            return share(sum(contains_key(answers[label][i], prompts[i]["answer_key"]) for i in facts), len(facts))

        agree, differ4 = compare(answers["adapter-4bit"], answers["merged"], "adapter_4bit", "merged")
        four, merged = recall("adapter-4bit"), recall("merged")
        figures["quantization"] = {"agreement": share(agree, len(questions)), "recall_4bit": four,
                                   "recall_merged": merged, "recall_drop": round(four["share"] - merged["share"], 4),
                                   "max_recall_drop": max_recall_drop, "disagreements": differ4[:5]}
    return figures


def check_parity(figures: dict, run: Run) -> None:
    exact, quant = figures["exactness"], figures["quantization"]
    weights = exact["weights"]
    if weights and weights["max_ulps"] > MAX_WEIGHT_ULPS:
        raise FactinjectError(
            f"the merged weights differ from PEFT's merge of the same adapter: {weights['worst_tensor']} is "
            f"{weights['max_ulps']:.3g} units of {exact['dtype']} precision off (at most {MAX_WEIGHT_ULPS:g} allowed)",
            where=run.path / "adapter", fix="nothing was written; report this with the run's manifest.json",
        )
    if exact["share"] < PARITY_BOUND:
        raise FactinjectError(
            f"the merged model answers differently from the adapter on the same 16-bit base: {exact['identical']}/"
            f"{exact['n']} identical ({exact['near_ties']} more apart only at near-ties), largest logit difference "
            f"{exact['max_logit_diff']:.3g}; first: {exact['disagreements'][0]}",
            where=run.path / "adapter", fix="nothing was written; report this with the run's manifest.json",
        )
    if quant and quant["recall_drop"] > quant["max_recall_drop"]:
        raise FactinjectError(
            f"the 16-bit merge recalls fewer facts than the 4-bit model that was trained: "
            f"{quant['recall_merged']['count']}/{quant['recall_merged']['n']} against "
            f"{quant['recall_4bit']['count']}/{quant['recall_4bit']['n']} (a drop of {quant['recall_drop']:.1%}, "
            f"bound export.max_recall_drop {quant['max_recall_drop']:.0%})", where=run.path / "adapter",
            fix="nothing was written; merge into the original 16-bit weights (model.merge_base in the recipe), "
                "or serve the adapter on the 4-bit base (`factinject export` without --merged)",
        )


def write_export(run: Run, record: RunRecord, kind: str, target: Path, need: int | None, fill,
                 section: Callable[[dict[str, str]], ExportRecord]) -> None:
    """atomic_dir + fill(tmp) + the marker that makes it factinject's; the manifest's export
    section (`section(files)`, given the files' hashes) is written together with the swap.
    A full disk is reported against the export (and its size)."""

    try:
        with atomic_dir(target, then=lambda: run.write_section(section(files))) as tmp:
            fill(tmp)
            write_export_marker(tmp, kind, record.train.adapter_files, run.path)
            files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
    except OSError as err:
        if err.errno in DISK_FULL:  # named by the export, not by the file being copied from
            raise disk_full(OSError(err.errno, err.strerror, str(target)), target, need=need,
                            fix=disk_full_fix(target, need)) from None
        raise


def export_adapter(run: Run, *, force: bool, out: Path | None = None) -> dict:
    record = ensure_trained(run)
    target = export_target(run, merged=False, out=out)
    refuse_overwrite(run, record, target, force)
    files = list((run.path / "adapter").iterdir())

    def fill(tmp: Path) -> None:
        for item in files:
            shutil.copy2(item, tmp / item.name)
        (tmp / "README.md").write_text(model_card(record, record.train.trained_recipe().model.name, None)
                                       .replace("merged into the base weights", "as a LoRA adapter"), encoding="utf-8")

    exported = {"path": str(target), "adapter_files": record.train.adapter_files}

    def section(written: dict[str, str]) -> ExportRecord:
        exported["files"] = written
        return replace(record.export or ExportRecord(), adapter=exported)

    write_export(run, record, "adapter", target, sum(f.stat().st_size for f in files if f.is_file()), fill, section)
    return {"adapter": exported}


def export_merged(run: Run, *, force: bool, allow_pickle: bool = False, trust_remote_code: bool = False,
                  out: Path | None = None, chat_template: str | None = None) -> dict:
    """Merge shard by shard in a child process, check both parity figures, publish."""

    record = ensure_trained(run)
    target = export_target(run, merged=True, out=out)
    refuse_overwrite(run, record, target, force)
    recipe = record.train.trained_recipe()
    check_device(recipe)
    base_name = recipe.model.name
    weights = base_weights(recipe)
    ref, source = weights.trained, weights.source
    adapter_dir = run.path / "adapter"
    tokenizer = load_tokenizer(ModelRef("adapter", str(adapter_dir), True), chat_template=chat_template)
    if template_sha256(tokenizer) != record.train.base_model["chat_template_sha256"]:
        raise FactinjectError("the adapter's tokenizer template differs from the one recorded at training",
                              where=adapter_dir, fix="re-run `factinject train`")
    dtype = recipe.export.dtype
    load = Load(device=recipe.model.device, chat_template=chat_template, trust_remote_code=trust_remote_code,
                allow_pickle=allow_pickle)
    prompts = parity_prompts(run, base_name)
    records: dict = {}

    def fill(tmp: Path) -> None:
        merge = MergeJob(base=source.path, base_local=source.local, adapter=str(adapter_dir), out=str(tmp),
                         dtype=dtype, max_shard_bytes=recipe.export.max_shard_bytes, chat_template=chat_template)
        targets = [weights.on_16bit_base("adapter-16bit", dtype, adapter=str(adapter_dir)),
                   ModelUnderTest("merged", str(tmp), dtype=dtype)]
        if recipe.model.load_in_4bit:
            targets.append(ModelUnderTest("adapter-4bit", ref.path, str(adapter_dir), ref.local, load_in_4bit=True,
                                          dtype=recipe.model.dtype, tokenizer=str(adapter_dir)))
        job = ParityJob(targets, [p["question"] for p in prompts], recipe.generate.max_new_tokens, load=load,
                        batch_size=recipe.generate.batch_size, merged_dir=str(tmp))
        done = run_job("hf", "export", {"merge": merge.to_dict(), "parity": job.to_dict()})
        records["merge"] = done["merge"]
        records["parity"] = parity_figures(prompts, done["parity"], dtype, recipe.export.max_recall_drop)
        check_parity(records["parity"], run)
        (tmp / "README.md").write_text(model_card(record, base_name, records["parity"]), encoding="utf-8")

    def section(written: dict[str, str]) -> ExportRecord:
        merge = records["merge"]
        records["merged"] = MergedExport(
            path=str(target), files=written, parity=records["parity"],
            chat_template_sha256=template_sha256(tokenizer), eos_token_id=merge["eos_token_id"],
            dtype=dtype, shards=merge["shards"], total_size=merge["total_size"],
            adapter_files=record.train.adapter_files,
            merged_from={"name": recipe.model.merge_base or base_name, "dequantized_from_4bit": weights.quantized_source},
            memory={"peak_rss_bytes": merge["peak_rss_bytes"], "rss_before_merge_bytes": merge["rss_before_bytes"]})
        return replace(record.export or ExportRecord(), merged=records["merged"])

    write_export(run, record, "merged", target, merged_size(source, dtype), fill, section)
    return {"merged": records["merged"].to_dict()}


def merged_size(source, dtype: str) -> int | None:
    """Bytes the merged weights will take (for a full disk's message); None for a hub model."""
    if not source.local:
        return None

    checkpoint = Checkpoint(Path(source.path))
    return sum(nbytes(shape, dtype if src in FLOAT_DTYPES else src)
               for shape, src in map(checkpoint.output_meta, checkpoint.output_keys()))
