"""The reliability catalogue (tests/reliability.py): faults: interrupts and kills."""

from __future__ import annotations

import errno
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from reliability import (
    KILL_PARENT_MID_MERGE,
    copy_run,
    expect_error,
    invoke,
    leftovers,
    planted,
    snapshot,
    subprocess_env,
)

pytestmark = pytest.mark.usefixtures("one_thread", "small_parity")


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
