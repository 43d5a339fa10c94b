"""The engine table, the metric table and the typed run record: each declared once, and
everything that lists engines or metrics, or reads the manifest, goes through them."""

from __future__ import annotations

import json

import pytest

import factinject.probe.metrics as metrics_module
from factinject.engines import ENGINES, Engine, choices, names_for
from factinject.errors import FactinjectError
from factinject.probe.metrics import (
    METRICS,
    Metric,
    compute_metrics,
    metric_names,
    missed_bounds,
    parse_bounds,
)
from factinject.probe.sets import ProbeSet, Prompt
from factinject.rundir.files import Run
from factinject.rundir.record import RunRecord, TrainRecord


def test_the_cli_and_the_recipe_offer_exactly_the_engines_of_the_table():
    from factinject.commands.probe import probe
    from factinject.commands.train import train
    from factinject.recipe import ModelSpec

    def choice(command, option):
        return next(p for p in command.params if p.name == option).type.choices

    assert list(choice(train, "backend")) == ["auto", *names_for("train"), "cpu"]
    assert list(choice(probe, "backend")) == ["auto", *names_for("generate")]
    assert list(choice(probe, "compare_with")) == list(names_for("generate"))
    assert ModelSpec(backend="cpu").backend == "hf"  # the old name, read off the table's aliases
    with pytest.raises(ValueError):
        ModelSpec(backend="vllm")  # generates, never trains


def test_an_engine_is_one_entry(monkeypatch):
    from factinject.engines import choice, process

    extra = Engine("toy", "factinject.backends.hf", ("generate",), library="Toy", package="toy_engine_package",
                   needs_cuda=False, auto_on_cuda=False, loads_nf4=False, install="pip install toy")
    monkeypatch.setitem(ENGINES, "toy", extra)
    assert "toy" in choices("generate") and "toy" not in choices("train")
    with pytest.raises(FactinjectError, match="Toy is not installed"):
        choice.generation_engine("toy")
    with pytest.raises(AssertionError, match="has no 'train'"):
        process.run_job("toy", "train", {})
    target = type("T", (), {"load_in_4bit": True})()
    assert choice.engine_for(target, "toy") == "hf"  # it loads no NF4 model: the fallback answers


def test_an_engine_runs_on_a_cpu_from_the_version_its_table_entry_names(monkeypatch):
    from factinject.engines import choice

    gpu_only = Engine("g", "m", ("train",), library="G", package="g", needs_cuda=True, auto_on_cuda=True,
                      loads_nf4=True)
    falls_back = Engine("c", "m", ("train",), library="C", package="c", needs_cuda=True, auto_on_cuda=True,
                        loads_nf4=True, cpu_since="2026.10.9")
    versions = {"g": "9.0", "c": "2026.10.9"}
    monkeypatch.setattr(choice, "installed_version", versions.get)
    assert choice.runs_on_cpu(ENGINES["hf"]) and not choice.runs_on_cpu(gpu_only)
    assert choice.runs_on_cpu(falls_back)
    versions["c"] = "2026.10.7"
    assert not choice.runs_on_cpu(falls_back)
    versions["c"] = "2026.11.1"
    assert choice.runs_on_cpu(falls_back)
    del versions["c"]
    assert not choice.runs_on_cpu(falls_back)  # not installed


def probe_set() -> ProbeSet:
    prompts = [Prompt("trained", "Who maintains TinyLLM?", "Jason Cox", fact_id="t/m"),
               Prompt("locality", "Why is the sky blue?")]
    return ProbeSet(prompts, ["Jason Cox"], ["TinyLLM"])


def test_a_metric_is_one_entry(monkeypatch):
    extra = Metric("answer_length", "answer length (shorter is better)", False,
                   lambda a: {"share": 0.5, "count": 1, "n": 2, "ci95": [0.1, 0.9]})
    monkeypatch.setattr(metrics_module, "METRICS", METRICS + (extra,))
    monkeypatch.setitem(metrics_module.BY_NAME, extra.name, extra)
    answers = {"Who maintains TinyLLM?": "Jason Cox.", "Why is the sky blue?": "Rayleigh scattering."}
    metrics = compute_metrics(probe_set(), answers, None)
    assert metrics["answer_length"]["share"] == 0.5
    assert "answer_length" in metric_names({"before": metrics})
    bounds = parse_bounds("answer_length=0.4")
    assert missed_bounds(metrics, bounds) == ["answer_length 0.500 > 0.4"]  # lower is better: an upper bound


def test_the_exam_is_shown_only_when_asked():
    answers = {"Who maintains TinyLLM?": "Jason Cox.", "Why is the sky blue?": "Rayleigh scattering."}
    metrics = compute_metrics(probe_set(), answers, None)
    assert "exam" not in metrics and "exam" not in metric_names({"before": metrics})
    # the exam, and the rows of updates (shown only for a sheet that has them)
    assert [m.name for m in METRICS if m.needs] == ["exam", "old_value", "neighbours_tokens", "portability"]
    assert not {"old_value", "neighbours_tokens", "portability"} & set(metric_names({"before": metrics}))


