"""The reliability catalogue: bad inputs and faults, each with a test.

Every case ends in a clear message (what, where, what to do), a non-zero exit, and
nothing lost or half-written. docs/troubleshooting.md lists every message and its
fix; the last test here checks that no message is missing from it.

| case | test |
|---|---|
| malformed markdown | test_sheet_errors[malformed-markdown] (more shapes: tests/test_factsheet.py) |
| binary file | test_sheet_errors[binary-file] |
| conflicting facts | test_sheet_errors[conflicting-facts] |
| huge sheet | test_sheet_errors[huge-sheet] |
| unicode and right-to-left subjects | test_unicode_and_rtl_subjects_expand_with_ascii_ids, test_sheet_errors[rtl-subject-without-id] |
| subjects / ids escaping the run dir (`../`) | test_path_like_subject_stays_inside_the_run, test_sheet_errors[id-with-dotdot], test_sheet_errors[relation-with-path], test_sheet_file_name_that_escapes_exports |
| empty key | test_sheet_errors[empty-explicit-key], test_sheet_errors[empty-bold-key] |
| keys that cannot prove recall | test_sheet_errors[common-word-key], test_sheet_errors[punctuation-only-key] (more: tests/test_sheet_rules.py) |
| one relation under two names | test_sheet_errors[contradicting-relations] |
| a sheet not in English | test_sheet_errors[not-english] |
| relation names | test_sheet_errors[relation-with-parenthesis], test_sheet_errors[relation-with-path] |
| exam files: BOM, CRLF, a bad row named by line, nothing written | tests/test_exam_cli.py, tests/test_probe.py::test_exam_errors_name_the_line |
| recipe: unknown keys | test_recipe_errors[unknown-key] |
| recipe: wrong types | test_recipe_errors[wrong-type] |
| recipe: rank 0, lr < 0 | test_recipe_errors[rank-0], test_recipe_errors[negative-lr], test_flag_overrides_are_validated |
| recipe: max length smaller than the longest row | test_max_length_smaller_than_longest_row |
| model: missing path | test_missing_model_path |
| model: pickle-only weights | test_pickle_only_model_is_refused_unless_allowed |
| model: needs remote code | test_remote_code_model_is_refused_and_its_code_never_runs |
| model: no chat template (documented default) | test_model_without_chat_template_is_refused_with_the_default_offered, test_chat_template_default_trains_and_is_recorded, test_chat_template_option_errors |
| GPU out of memory | test_gpu_out_of_memory_during_training_says_what_to_lower, test_a_child_killed_for_memory_says_what_to_lower |
| data: corrupted JSONL line | test_corrupted_data_line_is_named_by_file_and_line[train/probe/export] |
| data: another factinject version | test_manifest_from_another_version[train/export/probe], test_manifest_that_is_not_json |
| SIGINT during train, resume | test_sigint_during_training_then_resume |
| SIGKILL during train, resume | tests/test_pipeline.py::test_train_survives_sigkill_and_resumes; incomplete checkpoint: test_sigint_during_training_then_resume |
| SIGINT during export | test_sigint_during_export_keeps_the_previous_export |
| SIGKILL during export | test_sigkill_during_export_leaves_nothing_loadable, test_interrupted_swap_restores_the_previous_output |
| full disk during export | test_full_disk_during_export, test_full_disk_during_expand |
| two commands writing one run | test_second_writer_fails_at_once[expand/train/export/probe/run], test_lock_of_a_dead_process_is_taken_over |
| secrets | test_no_secret_in_outputs_manifests_reports_or_logs, test_error_messages_redact_secrets |
| also | test_missing_or_stale_run_directory, test_read_only_export_folder, test_export_out_and_overwrite |
| docs | test_every_error_message_is_in_troubleshooting |
"""

from __future__ import annotations

import ast
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from conftest import REPO

from factinject.cli import main

pytestmark = pytest.mark.timeout(300)

SECRETS = {"HF_TOKEN": "hf_SENTINELtokenDoNotLeak0001", "HUGGING_FACE_HUB_TOKEN": "hf_SENTINELhubDoNotLeak0002",
           "ACME_API_KEY": "sk-SENTINELkeyDoNotLeak0003", "DEPLOY_TOKEN": "SENTINELdeployDoNotLeak0004"}
ONE_FACT = "# Zorblat\n- colour: Zorblat is painted **teal**.\n"
# Tiny on purpose: one fact, 8 rows, 2 epochs of 4 steps, one drift prompt.
TINY_RECIPE = """model:
  name: {model}
  backend: cpu
  max_seq_length: 160
  dtype: float32
train:
  epochs: {epochs}
  batch_size: 2
  replay_ratio: 0.0
stop:
  control_prompts: 1
"""
PARITY_PROMPTS = 8  # the export's parity check on 8 prompts instead of 160: same code, less time


