"""The probe stage: ask the base model (before) and the tuned model (after) the same
prompts, score them, and write report.json, report.md, report.html and answers.jsonl.

Each model is answered by an engine in a child process (engines.process); answers
are cached in reports/.cache by what was loaded and asked.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from factinject import controls
from factinject.engines import ENGINES
from factinject.engines.choice import check_device, engine_for, generation_engine
from factinject.engines.process import run_job
from factinject.engines.records import AgreementJob, GenerateJob, Load, ModelUnderTest
from factinject.errors import FactinjectError
from factinject.models.base import (
    ModelRef,
    load_tokenizer,
    quick_fingerprint,
    read_config,
    template_sha256,
)
from factinject.models.gguf_out import GGUF_TYPES, base_as_gguf
from factinject.models.targets import base_weights, check_merged_is_current
from factinject.probe.exam import Exam, match_fact
from factinject.probe.metrics import compute_metrics, missed_bounds, parse_bounds
from factinject.probe.report import render_html, render_markdown
from factinject.probe.sets import (
    Prompt,
    answer_rows,
    build_probe_set,
    misses,
    per_fact,
    regressions,
    sample_per_fact,
)
from factinject.probe.updates import detect_old_values, update_rows
from factinject.recipe import PROBE_SETS, load_recipe
from factinject.redact import redact
from factinject.rundir.files import Run, atomic_dir, read_split, write_text_atomic
from factinject.rundir.record import ProbeRecord, RunRecord
from factinject.scoring import share
from factinject.testbed import load_heldout


def _probe_inputs(run: Run, facts: dict[str, dict], model_name: str, world_limit: int, seed: int, exams: Sequence[Exam],
                  trained_per_fact: int | None = None):

    locality = list(controls.control_pools(model_name)["locality"])
    if model_name == "testbed":

        heldout = load_heldout()
        retention = random.Random(seed).sample(heldout, min(world_limit, len(heldout)))
        locality += [r["question"] for r in retention]
    else:
        retention = controls.known_answers()
    # Names that contrast training asked about (the replay hash pool) are never probed.
    names = controls.split_other_names(controls.other_names(model_name))[1]
    other_names = random.Random(seed).sample(names, min(40, len(names)))
    exam = [Prompt("exam", q.question, q.answer_key, q.aliases, match_fact(q, facts)) for e in exams for q in e.questions]
    trained = sample_per_fact(read_split(run, "train"), trained_per_fact, seed)
    return build_probe_set(trained, read_split(run, "test"), facts,
                           locality=locality, retention=retention, other_names=other_names, exam=exam, seed=seed)


def next_step(run: Run) -> str:
    """What an untrained run's report says instead of an "after" column."""
    return (f"This run has no trained adapter yet, so only the base model was probed (the 'before' column). "
            f"Train it with `factinject train --run {run.path}`, then `factinject export --run {run.path} --merged` "
            f"and `factinject probe --run {run.path}` for the before/after report.")


def _cache_path(cache_dir: Path, key: dict, questions: list[str]) -> Path:
    digest = hashlib.sha256(json.dumps({**key, "q": questions}, sort_keys=True).encode()).hexdigest()[:20]
    return cache_dir / f"answers-{key['label']}-{digest}.json"


def cached_answers(cache_dir: Path, key: dict, questions: list[str]) -> dict[str, str] | None:
    """A model's answers, cached by what was loaded and asked (the base model's are the same
    before every probe); None when they are not cached yet."""
    path = _cache_path(cache_dir, key, questions)
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def store_answers(cache_dir: Path, key: dict, questions: list[str], answers: list[str]) -> dict[str, str]:
    by_question = dict(zip(questions, answers))
    write_text_atomic(_cache_path(cache_dir, key, questions), json.dumps(by_question, ensure_ascii=False))
    return by_question


def base_model_key(target, chat_template: str | None) -> dict:
    """What the base model's cached answers depend on: the model's files, the precision it
    is loaded in and the chat template supplied to it. The same before and after
    training, so `run`'s second probe reuses the first one's base answers."""
    files = {}
    root = Path(target.path)
    if root.is_file():  # a GGUF file (the llamacpp engine)
        files[root.name] = quick_fingerprint(root)
    elif target.local:
        for path in sorted(root.glob("*.safetensors")) + sorted(root.glob("*.json")) + sorted(root.glob("*.jinja")):
            files[path.name] = quick_fingerprint(path)
    return {"files": files, "template": hashlib.sha256(chat_template.encode("utf-8")).hexdigest()
            if chat_template else None}