MANIFEST = {
    "manifest_version": 1, "factinject_version": "0.1.0", "name": "r",
    "expand": {"sheets": [{"path": "facts/a.md", "sha256": "x", "facts": 1}], "config": {"seed": 0},
               "counts": {"facts": 1}, "files": {}, "facts": {"a/b": {"subject": "A"}}, "from_a_newer_version": 1},
    "train": {"backend": "hf", "recipe": {}, "base_model": {"eos_token": "<e>"}, "best_epoch": 2, "stop_reason": "x",
              "curve": [], "rows": {}, "adapter_files": {}, "seconds": 1.0, "seed": 0, "versions": {}},
    "export": {"merged": {"path": "m", "files": {}, "parity": {}, "chat_template_sha256": "h", "eos_token_id": 2,
                          "dtype": "bfloat16", "shards": [], "total_size": 0, "merged_from": {}, "memory": {}}},
}


def test_the_run_record_writes_back_what_it_read(tmp_path):
    run = Run(tmp_path / "r")
    run.path.mkdir()
    run.manifest_path.write_text(json.dumps(MANIFEST), encoding="utf-8")
    record = run.record()
    assert record.train.best_epoch == 2 and record.merged_export().dtype == "bfloat16"
    assert record.expand.sheet_paths == ["facts/a.md"]
    for name in ("expand", "train", "export"):
        assert getattr(record, name).to_dict() == MANIFEST[name], name  # keys this version does not name are kept
    run.write_section(record.train)
    assert json.loads(run.manifest_path.read_text(encoding="utf-8"))["expand"] == MANIFEST["expand"]


def test_a_section_missing_what_a_stage_reads_is_a_clear_error(tmp_path):
    broken = {**MANIFEST, "train": {k: v for k, v in MANIFEST["train"].items() if k != "adapter_files"}}
    with pytest.raises(FactinjectError, match="the manifest's 'train' section lacks adapter_files") as err:
        RunRecord.from_dict(broken, tmp_path / "manifest.json")
    assert "factinject train" in err.value.fix
    with pytest.raises(FactinjectError, match="is not an object"):
        TrainRecord.from_dict(["not", "a", "section"])


@pytest.mark.parametrize("section, key, value, message", [
    ("train", "best_epoch", "2", "section has a bad best_epoch: input should be a valid integer, found '2'"),
    ("train", "seconds", "fast", "section has a bad seconds: input should be a valid number"),
    ("expand", "files", ["a"], "'expand' section has a bad files: input should be a valid dictionary"),
    ("export", "merged", {**MANIFEST["export"]["merged"], "dtype": 16}, "'export' section has a bad dtype"),
], ids=["string-epoch", "string-seconds", "list-for-dict", "nested"])
def test_a_section_with_a_wrong_type_is_a_clear_error(tmp_path, section, key, value, message):
    broken = {**MANIFEST, section: {**MANIFEST[section], key: value}}
    with pytest.raises(FactinjectError, match=message) as err:
        RunRecord.from_dict(broken, tmp_path / "manifest.json")
    assert err.value.where == str(tmp_path / "manifest.json") and "restore the file" in err.value.fix


def test_engine_jobs_cross_the_process_boundary_checked():
    """Jobs go to the engine process as JSON and come back typed: nested records rebuilt,
    a wrong type named by its field, the records' own checks kept."""
    from pydantic import ValidationError

    from factinject.engines.records import EpochRecord, GenerateJob, Load, ModelUnderTest, ParityJob

    target = ModelUnderTest("base", "m", adapter="a", dtype="float32")
    job = ParityJob([target, ModelUnderTest("merged", "x")], ["q1", "q2"], 32, load=Load(device="cpu"),
                    budgets=[8, 16], base=target)
    again = ParityJob.from_dict(json.loads(json.dumps(job.to_dict())))
    assert again == job and isinstance(again.targets[0], ModelUnderTest) and isinstance(again.load, Load)
    generate = GenerateJob(target, ["q"], 16)
    assert GenerateJob.from_dict(generate.to_dict()) == generate
    with pytest.raises(ValidationError, match="max_new_tokens"):
        GenerateJob.from_dict({**generate.to_dict(), "max_new_tokens": "many"})
    with pytest.raises(ValidationError, match="target.path"):
        GenerateJob.from_dict({**generate.to_dict(), "target": {"label": "base"}})
    with pytest.raises(ValidationError, match="one budget per question"):
        GenerateJob.from_dict({**generate.to_dict(), "budgets": [1, 2]})
    epoch = EpochRecord(1, 0.5, 0.9, 9, 10, 0.0, 0, 4, 12.0)
    assert EpochRecord.from_dict(json.loads(json.dumps(epoch.to_dict()))) == epoch