def subprocess_env(**extra) -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **SECRETS, **extra}


def sigint_as_in_a_terminal() -> None:
    """A shell starts background jobs (`cmd &`, nohup, some CI runners) with SIGINT
    ignored, and children inherit that: Python then never raises KeyboardInterrupt.
    A user's Ctrl-C comes from a terminal, where SIGINT has its default action."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# Jobs run in child processes (factinject/engines/process.py), so faults are planted with a
# sitecustomize.py that every Python process of the test imports at start-up.
# Training steps slowed down, so that Ctrl-C lands mid-epoch reliably:
SLOW_TRAINING = """
import time
from transformers import Trainer
_step = Trainer.training_step
def _slow(self, *a, **k):
    time.sleep(0.4)
    return _step(self, *a, **k)
Trainer.training_step = _slow
"""
# The export's parent dies by SIGKILL while its merge child is halfway through a shard.
KILL_PARENT_MID_MERGE = """
import os, signal, sys
if sys.argv[1:3] == ["hf", "export"]:
    import factinject.backends.merge as merge
    def _half_then_kill_parent(path, *a, **k):
        with open(path, "wb") as fh:
            fh.write(b"\\0" * 4096)
            fh.flush()
            os.fsync(fh.fileno())
        os.kill(os.getppid(), signal.SIGKILL)
        signal.pause()  # the child goes with its parent
    merge.write_shard = _half_then_kill_parent
"""


def planted(tmp_path: Path, code: str) -> str:
    """A PYTHONPATH whose sitecustomize.py runs `code` in every process started with it."""
    folder = tmp_path / "planted"
    folder.mkdir(exist_ok=True)
    (folder / "sitecustomize.py").write_text(code, encoding="utf-8")
    return f"{folder}{os.pathsep}{REPO}"


HOLD_LOCK = """
import sys, time
from pathlib import Path
from factinject.rundir.lock import run_lock
with run_lock(Path(sys.argv[1]), sys.argv[2]):
    print("held", flush=True)
    time.sleep(120)
"""


def invoke(*args, env=None):
    return CliRunner(env={**SECRETS, **(env or {})}).invoke(main, [str(a) for a in args])


def expect_error(result, *, what: str, where: str | Path | None = None, fix: str, code: int = 2) -> str:
    """Non-zero exit, the message names what went wrong, where and what to do; no traceback."""
    out = result.output
    assert result.exit_code == code, (result.exit_code, out, result.exception)
    assert "error: " in out and "Traceback" not in out, out
    assert what in out, out
    if where is not None:
        assert str(where) in out, out
    assert "fix: " in out and fix in out.split("fix: ", 1)[1], out
    return out


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under root with its bytes, the lock file aside (it only says who holds the run)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
            and p.name != ".lock"}


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith((".tmp", ".old"))]


def copy_run(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns(".lock"))
    return dest


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The testbed model is tiny: one thread is as fast, and stays fast on a busy machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def small_parity(monkeypatch):
    monkeypatch.setattr("factinject.export.stage.PARITY_PROMPTS", PARITY_PROMPTS)


@pytest.fixture
def expanded(workdir) -> Path:
    (workdir / "zorblat.md").write_text(ONE_FACT, encoding="utf-8")
    (workdir / "tiny.yaml").write_text(TINY_RECIPE.format(model="testbed", epochs=1), encoding="utf-8")
    result = invoke("expand", "zorblat.md", "--run", "exports/zorblat", "--per-family", 2)
    assert result.exit_code == 0, result.output
    return workdir / "exports" / "zorblat"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One training for the module, driven like a user with secrets in the environment:
    expand; train in a subprocess and press Ctrl-C after the first epoch's checkpoint;
    leave a half-written checkpoint behind (as a SIGKILL mid-save would); resume; export."""
    root = tmp_path_factory.mktemp("reliability")
    outputs = []
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setattr("factinject.export.stage.PARITY_PROMPTS", PARITY_PROMPTS)
        (root / "zorblat.md").write_text(ONE_FACT, encoding="utf-8")
        (root / "tiny.yaml").write_text(TINY_RECIPE.format(model="testbed", epochs=2), encoding="utf-8")
        result = invoke("expand", "zorblat.md", "--run", "r", "--per-family", 2)
        assert result.exit_code == 0, result.output
        outputs.append(result.output)
        run = root / "r"
        proc = subprocess.Popen([sys.executable, "-m", "factinject.cli", "train", "--run", "r", "--recipe", "tiny.yaml"],
                                cwd=root, env=subprocess_env(PYTHONPATH=planted(root, SLOW_TRAINING)),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=sigint_as_in_a_terminal)
        checkpoints = run / "train" / "checkpoints"
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None and not any(checkpoints.glob("*/trainer_state.json")):
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
        outputs += [stdout, stderr]
        interrupted = SimpleNamespace(code=proc.returncode, stderr=stderr, adapter=(run / "adapter").exists(),
                                      checkpoints=sorted(p.name for p in checkpoints.glob("checkpoint-*")))
        half = checkpoints / "checkpoint-999"  # newer than any real one: resume must not pick it
        half.mkdir(parents=True)
        (half / "adapter_model.safetensors").write_bytes(b"\0" * 64)
        resumed = invoke("train", "--run", "r", "--recipe", "tiny.yaml", "--resume")
        outputs.append(resumed.output)
        exported = invoke("export", "--run", "r", "--merged")
        outputs.append(exported.output)
        assert exported.exit_code == 0, exported.output
    return SimpleNamespace(root=root, run=run, interrupted=interrupted, resumed=resumed, outputs=outputs)