def check_template(run: Run, record: RunRecord, target_dir: Path, label: str) -> None:
    """The probe must format prompts exactly as training did."""

    trained = record.train.base_model if record.train else {}
    if not trained:
        return
    tok = load_tokenizer(ModelRef(label, str(target_dir), True))
    got = template_sha256(tok)
    if got != trained.get("chat_template_sha256"):
        raise FactinjectError(
            f"the chat template of the {label} model ({target_dir}) differs from the one recorded at training "
            f"(train: {trained.get('chat_template_sha256', '?')[:12]}, {label}: {got[:12]})",
            where=run.manifest_path, fix=f"re-export the {label} model (`factinject export --merged --force`) so it carries the training template",
        )
    if tok.eos_token != trained.get("eos_token"):
        raise FactinjectError(f"the eos token of the {label} model is {tok.eos_token!r}, training used {trained.get('eos_token')!r}",
                              where=run.manifest_path, fix="re-export the model so its tokenizer and generation config match training")


def check_exam_fits(exams: Sequence[Exam], target, chat_template: str | None, max_new_tokens: int) -> None:
    """An exam question longer than the model's context would fail (or try to allocate
    the memory of one) deep in generation: name its line before any model is loaded."""
    questions = [q for e in exams for q in e.questions]
    if not questions or not target.local:
        return
    context = read_config(target.path, True).get("max_position_embeddings")
    if not context:
        return
    tokenizer = load_tokenizer(ModelRef("base", target.path, True), chat_template=chat_template)
    room = context - max_new_tokens
    for q in questions:
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": q.question}], add_generation_prompt=True,
                                               tokenize=False)
        n = len(tokenizer(prompt, add_special_tokens=False, verbose=False).input_ids)
        if n > room:
            raise FactinjectError(
                f"the question is {n:,} tokens long with its chat template; with the {max_new_tokens} tokens its "
                f"answer may take, it does not fit the model's context of {context:,} tokens", where=q.path, line=q.line,
                fix=f"shorten the question to well under {room:,} tokens (an exam question is asked, not a document)")


def probe_targets(run: Run, recipe, record: RunRecord) -> tuple:
    """(base, tuned, adapter): the models to probe, each in the precision it is compared in.

    After a merged export, "after" is the 16-bit merge, so "before" is the base in the
    same 16-bit precision (dequantized when the checkpoint is 4-bit): locality and bleed
    then measure what training changed, not what quantization changed. Without an
    export, "after" is the adapter on the base as it was trained (4-bit for QLoRA), and
    "before" is that same base. Before training, the base is probed as the merge will
    be, so the answers are reused after `run`'s export.
    """

    weights = base_weights(recipe)
    ref = weights.trained
    adapter_dir, merged_dir = run.path / "adapter", run.path / "merged"
    base16 = weights.on_16bit_base("base", recipe.export.dtype)
    as_trained = dict(load_in_4bit=recipe.model.load_in_4bit, dtype=recipe.model.dtype)
    adapter = None
    if adapter_dir.exists() and record.train:
        run.check_adapter(record)
        adapter = ModelUnderTest("adapter", ref.path, str(adapter_dir), ref.local, tokenizer=str(adapter_dir),
                                 **as_trained)
    if merged_dir.exists() and record.merged_export():
        check_merged_is_current(run, record, merged_dir)
        merged = ModelUnderTest("merged", str(merged_dir), dtype=record.merged_export().dtype)
        return base16, merged, adapter
    if adapter:
        return ModelUnderTest("base", ref.path, local=ref.local, **as_trained), adapter, adapter
    return base16, None, None


