"""The reliability catalogue: bad inputs and faults, each with a test (in tests/test_reliability_*.py).

This module holds what those tests share: the tiny sheet and recipe, the planted
faults, and one training driven like a user (`trained`, once per test session).

Every case ends in a clear message (what, where, what to do), a non-zero exit, and
nothing lost or half-written. docs/troubleshooting.md lists every message and its
fix; tests/test_reliability_docs.py checks that no message is missing from it.

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
| data: a manifest value of the wrong type | test_manifest_with_a_value_of_the_wrong_type[export/probe] (every section: tests/test_tables.py) |
| SIGINT during train, resume | test_sigint_during_training_then_resume |
| SIGKILL during train, resume | tests/test_pipeline.py::test_train_survives_sigkill_and_resumes; incomplete checkpoint: test_sigint_during_training_then_resume |
| SIGINT during export | test_sigint_during_export_keeps_the_previous_export |
| SIGKILL during export | test_sigkill_during_export_leaves_nothing_loadable, test_interrupted_swap_restores_the_previous_output |
| full disk during export | test_full_disk_during_export, test_full_disk_during_expand |
| two commands writing one run | test_second_writer_fails_at_once[expand/train/export/probe/run], test_lock_of_a_dead_process_is_taken_over |
| secrets | test_no_secret_in_outputs_manifests_reports_or_logs, test_error_messages_redact_secrets |
| also | test_missing_or_stale_run_directory, test_read_only_export_folder, test_export_out_and_overwrite |
| export --out on a user's folder (with and without --force) | tests/test_reliability_owned.py::test_export_out_refuses_a_users_folder, test_export_force_replaces_only_what_factinject_wrote, test_an_export_without_a_marker_is_recognised_by_the_manifest |
| expand / run --run on a folder that is not a run | test_expand_and_run_refuse_a_folder_that_is_not_a_run, test_foreign_manifest_is_not_a_run |
| output paths that cannot be folders (a file, under a file, /dev/null, /proc) | test_out_and_run_paths_that_cannot_be_folders |
| retraining a run: refused, then its export and report stale; a stale merge never probed | test_retraining_is_refused_then_marks_the_export_stale |
| any weights file damaged or truncated (adapter, merged, checkpoint) | test_damaged_weights_are_named_before_any_work, test_damaged_checkpoint_is_dropped_and_resume_says_so |
| empty recipe; empty fact value; resume with other flags | test_empty_recipe_is_refused, test_empty_fact_value_says_so, test_resume_with_other_flags_points_at_fresh |
| exam rows: a number or an empty question, the same question twice, one over the context | test_exam_rows_that_cannot_be_asked, test_exam_question_longer_than_the_context |
| file modes follow the umask; the bitsandbytes hub-kernel notice | test_published_files_follow_the_users_umask, test_the_hub_kernel_notice_of_bitsandbytes_is_not_shown |
| every stage interrupted by SIGINT, SIGTERM, SIGKILL; rerun resumes or refuses clearly | tests/test_reliability_interrupts.py |
| docs | test_every_error_message_is_in_troubleshooting |
"""

from __future__ import annotations

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


@pytest.fixture(scope="module")
def one_thread():
    """The testbed model is tiny: one thread is as fast, and stays fast on a busy machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def small_parity(monkeypatch):
    monkeypatch.setattr("factinject.export.stage.PARITY_PROMPTS", PARITY_PROMPTS)


@pytest.fixture
def expanded(workdir) -> Path:
    (workdir / "zorblat.md").write_text(ONE_FACT, encoding="utf-8")
    (workdir / "tiny.yaml").write_text(TINY_RECIPE.format(model="testbed", epochs=1), encoding="utf-8")
    result = invoke("expand", "zorblat.md", "--run", "exports/zorblat", "--per-family", 2)
    assert result.exit_code == 0, result.output
    return workdir / "exports" / "zorblat"


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """One training for every reliability test, driven like a user with secrets in the environment:
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