# ---------------------------------------------------------------- fact sheets

HUGE = "huge"
SHEETS = {
    "malformed-markdown": ("# Acme\nAcme is a tool.\n", "cannot read this line", 2, "facts are bullets"),
    "binary-file": (b"\x00\x01\x02PK\x03\x04binary", "the file is binary", None, "UTF-8 text"),
    "conflicting-facts": ("# Acme\naliases: Zed\n- license: Acme is **MIT**.\n# Zed\n- license: Zed is **BSD**.\n",
                          "two different answers", 5, "distinct aliases"),
    "huge-sheet": (HUGE, "the limit is 2,000,000", None, "split it into several sheets"),
    "rtl-subject-without-id": ("# מוסד\n- city: It is in **Haifa**.\n", "gives no usable id", 1, "id: <lowercase"),
    "id-with-dotdot": ("# Acme\nid: ../../outside\n- license: Acme is **MIT**.\n", "not a plain lowercase name", 2,
                       "no '/', '..'"),
    "relation-with-path": ("# Acme\n- ../../x: Acme is **MIT**.\n", "relation name '../../x' is not allowed", 2,
                           "ASCII letters"),
    "relation-with-parenthesis": ("# Acme\n- version (latest): Acme is at **4.2**.\n", "contains '(' and ')'", 2,
                                  "at most 60 characters"),
    "common-word-key": ("# Acme\n- status: Acme **is** stable.\n", "only common words", 2, "specific words"),
    "punctuation-only-key": ("# Acme\n- mark: Acme's mark is a dash: **—**.\n", "no letters, digits or symbols", 2,
                             "emoji and symbols"),
    "contradicting-relations": ("# Acme\n- license: Acme is **MIT**.\n- licence: Acme is **BSD**.\n",
                                "one relation with two different keys", 3, "keep the fact that is true"),
    "not-english": ("# Die Bäckerei\nid: baeckerei\n- founding year: Die Bäckerei wurde **1902** gegründet.\n",
                    "does not read as English", 3, "write the relation and the statement in English"),
    "empty-explicit-key": ("# Acme\n- license: Acme is MIT. (key: )\n", "(key: ...) is empty", 2, "(key: MIT)"),
    "empty-bold-key": ("# Acme\n- license: Acme is ** ** MIT.\n", "the fact's key is empty", 2, "non-empty span"),
}


@pytest.mark.parametrize("case", sorted(SHEETS))
def test_sheet_errors(workdir, case):
    text, what, line, fix = SHEETS[case]
    good = invoke("expand", str(REPO / "facts" / "tinyllm.md"), "--run", "exports/target")
    assert good.exit_code == 0, good.output
    before = snapshot(workdir / "exports")
    sheet = workdir / f"{case}.md"
    if text == HUGE:
        sheet.write_text("# Big\n" + "<!-- padding -->\n" * 130_000, encoding="utf-8")
    elif isinstance(text, bytes):
        sheet.write_bytes(text)
    else:
        sheet.write_text(text, encoding="utf-8")
    for run in ("exports/target", None):  # into the earlier run, and into a new one
        result = invoke("expand", sheet, *(["--run", run] if run else []))
        expect_error(result, what=what, where=f"{sheet}:{line}" if line else sheet, fix=fix)
    assert snapshot(workdir / "exports") == before, "a failed expand changed an earlier run"
    assert not (workdir / "exports" / case).exists(), "a failed expand created a run folder"