def gguf_targets(run: Run, record: RunRecord, base16: ModelUnderTest, gguf_type: str | None,
                 chat_template: str | None) -> tuple[ModelUnderTest, ModelUnderTest | None, dict | None]:
    """(base, tuned, the GGUF export's record) as GGUF files, for the llamacpp engine: after
    training, the run's GGUF export (`gguf_type`, or the only one there is); before, the
    base written as GGUF of the same type (once, in the cache: models/gguf_out.py), so
    before and after differ by training alone, not by file format or quantization."""
    exported = (record.export.gguf or {}) if record.export else {}
    entry = None
    if record.train:
        export_it = f"factinject export --run {run.path} --gguf {gguf_type or 'q8_0'}"
        if not exported:
            raise FactinjectError("this run has no GGUF export for the llamacpp engine to answer", where=run.path,
                                  fix=f"write one with `{export_it}`, then probe again")
        if gguf_type is None and len(exported) > 1:
            raise FactinjectError(f"this run has GGUF exports of {len(exported)} types ({', '.join(sorted(exported))})",
                                  where=run.path, fix="name the one to probe with --gguf TYPE")
        gguf_type = gguf_type or next(iter(exported))
        if gguf_type not in exported:
            raise FactinjectError(f"this run has no {gguf_type} GGUF export (it has {', '.join(sorted(exported))})",
                                  where=run.path, fix=f"write it with `{export_it}`, or probe another with --gguf")
        entry = exported[gguf_type]
        if entry.get("adapter_files") != record.train.adapter_files:
            raise FactinjectError(f"the {gguf_type} GGUF export was made from an earlier adapter than the one in the "
                                  "run (stale)", where=entry["path"], fix=f"write it again with `{export_it} --force`")
    gguf_type = gguf_type or "f16"
    assert gguf_type in GGUF_TYPES, f"{gguf_type!r} is not a GGUF type factinject writes ({GGUF_TYPES})"
    if base16.load_in_4bit or not base16.local:
        raise FactinjectError("the llamacpp engine needs the base model as a local folder of 16-bit or float32 "
                              f"safetensors, and this run's base is {base16.path}"
                              + (" (4-bit)" if base16.load_in_4bit else ""), where=run.path,
                              fix="set model.merge_base to the 16-bit weights' folder, or probe with --backend hf")
    base_file = base_as_gguf(Path(base16.path), gguf_type, base_model_key(base16, chat_template))
    base = ModelUnderTest("base", str(base_file), dtype=gguf_type, tokenizer=base16.path)
    if entry is None:
        return base, None, None
    merged = run.path / "merged"
    tokenizer = merged if merged.is_dir() else run.path / "adapter"  # the training template either way
    tuned = ModelUnderTest("gguf", str(Path(entry["path"]) / entry["file"]), dtype=gguf_type, tokenizer=str(tokenizer))
    return base, tuned, entry


def engine_agreement(engine: str, reference: str, answers: dict[str, tuple[dict, dict]]) -> dict:
    """Per model, the share of prompts whose greedy answers are identical under `engine`
    and `reference`, and every prompt where they are not."""

    targets, agree, total = {}, 0, 0
    for label, (ours, theirs) in answers.items():
        differ = [{"question": q, engine: a, reference: theirs[q]} for q, a in ours.items() if a != theirs[q]]
        targets[label] = {**share(len(ours) - len(differ), len(ours)), "disagreements": differ}
        agree, total = agree + len(ours) - len(differ), total + len(ours)
    return {"engine": engine, "reference": reference, "overall": share(agree, total), "models": targets}


