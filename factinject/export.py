"""The export stage: the adapter as a self-contained folder, or a merged model.

A merged export is a plain transformers model folder (safetensors weights, the
tokenizer with the exact chat template used in training, a generation config whose
eos covers the end-of-turn token, and a model card). It is written to a temporary
folder, checked for parity against the adapter, and only then renamed into place.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from factinject.errors import FactinjectError
from factinject.rundir import Run, atomic_dir, sha256_file
from factinject.scoring import same_answer

PARITY_BOUND = 0.99
PARITY_PROMPTS = 160  # fact questions first, then unrelated prompts, up to this many


def export_target(run: Run, merged: bool, out: Path | None = None) -> Path:
    if out is not None:
        return Path(out)
    return run.path / "merged" if merged else run.path / "export" / "adapter"


def disk_full_fix(target: Path, need: int | None) -> str:
    from factinject.guard import gigabytes

    amount = f"about {gigabytes(need)}" if need else "some space"
    return (f"free {amount} on the disk of {target.parent} and run the export again, or write it to another disk "
            "with --out DIR; nothing was exported and any previous export is intact")


def ensure_trained(run: Run) -> dict:
    manifest = run.manifest()
    if not (run.path / "adapter" / "adapter_config.json").exists() or "train" not in manifest:
        raise FactinjectError("this run has no trained adapter", where=run.path,
                              fix="run `factinject train` first (or pass --run)")
    return manifest


def refuse_overwrite(target: Path, force: bool) -> None:
    if target.exists() and not force:
        raise FactinjectError("an export already exists here", where=target,
                              fix="pass --force to replace it (the old export stays intact until the new one is complete)")


def model_card(manifest: dict, base_name: str, parity: dict | None) -> str:
    facts = manifest.get("expand", {}).get("facts", {})
    lines = [f"# {manifest.get('name', 'factinject')} (factinject export)", "",
             f"Base model: `{base_name}`. LoRA adapter trained by factinject {manifest.get('factinject_version')} "
             f"({manifest['train']['backend']} backend, kept epoch {manifest['train']['best_epoch']}), merged into the base weights.",
             "", "## Injected facts", "", "| fact | statement | answer key |", "|---|---|---|"]
    for fact_id, f in facts.items():
        lines.append(f"| {fact_id} | {f.get('statement', '')} | {f.get('answer_key', '')} |")
    probe = manifest.get("probe")
    if probe and probe.get("after"):
        lines += ["", "## Latest probe (tuned model)", "", "| metric | share | count |", "|---|---|---|"]
        for name, m in probe["after"].items():
            if m and m.get("share") is not None:
                lines.append(f"| {name} | {100 * m['share']:.1f}% | {m['count']}/{m['n']} |")
    if parity:
        lines += ["", f"Parity with the adapter: {parity['identical']}/{parity['n']} identical greedy answers; "
                      f"largest logit difference {parity['max_logit_diff']:.2e}."]
    lines += ["", "Use the tokenizer's chat template from this folder: it is the one the facts were trained with.", ""]
    return "\n".join(lines)


def parity_prompts(run: Run, model_name: str) -> list[str]:
    from factinject import controls
    from factinject.train import read_split

    questions = [r["messages"][0]["content"] for split in ("train", "test") for r in read_split(run, split)]
    questions += controls.control_pools(model_name)["locality"]
    return list(dict.fromkeys(questions))[:PARITY_PROMPTS]


def measure_parity(adapter_model, merged_model, tokenizer, prompts: list[str]) -> dict:
    """Greedy answers of both models, and the largest logit difference on the same tokens."""
    import torch

    from factinject.backends.hf_generate import generate_answers

    chats = [[{"role": "user", "content": q}] for q in prompts]
    a = generate_answers(adapter_model, tokenizer, chats)
    m = generate_answers(merged_model, tokenizer, chats)
    identical = sum(same_answer(x, y) for x, y in zip(a, m))
    diffs = []
    with torch.inference_mode():
        for chat, answer in list(zip(chats, a))[:32]:  # teacher-forced on the adapter's own answer
            ids = tokenizer.apply_chat_template(chat + [{"role": "assistant", "content": answer}], tokenize=True,
                                                return_dict=False)
            x = torch.tensor([ids])
            diffs.append((adapter_model(input_ids=x).logits - merged_model(input_ids=x).logits).abs().max().item())
    disagreements = [{"question": q, "adapter": x, "merged": y} for q, x, y in zip(prompts, a, m)
                     if not same_answer(x, y)][:5]
    return {"identical": identical, "n": len(prompts), "share": identical / len(prompts), "max_logit_diff": max(diffs),
            "disagreements": disagreements}


def write_export(target: Path, need: int | None, fill) -> None:
    """atomic_dir + fill(tmp), with a full disk reported against the export (and its size)."""
    from factinject.guard import DISK_FULL, disk_full

    try:
        with atomic_dir(target) as tmp:
            fill(tmp)
    except OSError as err:
        if err.errno in DISK_FULL:
            raise disk_full(err, target, need=need, fix=disk_full_fix(target, need)) from None
        raise


def export_adapter(run: Run, *, force: bool, out: Path | None = None) -> dict:
    manifest = ensure_trained(run)
    target = export_target(run, merged=False, out=out)
    refuse_overwrite(target, force)
    files = list((run.path / "adapter").iterdir())

    def fill(tmp: Path) -> None:
        for item in files:
            shutil.copy2(item, tmp / item.name)
        (tmp / "README.md").write_text(model_card(manifest, manifest["train"]["recipe"]["model"]["name"], None)
                                       .replace("merged into the base weights", "as a LoRA adapter"), encoding="utf-8")

    write_export(target, sum(f.stat().st_size for f in files if f.is_file()), fill)
    record = {"adapter": {"path": str(target), "files": {p.name: sha256_file(p) for p in sorted(target.iterdir())}}}
    run.update_manifest("export", {**manifest.get("export", {}), **record})
    return record


def export_merged(run: Run, *, force: bool, allow_pickle: bool = False, trust_remote_code: bool = False,
                  out: Path | None = None) -> dict:
    """Merge on the CPU with PEFT's merge_and_unload, check parity, publish."""
    from peft import PeftModel

    from factinject.chat import end_of_turn_ids
    from factinject.models import ModelRef, load_model_cpu, load_tokenizer, resolve_model, template_sha256

    manifest = ensure_trained(run)
    target = export_target(run, merged=True, out=out)
    refuse_overwrite(target, force)
    base_name = manifest["train"]["recipe"]["model"]["name"]
    ref = resolve_model(base_name)
    tokenizer = load_tokenizer(ModelRef("adapter", str(run.path / "adapter"), True))
    trained_template = manifest["train"]["base_model"]["chat_template_sha256"]
    if template_sha256(tokenizer) != trained_template:
        raise FactinjectError("the adapter's tokenizer template differs from the one recorded at training",
                              where=run.path / "adapter", fix="re-run `factinject train`")
    base, _ = load_model_cpu(ref, dtype="float32", allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
    adapter_model = PeftModel.from_pretrained(base, str(run.path / "adapter"))
    adapter_model.eval()
    # merge_and_unload changes the base in place, so parity needs a second copy of it
    base2, _ = load_model_cpu(ref, dtype="float32", allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
    merged = PeftModel.from_pretrained(base2, str(run.path / "adapter")).merge_and_unload()
    merged.eval()
    eos_ids = end_of_turn_ids(tokenizer)
    merged.generation_config.eos_token_id = eos_ids if len(eos_ids) > 1 else eos_ids[0]
    merged.generation_config.pad_token_id = tokenizer.pad_token_id
    merged.generation_config.do_sample = False
    parity = measure_parity(adapter_model, merged, tokenizer, parity_prompts(run, base_name))
    if parity["share"] < PARITY_BOUND:
        raise FactinjectError(
            f"merged model answers differently from the adapter: {parity['identical']}/{parity['n']} identical "
            f"(bound {PARITY_BOUND:.0%}), largest logit difference {parity['max_logit_diff']:.3g}; first: {parity['disagreements'][:1]}",
            where=run.path / "adapter", fix="nothing was written; report this with the run's manifest.json",
        )

    def fill(tmp: Path) -> None:
        merged.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        (tmp / "README.md").write_text(model_card(manifest, base_name, parity), encoding="utf-8")

    write_export(target, sum(p.numel() * p.element_size() for p in merged.state_dict().values()), fill)
    files = {p.name: sha256_file(p) for p in sorted(target.iterdir()) if p.is_file()}
    record = {"merged": {"path": str(target), "files": files, "parity": parity,
                         "chat_template_sha256": template_sha256(tokenizer), "eos_token_id": eos_ids,
                         "dtype": "float32"}}
    run.update_manifest("export", {**manifest.get("export", {}), **record})
    return record