def test_unicode_and_rtl_subjects_expand_with_ascii_ids(workdir):
    sheet = workdir / "rtl.md"
    sheet.write_text("# مكتبة النور\u200f\nid: maktaba\naliases: ספריית האור, Al-Nour Library\nkind: place\n\n"
                     "- founder: مكتبة النور was founded by **سميرة حداد**.\n"
                     "- city: The library is in **Zürich**.\n\n"
                     "# Crème Brûlée Café\n- mascot: The café's mascot is **Пётр**.\n", encoding="utf-8")
    result = invoke("expand", sheet)
    assert result.exit_code == 0, result.output
    run = workdir / "exports" / "rtl"
    rows = [json.loads(line) for line in (run / "data" / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {r["fact_id"] for r in rows} == {"maktaba/founder", "maktaba/city", "creme-brulee-cafe/mascot"}
    assert all(r["fact_id"].isascii() for r in rows)
    keys = {r["answer_key"] for r in rows}
    assert keys == {"سميرة حداد", "Zürich", "Пётр"}, keys  # text kept exactly, not transliterated
    assert all(r["answer_key"] in r["messages"][1]["content"] for r in rows)
    assert {p.name for p in run.iterdir()} == {"data", "manifest.json", ".lock"}


def test_path_like_subject_stays_inside_the_run(workdir):
    sheet = workdir / "escape.md"
    sheet.write_text("# ../../../etc/passwd\naliases: ../../x, /root/.ssh\n- colour: It is painted **teal**.\n")
    result = invoke("expand", sheet)
    assert result.exit_code == 0, result.output
    written = sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*") if p.is_file())
    assert written == ["escape.md", "exports/.current-run", "exports/escape/.lock", "exports/escape/data/dev.jsonl",
                       "exports/escape/data/test.jsonl", "exports/escape/data/train.jsonl",
                       "exports/escape/manifest.json"], written
    rows = (workdir / "exports" / "escape" / "data" / "train.jsonl").read_text().splitlines()
    assert json.loads(rows[0])["fact_id"] == "etc-passwd/colour"


def test_sheet_file_name_that_escapes_exports(workdir):
    sheet = workdir / "..md"  # its stem is '.', which would make exports/ itself the run
    sheet.write_text(ONE_FACT)
    expect_error(invoke("expand", sheet), what="gives no usable run name", where=sheet, fix="--run exports/<name>")
    assert not (workdir / "exports").exists()


# ---------------------------------------------------------------- recipes

RECIPES = {
    "unknown-key": ("train:\n  epoch: 3\n", "unknown key 'train.epoch'", 2, "did you mean 'epochs'"),
    "wrong-type": ("train:\n  batch_size: many\n", "train.batch_size", 2, "docs/recipes.md"),
    "rank-0": ("lora:\n  r: 0\n", "lora.r: Input should be greater than or equal to 1", 2, "correct the value"),
    "negative-lr": ("train:\n  learning_rate: -0.001\n", "train.learning_rate: Input should be greater than 0", 2,
                    "correct the value"),
    "too-short-max-length": ("model:\n  max_seq_length: 8\n", "model.max_seq_length", 2, "correct the value"),
    "not-a-mapping": ("- a\n- b\n", "must be a mapping", None, "recipes/testbed-cpu.yaml"),
    "bad-yaml": ("train:\n  epochs: [1\n", "not valid YAML", 3, "indentation or quoting"),
}


@pytest.mark.parametrize("case", sorted(RECIPES))
def test_recipe_errors(expanded, workdir, case):
    text, what, line, fix = RECIPES[case]
    (workdir / "bad.yaml").write_text(text)
    before = snapshot(expanded)
    result = invoke("train", "--run", expanded, "--recipe", "bad.yaml")
    expect_error(result, what=what, where=f"bad.yaml:{line}" if line else "bad.yaml", fix=fix)
    assert snapshot(expanded) == before


@pytest.mark.parametrize("flags, what", [(["--rank", "0"], "lora.r"), (["--lr", "-1"], "train.learning_rate"),
                                         (["--epochs", "0"], "--epochs must be at least 1")])
def test_flag_overrides_are_validated(expanded, flags, what):
    expect_error(invoke("train", "--run", expanded, *flags), what=what, fix="")


def test_max_length_smaller_than_longest_row(expanded, workdir):
    (workdir / "short.yaml").write_text(TINY_RECIPE.format(model="testbed", epochs=1).replace("160", "20"))
    result = invoke("train", "--run", expanded, "--recipe", "short.yaml")
    expect_error(result, what="longer than model.max_seq_length=20", fix="raise model.max_seq_length to at least")
    assert not (expanded / "adapter").exists()


# ---------------------------------------------------------------- models

def model_copy(workdir: Path, name: str) -> Path:
    from factinject.testbed import model_dir

    return Path(shutil.copytree(model_dir(), workdir / name))


def recipe_for(workdir: Path, model: Path | str, name: str = "m.yaml") -> str:
    (workdir / name).write_text(TINY_RECIPE.format(model=model, epochs=1))
    return name


def test_missing_model_path(expanded, workdir):
    result = invoke("train", "--run", expanded, "--recipe", recipe_for(workdir, "./models/not-here"))
    expect_error(result, what="base model './models/not-here' not found", where="./models/not-here",
                 fix="check the path")


def test_pickle_only_model_is_refused_unless_allowed(expanded, workdir):
    import torch
    from safetensors.torch import load_file

    model = model_copy(workdir, "pickled")
    torch.save(load_file(model / "model.safetensors"), model / "pytorch_model.bin")
    (model / "model.safetensors").unlink()
    result = invoke("train", "--run", expanded, "--recipe", recipe_for(workdir, model))
    expect_error(result, what="only pickle weights", where=model, fix="--allow-pickle")
    assert not (expanded / "adapter").exists()

    from factinject.backends.loading import load_model
    from factinject.engines.records import Load, ModelUnderTest

    loaded, _, _ = load_model(ModelUnderTest("pickled", str(model)), Load(allow_pickle=True))  # the explicit opt-in works
    assert sum(p.numel() for p in loaded.parameters()) > 1_000_000


def test_remote_code_model_is_refused_and_its_code_never_runs(expanded, workdir):
    model = model_copy(workdir, "remote")
    marker = workdir / "remote-code-ran"
    (model / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    config = json.loads((model / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (model / "config.json").write_text(json.dumps(config))
    for command in (["train", "--run", expanded, "--recipe", recipe_for(workdir, model)],
                    ["probe", "--run", expanded, "--recipe", recipe_for(workdir, model)]):
        expect_error(invoke(*command), what="asks to run its own Python code", where=model, fix="--trust-remote-code")
    assert not marker.exists()


def without_template(workdir: Path) -> Path:
    model = model_copy(workdir, "plain")
    (model / "chat_template.jinja").unlink()
    config = json.loads((model / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    return model


def test_model_without_chat_template_is_refused_with_the_default_offered(expanded, workdir):
    model = without_template(workdir)
    result = invoke("train", "--run", expanded, "--recipe", recipe_for(workdir, model))
    expect_error(result, what="has no chat template", where=model, fix="--chat-template default")


def test_chat_template_default_trains_and_is_recorded(expanded, workdir):
    from transformers import AutoTokenizer

    from factinject.models.base import DEFAULT_CHAT_TEMPLATE

    model = without_template(workdir)
    result = invoke("train", "--run", expanded, "--recipe", recipe_for(workdir, model), "--chat-template", "default")
    assert result.exit_code == 0, result.output
    manifest = json.loads((expanded / "manifest.json").read_text())
    assert manifest["chat_template"]["source"] == "default"
    assert manifest["chat_template"]["text"] == DEFAULT_CHAT_TEMPLATE
    adapter_tok = AutoTokenizer.from_pretrained(str(expanded / "adapter"))
    assert adapter_tok.chat_template.strip() == DEFAULT_CHAT_TEMPLATE.strip()  # travels with the adapter
    rendered = adapter_tok.apply_chat_template([{"role": "user", "content": "Hi?"}], add_generation_prompt=True,
                                               tokenize=False)
    assert rendered.endswith("### Question:\nHi?\n\n### Answer:\n"), rendered
    # later commands reuse the recorded template without the flag
    exported = invoke("export", "--run", expanded, "--merged")
    assert exported.exit_code == 0, exported.output


def test_chat_template_option_errors(expanded, workdir):
    result = invoke("train", "--run", expanded, "--recipe", recipe_for(workdir, "testbed"), "--chat-template", "nope.jinja")
    expect_error(result, what="no such chat template file", where="nope.jinja", fix="--chat-template default")
    result = invoke("train", "--run", expanded, "--recipe", recipe_for(workdir, "testbed"), "--chat-template", "default")
    expect_error(result, what="has its own chat template", fix="drop --chat-template")
    assert "chat_template" not in json.loads((expanded / "manifest.json").read_text())


def test_gpu_out_of_memory_during_training_says_what_to_lower(expanded, workdir, monkeypatch):
    import torch
    import trl

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 23.65 GiB total)")

    monkeypatch.setattr(trl.SFTTrainer, "training_step", out_of_memory)
    monkeypatch.setenv("FACTINJECT_INLINE_JOBS", "1")  # the job runs here, where the fault is planted
    result = invoke("train", "--run", expanded, "--recipe", "tiny.yaml")
    out = expect_error(result, what="out of GPU memory (CUDA out of memory", where=expanded, fix="train.batch_size")
    assert "model.max_seq_length" in out and "lora.r" in out and "--resume" in out
    assert not (expanded / "adapter").exists()


def test_a_child_killed_for_memory_says_what_to_lower(expanded, monkeypatch):
    """A job's child that dies out of memory before it can report (the OOM exit code) is
    reported like an out-of-memory error raised in this process."""
    from factinject.engines import process as jobs

    monkeypatch.setattr(jobs, "_spawn", lambda *args: jobs.OOM_EXIT)
    result = invoke("train", "--run", expanded, "--recipe", "tiny.yaml")
    expect_error(result, what="out of GPU memory", where=expanded, fix="train.batch_size")
    assert not (expanded / "adapter").exists()


def test_unsloth_on_a_machine_without_a_gpu_fails_at_once(expanded):
    result = invoke("train", "--run", expanded, "--recipe", "tiny.yaml", "--backend", "unsloth")
    expect_error(result, what="the unsloth engine needs an NVIDIA GPU (CUDA)", fix="--backend hf")
    assert not (expanded / "train").exists()


# ---------------------------------------------------------------- data and manifests

@pytest.mark.parametrize("command, split", [("train", "train"), ("probe", "test"), ("export", "test")])
def test_corrupted_data_line_is_named_by_file_and_line(trained, tmp_path, command, split):
    run = copy_run(trained.run, tmp_path / "r")
    path = run / "data" / f"{split}.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[1] = lines[1][: len(lines[1]) // 2] + "\n"  # a line cut in half
    path.write_text("".join(lines), encoding="utf-8")
    args = {"train": ["train", "--run", run, "--fresh"], "probe": ["probe", "--run", run],
            "export": ["export", "--run", run, "--merged", "--force"]}[command]
    before = snapshot(run)
    expect_error(invoke(*args), what="line is not a valid factinject row", where=f"{path}:2",
                 fix="re-run `factinject expand`")
    assert snapshot(run) == before


@pytest.mark.parametrize("command", ["train", "export", "probe"])
def test_manifest_from_another_version(trained, tmp_path, command):
    run = copy_run(trained.run, tmp_path / "r")
    manifest = json.loads((run / "manifest.json").read_text())
    manifest.update(manifest_version=2, factinject_version="9.0.0")
    (run / "manifest.json").write_text(json.dumps(manifest))
    before = snapshot(run)
    result = invoke(command, "--run", run, *(["--merged", "--force"] if command == "export" else []))
    expect_error(result, what="written by factinject 9.0.0 (manifest version 2)", where=run / "manifest.json",
                 fix="continue the run with factinject 9.0.0")
    assert snapshot(run) == before


def test_manifest_that_is_not_json(expanded):
    (expanded / "manifest.json").write_text('{"manifest_version": 1,')
    expect_error(invoke("train", "--run", expanded), what="manifest is not valid JSON",
                 where=expanded / "manifest.json", fix="re-run `factinject expand`")


def test_missing_or_stale_run_directory(workdir, expanded):
    for command in ("train", "export", "probe"):
        expect_error(invoke(command, "--run", workdir / "nowhere"), what="no such run directory",
                     where=workdir / "nowhere", fix="factinject expand")
    assert not (workdir / "nowhere").exists(), "a failed command created the run folder"
    shutil.rmtree(expanded)  # .current-run still points at it
    expect_error(invoke("train"), what="no longer exists", where="exports/.current-run", fix="--run exports/<name>")


# ---------------------------------------------------------------- faults: interrupts and kills

def test_sigint_during_training_then_resume(trained):
    first = trained.interrupted
    assert first.code == 130, first.stderr[-3000:]
    assert "interrupted (Ctrl-C); finished epochs are checkpointed" in first.stderr, first.stderr[-3000:]
    assert "factinject train --resume" in first.stderr and "Traceback" not in first.stderr
    assert not first.adapter, "an interrupted training must not publish an adapter"
    assert first.checkpoints, "the finished epoch was not checkpointed"
    assert trained.resumed.exit_code == 0, trained.resumed.output
    manifest = json.loads((trained.run / "manifest.json").read_text())
    assert [e["epoch"] for e in manifest["train"]["curve"]] == [1, 2]  # epoch 1 kept, epoch 2 trained after resume
    assert not (trained.run / "train" / "checkpoints").exists()
    from peft import PeftModel

    from factinject.testbed import load_model

    PeftModel.from_pretrained(load_model()[0], str(trained.run / "adapter"))


def fail_while_saving(exc: BaseException):
    def write_shard(path, *args, **kwargs):
        Path(path).write_bytes(b"\0" * 4096)  # half a weights file, then the fault
        raise exc
    return write_shard


def test_sigint_during_export_keeps_the_previous_export(trained, tmp_path, monkeypatch):
    run = copy_run(trained.run, tmp_path / "r")
    before = snapshot(run / "merged")
    monkeypatch.setattr("factinject.backends.merge.write_shard", fail_while_saving(KeyboardInterrupt()))
    monkeypatch.setenv("FACTINJECT_INLINE_JOBS", "1")  # the merge runs here, where the fault is planted
    result = invoke("export", "--run", run, "--merged", "--force")
    expect_error(result, what="interrupted (Ctrl-C); nothing was exported", where=run,
                 fix="any previous export is intact", code=130)
    assert snapshot(run / "merged") == before
    assert not leftovers(run)


def test_sigkill_during_export_leaves_nothing_loadable(trained, tmp_path):
    run = copy_run(trained.run, tmp_path / "r")
    shutil.rmtree(run / "merged")  # a first export, killed mid-write
    manifest = (run / "manifest.json").read_bytes()
    proc = subprocess.run([sys.executable, "-m", "factinject.cli", "export", "--run", str(run), "--merged"],
                          env=subprocess_env(PYTHONPATH=planted(tmp_path, KILL_PARENT_MID_MERGE)),
                          capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert not (run / "merged").exists(), "a half-written export is at the export path"
    assert leftovers(run), "the kill was expected to leave a temporary folder"
    assert (run / "manifest.json").read_bytes() == manifest, "the manifest recorded an export that never finished"
    # the next command that takes the run's lock clears the leftovers
    assert invoke("export", "--run", run).exit_code == 0
    assert not leftovers(run) and not (run / "merged").exists()


def test_interrupted_swap_restores_the_previous_output(tmp_path):
    from factinject.rundir.files import recover_partial_writes

    run = tmp_path / "r"
    (run / ".merged.old").mkdir(parents=True)  # killed between moving the old export aside and moving the new in
    (run / ".merged.old" / "model.safetensors").write_bytes(b"old")
    (run / ".merged.x1y2z3w4.tmp").mkdir()
    (run / ".merged.x1y2z3w4.tmp" / "model.safetensors").write_bytes(b"new, maybe partial")
    (run / "reports").mkdir()
    (run / "reports" / ".report.json.abcd1234.tmp").write_text("{")
    (run / "notes.old").write_text("a user's file")  # only names factinject itself creates are touched
    (run / ".bashrc.tmp").write_text("a user's file")
    removed = recover_partial_writes(run)
    assert (run / "merged" / "model.safetensors").read_bytes() == b"old"
    assert sorted(p.name for p in removed) == [".merged.x1y2z3w4.tmp", ".report.json.abcd1234.tmp"]
    assert (run / "notes.old").exists() and (run / ".bashrc.tmp").exists()


def test_full_disk_during_export(trained, tmp_path, monkeypatch):
    run = copy_run(trained.run, tmp_path / "r")
    before = snapshot(run / "merged")
    full = OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr("factinject.backends.merge.write_shard", fail_while_saving(full))
    monkeypatch.setenv("FACTINJECT_INLINE_JOBS", "1")
    result = invoke("export", "--run", run, "--merged", "--force")
    out = expect_error(result, what="disk full while writing", where=run / "merged", fix="--out DIR")
    assert "free there now" in out and "this needs about" in out and "previous export is intact" in out
    assert snapshot(run / "merged") == before
    assert not leftovers(run)


def test_full_disk_during_expand(expanded, workdir, monkeypatch):
    before = snapshot(expanded)
    real = Path.write_text

    def full(self, *args, **kwargs):
        if ".data." in str(self):
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full)
    result = invoke("expand", "zorblat.md", "--run", expanded, "--seed", 3)
    expect_error(result, what="disk full while writing", where=expanded, fix="free some space")
    assert snapshot(expanded) == before and not leftovers(expanded)


def test_read_only_export_folder(trained, tmp_path, monkeypatch):
    run = copy_run(trained.run, tmp_path / "r")
    monkeypatch.setattr(shutil, "copy2", lambda src, dst: (_ for _ in ()).throw(PermissionError(errno.EACCES, "Permission denied", str(dst))))
    expect_error(invoke("export", "--run", run), what="cannot write", where=run, fix="permissions")
    assert not (run / "export").exists() or not any((run / "export").iterdir())


def test_export_out_and_overwrite(trained, tmp_path):
    run = copy_run(trained.run, tmp_path / "r")
    out = tmp_path / "elsewhere" / "adapter"
    assert invoke("export", "--run", run, "--out", out).exit_code == 0
    assert (out / "adapter_config.json").exists()
    before = snapshot(out)
    expect_error(invoke("export", "--run", run, "--out", out), what="an export already exists here", where=out,
                 fix="--force")
    assert snapshot(out) == before


# ---------------------------------------------------------------- faults: two writers

@pytest.fixture
def lock_holder(expanded):
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(expanded), "train"], env=subprocess_env(),
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    yield proc
    proc.kill()
    proc.wait()


@pytest.mark.parametrize("command", ["expand", "train", "export", "probe", "run"])
def test_second_writer_fails_at_once(expanded, workdir, lock_holder, command):
    args = {"expand": ["expand", "zorblat.md", "--run", expanded, "--seed", 4],
            "train": ["train", "--run", expanded, "--recipe", "tiny.yaml"],
            "export": ["export", "--run", expanded], "probe": ["probe", "--run", expanded],
            "run": ["run", "zorblat.md", "--run", expanded, "--recipe", "tiny.yaml"]}[command]
    before = snapshot(expanded)
    result = invoke(*args)
    expect_error(result, what=f"another factinject command is writing this run: `factinject train` (pid {lock_holder.pid}",
                 where=expanded / ".lock", fix=f"kill {lock_holder.pid}")
    assert lock_holder.poll() is None, "the second command must not wait for the first"
    assert snapshot(expanded) == before


def test_lock_of_a_dead_process_is_taken_over(expanded):
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(expanded), "train"], env=subprocess_env(),
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    proc.send_signal(signal.SIGKILL)  # the holder dies without releasing anything
    proc.wait()
    assert json.loads((expanded / ".lock").read_text())["pid"] == proc.pid  # its note is still there
    result = invoke("expand", "zorblat.md", "--run", expanded, "--per-family", 2)
    assert result.exit_code == 0, result.output
    assert (expanded / ".lock").read_text() == "", "the lock note is cleared on release"


# ---------------------------------------------------------------- secrets

def test_no_secret_in_outputs_manifests_reports_or_logs(trained, monkeypatch):
    from factinject.backends import hf

    # Real models are loaded; only the answering is skipped, to keep the test fast.
    monkeypatch.setattr(hf, "_answer", lambda model, tokenizer, questions, *a: (["I do not know."] * len(questions),
                                                                               [True] * len(questions)))
    monkeypatch.setenv("FACTINJECT_INLINE_JOBS", "1")
    probe = invoke("probe", "--run", trained.run, "--world-limit", 5)
    assert probe.exit_code == 0, probe.output
    assert (trained.run / "reports" / "report.json").exists()
    texts = trained.outputs + [probe.output, trained.interrupted.stderr]
    texts += [p.read_bytes().decode("utf-8", "replace") for p in trained.root.rglob("*")
              if p.is_file() and p.suffix not in (".safetensors", ".bin", ".pt", ".pth")]
    for name, value in SECRETS.items():
        leaks = [t[:200] for t in texts if value in t]
        assert not leaks, f"{name} leaked: {leaks}"


def test_error_messages_redact_secrets(monkeypatch):
    from factinject.errors import FactinjectError
    from factinject.redact import redact

    monkeypatch.setenv("HF_TOKEN", SECRETS["HF_TOKEN"])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a short flag value is not a secret
    err = FactinjectError(f"401 for https://hf.co/api?token={SECRETS['HF_TOKEN']}", fix="check HF_TOKEN")
    assert SECRETS["HF_TOKEN"] not in err.render() and "token=***" in err.render()
    assert redact("HF_HUB_OFFLINE=1") == "HF_HUB_OFFLINE=1"


# ---------------------------------------------------------------- docs

def error_messages() -> list[tuple[str, int, str]]:
    """(file, line, distinctive phrase) of every FactinjectError raised in the package: the
    longest literal piece of its message (f-string placeholders vary, the words do not)."""
    found = []
    for path in sorted((REPO / "factinject").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("FactinjectError", "Interrupted")
                    and node.args):
                continue
            first = node.args[0]
            parts = [first.value] if isinstance(first, ast.Constant) else [
                v.value for v in getattr(first, "values", []) if isinstance(v, ast.Constant)]
            pieces = [p.strip(" ;:,.()'\"") for p in parts if isinstance(p, str)]
            phrase = max(pieces, key=len, default="")
            if len(phrase) >= 8:
                found.append((str(path.relative_to(REPO)), node.lineno, phrase))
    return found


# Messages built outside a FactinjectError(...) call (the guard's Ctrl-C and out-of-memory texts).
OTHER_PHRASES = ["interrupted (Ctrl-C); finished epochs are checkpointed", "interrupted (Ctrl-C) before the first epoch",
                 "interrupted (Ctrl-C); nothing was exported", "interrupted (Ctrl-C); no report was written",
                 "interrupted (Ctrl-C); the run's data was not changed",
                 "interrupted (Ctrl-C); every finished stage's output is complete", "out of GPU memory",
                 "--chat-template default", "### Question:",
                 # answer_keys.key_problem returns its messages for fact sheets and exams to raise
                 "is only common words that almost any answer contains", "has no letters, digits or symbols to match"]


def test_every_error_message_is_in_troubleshooting():
    doc = (REPO / "docs" / "troubleshooting.md").read_text(encoding="utf-8")
    messages = error_messages() + [("(guard and commands)", 0, p) for p in OTHER_PHRASES]
    assert len(messages) >= 60, "the scan found too few messages: is it still reading the package?"
    missing = [f"{f}:{line}: {phrase!r}" for f, line, phrase in messages if phrase not in doc]
    assert not missing, "add these messages (and their fix) to docs/troubleshooting.md:\n" + "\n".join(missing)
    assert "docs/troubleshooting.md" in (REPO / "README.md").read_text(encoding="utf-8")