def run_probe(run: Run, *, backend: str = "auto", exams: Sequence[Exam] = (), bounds_text: str | None = None,
              world_limit: int = 400, seed: int = 0, allow_pickle: bool = False, trust_remote_code: bool = False,
              recipe=None, chat_template: str | None = None, compare_with: str | None = None,
              answer_cache: bool = True, gguf_type: str | None = None) -> dict:
    """Probe the base model (before) and the tuned model (after) on the same prompts.

    The base model's answers come from the answer cache where it holds them
    (models/answer_cache.py: the hf engine; `answer_cache=False` bypasses it).

    Each model is answered in its own child process, one after the other, so two
    engines are never loaded at once; `recipe` is the one to probe before training
    (the run's own once it is trained). With `compare_with`, every model is also
    answered by that engine, and the report lists where the two engines disagree. With the
    llamacpp engine the models are GGUF files (`gguf_targets`; `gguf_type` picks the export)."""

    from rich.console import Console


    console = Console(stderr=True)
    started = time.perf_counter()
    bounds = parse_bounds(bounds_text)
    record = run.checked_record()
    trained = record.train
    recipe = trained.trained_recipe() if trained else (recipe or load_recipe())
    check_device(recipe)
    model_name = recipe.model.name
    probe = _probe_inputs(run, record.expand.facts, model_name, world_limit, seed, exams,
                          recipe.generate.probe_trained_per_fact)
    questions = probe.unique_questions()
    budgets = probe.budgets(recipe.generate.budget)
    engine = generation_engine(backend)
    compare_with = generation_engine(compare_with) if compare_with else None
    load = Load(device=recipe.model.device, chat_template=chat_template, trust_remote_code=trust_remote_code,
                allow_pickle=allow_pickle)
    cache = run.path / "reports" / ".cache"
    base_target, tuned_target, adapter_target = probe_targets(run, recipe, record)
    check_exam_fits(exams, base_target, chat_template, recipe.generate.budget("exam"))

    def job_for(target) -> dict:
        return GenerateJob(target, questions, recipe.generate.max_new_tokens, load=load,
                           batch_size=recipe.generate.batch_size,
                           gpu_memory_utilization=recipe.generate.gpu_memory_utilization,
                           max_lora_rank=recipe.max_lora_rank, answer_cache=answer_cache, budgets=budgets).to_dict()

    # (target, what its answers depend on); each is answered by the engine asked for,
    # except that vLLM cannot load NF4: those models go to hf.
    hf_base = base_target  # teacher-forced locality reads the base's own answers, from the hf engine
    trained_adapter = adapter_target  # teacher-forced locality asks it in any case
    gguf = None
    if engine == "llamacpp":  # the GGUF files; parity is the GGUF export's own check
        if compare_with:
            raise FactinjectError("--compare-with compares engines on the same model files, and the llamacpp engine "
                                  "reads GGUF files", fix="probe once with --backend llamacpp and once without")
        base_target, tuned_target, gguf = gguf_targets(run, record, base_target, gguf_type, chat_template)
        adapter_target = None
    wanted = [(base_target, base_model_key(base_target, chat_template))]
    # After a merged export the adapter is asked only for the parity row, unless the
    # recipe leaves that row to the export's own parity check.
    if adapter_target and tuned_target is not adapter_target and not recipe.generate.probe_adapter:
        adapter_target = None
    if adapter_target:
        check_template(run, record, Path(adapter_target.adapter), "adapter")
        wanted.append((adapter_target, {"adapter": trained.adapter_files}))
    if gguf and tuned_target:
        wanted.append((tuned_target, {"gguf": gguf["files"]}))
    elif tuned_target and tuned_target is not adapter_target:
        check_template(run, record, Path(tuned_target.path), "merged")
        wanted.append((tuned_target, {"merged": record.merged_export().files}))
    engines_used = {t.label: engine_for(t, engine) for t, _ in wanted}
    for t, _ in wanted:
        if engines_used[t.label] != engine:
            console.print(f"probe: the {t.label} model is 4-bit NF4, which vLLM cannot load: the hf engine answers it")
    # With --compare-with, every model whose second engine differs is answered twice.
    runs = [(t, key, engines_used[t.label]) for t, key in wanted]
    if compare_with:
        runs += [(t, key, engine_for(t, compare_with)) for t, key in wanted
                 if engine_for(t, compare_with) != engines_used[t.label]]
    keys = [{**key, "label": t.label, "backend": name, "target": asdict(t),
             "max_new_tokens": recipe.generate.max_new_tokens,
             "budgets": {k: recipe.generate.budget(k) for k in PROBE_SETS}} for t, key, name in runs]
    found = [cached_answers(cache, key, questions) for key in keys]
    missing = [i for i, answers in enumerate(found) if answers is None]
    from_cache = {t.label: len(questions) for i, (t, _, _) in enumerate(runs) if i not in missing}
    for i in missing:  # said only when the model really runs: `run`'s second probe has the base answers cached
        target, _, name = runs[i]
        console.print(f"probe: {len(questions)} prompts through the {target.label} model ({name}, {target.precision})")
    by_hf = [i for i in missing if runs[i][2] == "hf"]
    if by_hf:  # one process, one model at a time
        results = run_job("hf", "generate_each", {"jobs": [job_for(runs[i][0]) for i in by_hf]})["results"]
        for i, result in zip(by_hf, results):
            found[i] = store_answers(cache, keys[i], questions, result["answers"])
            from_cache[runs[i][0].label] = result.get("cached", 0)
            if result.get("cached"):
                console.print(f"probe: {result['cached']} of {len(questions)} {runs[i][0].label} answers from the "
                              "answer cache")
    for i in missing:  # any other engine: one engine per process
        if runs[i][2] != "hf":
            found[i] = store_answers(cache, keys[i], questions, run_job(runs[i][2], "generate", job_for(runs[i][0]))["answers"])
    by_label = {t.label: answers for (t, _, _), answers in zip(runs[:len(wanted)], found)}
    compared = {t.label: (by_label[t.label], answers) for (t, _, _), answers in zip(runs[len(wanted):], found[len(wanted):])}
    before = by_label["base"]
    after = by_label[tuned_target.label] if tuned_target else None
    probe.old_values = detect_old_values(record.expand.facts, probe.prompts, before)
    forced = None
    if after and trained_adapter:
        reference = before
        forced_kinds = {p.kind for p in probe.prompts if p.kind in ("locality", "neighbour")}
        if any(recipe.generate.budget(k) != recipe.generate.budget("teacher_forced") for k in forced_kinds) or gguf:
            reference = reference_answers(probe, hf_base, base_model_key(hf_base, chat_template), recipe,
                                          load, cache, answer_cache, console)
        forced = teacher_forced_locality(probe, reference, trained_adapter, load, console)
    parity = by_label["adapter"] if adapter_target and tuned_target is not adapter_target else None
    tuned_label = tuned_target.label if tuned_target else None

    report = {
        "run": str(run.path), "backend": engine, "engines": engines_used,
        "train_engine": training_engine_record(trained) if trained else None,
        "model": {"base": model_name, "tuned": tuned_label, "base_precision": base_target.precision,
                  "tuned_precision": tuned_target.precision if tuned_target else None},
        "before": compute_metrics(probe, before, None),
        "after": compute_metrics(probe, after, before, parity, forced) if after else None,
        "facts": per_fact(probe, before, after),
        "updates": update_rows(probe, before, after),
        # known answers an update replaces ("capital of France?" -> Paris): left out of retention
        "known_answers_left_out": probe.notes.get("known_answers_contradicted", []),
        "thresholds": bounds,
        "export_parity": record.merged_export().parity if tuned_label == "merged" else
        (gguf or {}).get("parity") if tuned_label == "gguf" else None,
        "regressions": regressions(probe, before, after) if after else [],
        "moved_most": moved_most(probe, forced) if forced else [],
        "counts": {k: sum(p.kind == k for p in probe.prompts) for k in sorted({p.kind for p in probe.prompts})},
        "answer_budgets": {k: recipe.generate.budget(k) for k in (*PROBE_SETS, "teacher_forced")},
        # per model: answers not generated by this probe (the answer cache, or this run's earlier probe)
        "answers_from_cache": {label: {"count": from_cache.get(label, 0), "n": len(questions)} for label in by_label},
        "curve": trained.curve if trained else None,
        "best_epoch": trained.best_epoch if trained else None,
        "stop_reason": trained.stop_reason if trained else None,
        "max_drift": recipe.stop.max_drift if trained else None,
        "exam": [e.record() for e in exams],
        # Every held-out and exam question the model of this report (tuned, else base) got wrong.
        "misses": misses(probe, after or before),
        "next_step": None if after else next_step(run),
        "seconds": None,
    }
    if after and parity is None and tuned_label == "merged":  # the export's check stands for the parity row
        exact = record.merged_export().parity["exactness"]
        report["after"]["parity"] = {**share(exact["identical"] + exact.get("near_ties", 0), exact["n"]),
                                     "source": "export"}
    if after and tuned_label == "gguf" and gguf.get("parity"):  # llama.cpp on the file: the merge's verdicts
        verdicts = gguf["parity"]["verdicts"]
        report["after"]["parity"] = {**share(verdicts["count"], verdicts["n"]), "source": "export --gguf"}
    if compare_with:
        report["engine_agreement"] = engine_agreement(engine, compare_with, compared)
    report["missed"] = missed_bounds(report["after"] or report["before"], bounds)
    report["seconds"] = round(time.perf_counter() - started, 2)
    record = ProbeRecord(report="reports/report.json", tuned=tuned_label, backend=engine, exam=report["exam"],
                         after=report["after"], before=report["before"], seconds=report["seconds"],
                         adapter_files=trained.adapter_files if after else None)
    write_reports(run, report, answer_rows(probe, before, after), then=lambda: run.write_section(record))
    return report


def forced_questions(probe) -> list[str]:
    """The prompts whose base answers are read through the tuned model: unrelated prompts
    (locality) and an update's neighbours."""
    return list(dict.fromkeys(p.question for p in probe.prompts if p.kind in ("locality", "neighbour")))


def reference_answers(probe, base_target: ModelUnderTest, base_key: dict, recipe, load: Load, cache: Path,
                      answer_cache: bool, console) -> dict[str, str]:
    """The base model's answers to the unrelated prompts at the teacher-forced budget: the
    generated comparison needs only their openings, teacher-forced locality needs the
    tokens after which it is stable (docs/benchmarks.md, "Answer budgets"). From this
    run's cache, else the answer cache, else generated by the hf engine."""
    questions = forced_questions(probe)
    budget = recipe.generate.budget("teacher_forced")
    key = {**base_key, "label": "base", "backend": "hf", "target": asdict(base_target), "teacher_forced": budget}
    found = cached_answers(cache, key, questions)
    if found is None:
        job = GenerateJob(base_target, questions, budget, load=load, batch_size=recipe.generate.batch_size,
                          answer_cache=answer_cache)
        result = run_job("hf", "generate", job.to_dict())
        if result.get("cached", 0) < len(questions):
            console.print(f"probe: {len(questions) - result.get('cached', 0)} base answers of up to {budget} tokens "
                          "for teacher-forced locality")
        found = store_answers(cache, key, questions, result["answers"])
    return found


def teacher_forced_locality(probe, before: dict[str, str], adapter: ModelUnderTest, load: Load, console) -> dict:
    """Per locality question: the base model's answer through the adapter's model, the
    adapter on and off (backends/hf.py, `agreement`). After a merged export the adapter
    stands for the merge: the export's parity check found them answering alike."""
    questions = forced_questions(probe)
    console.print(f"probe: {len(questions)} base answers through the adapter, teacher-forced (locality)")
    job = AgreementJob(adapter, questions, [before[q] for q in questions], load=load)
    return dict(zip(questions, run_job("hf", "agreement", job.to_dict())["results"], strict=True))


def moved_most(probe, forced: dict[str, dict], limit: int = 20) -> list[dict]:
    """The base answers the tuned model moved most, teacher-forced: per prompt of the
    locality and neighbour sets, its tokens, those still ranked first, and the KL
    divergence from the base per token; the largest KL first."""
    kinds = {p.question: p.kind for p in probe.prompts if p.kind in ("locality", "neighbour")}
    rows = [{"set": kinds[q], "question": q, "tokens": r["tokens"], "kept": r["agree"],
             "kl_per_token": round(r["kl"] / r["tokens"], 5) if r["tokens"] else 0.0}
            for q, r in forced.items() if q in kinds]
    return sorted(rows, key=lambda r: -r["kl_per_token"])[:limit]


def write_reports(run: Run, report: dict, rows: list[dict], then=None) -> None:
    """The four report files, swapped in whole; `then` (the manifest's probe section) with them."""
    reports = run.path / "reports"
    cache = reports / ".cache"
    with atomic_dir(reports, then=then) as tmp:
        (tmp / "report.json").write_text(redact(json.dumps(report, indent=2, ensure_ascii=False) + "\n"), encoding="utf-8")
        (tmp / "report.md").write_text(redact(render_markdown(report)), encoding="utf-8")
        (tmp / "report.html").write_text(redact(render_html(report)), encoding="utf-8")
        (tmp / "answers.jsonl").write_text(redact("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)),
                                           encoding="utf-8")
        if cache.exists():  # keep cached base answers across probes
            import shutil

            shutil.copytree(cache, tmp / ".cache")


def training_engine_record(trained) -> dict:
    """The engine that trained the adapter, and the version of its library."""
    engine = ENGINES.get(trained.backend)
    package = engine.package if engine and engine.package else "peft"
    return {"name": trained.backend, "library": engine.library if engine else trained.backend,
            "version": (trained.versions or {}).get(package)}
