"""The reliability catalogue (tests/reliability.py): what a user owns is never deleted,
and a stale or damaged output is never used as current."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import pytest
from reliability import ONE_FACT, copy_run, expect_error, invoke, leftovers, snapshot

pytestmark = pytest.mark.usefixtures("one_thread", "small_parity")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def users_folder(root: Path) -> Path:
    """A folder of the user's: a file at the top, one in a `data/` subfolder (the name a run uses)."""
    (root / "data").mkdir(parents=True)
    (root / "important.txt").write_text("keep\n")
    (root / "data" / "notes.txt").write_text("notes\n")
    root.chmod(0o755)
    return root


# --- export --out: never into a folder factinject did not write -------------------------------

@pytest.mark.parametrize("merged", [True, False], ids=["merged", "adapter"])
@pytest.mark.parametrize("force", [False, True], ids=["plain", "force"])
def test_export_out_refuses_a_users_folder(trained, tmp_path, merged, force):
    run = copy_run(trained.run, tmp_path / "r")
    out = users_folder(tmp_path / "out dir")
    before, run_before = snapshot(out), snapshot(run)
    result = invoke("export", "--run", run, "--out", out, *(["--merged"] if merged else []), *(["--force"] if force else []))
    expect_error(result, what="this folder is not a factinject export and is not empty (data, important.txt)",
                 where=out, fix="new or empty folder with --out DIR")
    assert snapshot(out) == before and mode(out) == 0o755
    assert snapshot(run) == run_before and not leftovers(tmp_path)


def test_export_force_replaces_only_what_factinject_wrote(trained, tmp_path):
    run = copy_run(trained.run, tmp_path / "r")
    out = tmp_path / "empty"
    out.mkdir()
    assert invoke("export", "--run", run, "--out", out).exit_code == 0  # an empty folder needs no --force
    marker_file = "factinject_export.json"
    marker = json.loads((out / marker_file).read_text())
    assert marker["kind"] == "adapter" and set(marker["files"]) == {p.name for p in out.iterdir()} - {marker_file}
    assert invoke("export", "--run", run, "--out", out, "--force").exit_code == 0  # its own export: replaced
    (out / "my-notes.md").write_text("mine\n")  # a file added to the export by hand
    before = snapshot(out)
    expect_error(invoke("export", "--run", run, "--out", out, "--force"),
                 what="this folder holds files factinject did not write (my-notes.md)", where=out, fix="--out DIR")
    assert snapshot(out) == before


def test_an_export_without_a_marker_is_recognised_by_the_manifest(trained, tmp_path):
    """An export written before exports carried a marker is still factinject's: the run recorded its files."""
    run = copy_run(trained.run, tmp_path / "r")
    (run / "merged" / "factinject_export.json").unlink()
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["export"]["merged"]["files"].pop("factinject_export.json", None)
    (run / "manifest.json").write_text(json.dumps(manifest))
    expect_error(invoke("export", "--run", run, "--merged"), what="an export already exists here", where=run / "merged",
                 fix="--force")


@pytest.mark.parametrize("where", ["file", "under-a-file", "dev-null", "proc"])
def test_out_and_run_paths_that_cannot_be_folders(trained, tmp_path, where):
    run = copy_run(trained.run, tmp_path / "r")
    (tmp_path / "notes.txt").write_text("mine\n")
    path, what = {"file": (tmp_path / "notes.txt", "is not a folder"),
                  "under-a-file": (tmp_path / "notes.txt" / "x", "cannot be created"),
                  "dev-null": (Path("/dev/null/x"), "cannot be created"),
                  "proc": (Path("/proc/factinject-test"), "system folder")}[where]
    expect_error(invoke("export", "--run", run, "--out", path), what=what, where=path, fix="folder")
    (tmp_path / "s.md").write_text(ONE_FACT)
    expect_error(invoke("expand", tmp_path / "s.md", "--run", path), what=what, where=path, fix="folder")
    expect_error(invoke("run", tmp_path / "s.md", "--run", path), what=what, where=path, fix="folder")
    assert (tmp_path / "notes.txt").read_text() == "mine\n"


# --- expand / run --run: never into a folder that is not a run ---------------------------------

@pytest.mark.parametrize("command", ["expand", "run"])
def test_expand_and_run_refuse_a_folder_that_is_not_a_run(workdir, command):
    (workdir / "s.md").write_text(ONE_FACT)
    folder = users_folder(workdir / "userproj")
    before = snapshot(folder)
    expect_error(invoke(command, "s.md", "--run", folder),
                 what="this folder is not a factinject run and is not empty (it holds data, important.txt)",
                 where=folder, fix="new or empty folder")
    assert snapshot(folder) == before and not (folder / ".lock").exists(), "a refused folder must stay as it was"
    assert invoke("expand", "s.md", "--run", workdir / "empty").exit_code == 0  # new: fine
    (workdir / "empty2").mkdir()
    assert invoke("expand", "s.md", "--run", workdir / "empty2").exit_code == 0  # empty: fine
    assert invoke("expand", "s.md", "--run", workdir / "empty2", "--seed", 2).exit_code == 0  # its own run: fine


def test_published_files_follow_the_users_umask(workdir):
    (workdir / "s.md").write_text(ONE_FACT)
    old = os.umask(0o022)
    try:
        assert invoke("expand", "s.md", "--run", "r").exit_code == 0
        assert mode(workdir / "r" / "data") == 0o755 and mode(workdir / "r" / "manifest.json") == 0o644
        assert mode(workdir / "r" / "data" / "train.jsonl") == 0o644
        os.umask(0o077)
        assert invoke("expand", "s.md", "--run", "r2").exit_code == 0
        assert mode(workdir / "r2" / "data") == 0o700 and mode(workdir / "r2" / "manifest.json") == 0o600
    finally:
        os.umask(old)


def test_foreign_manifest_is_not_a_run(workdir):
    (workdir / "s.md").write_text(ONE_FACT)
    (workdir / "theirs").mkdir()
    (workdir / "theirs" / "manifest.json").write_text('{"name": "my web app", "icons": []}')
    expect_error(invoke("train", "--run", workdir / "theirs"), what="manifest.json was not written by factinject",
                 where=workdir / "theirs" / "manifest.json", fix="expand into a new or empty folder")
    expect_error(invoke("expand", "s.md", "--run", workdir / "theirs"), what="is not a factinject run",
                 where=workdir / "theirs", fix="new or empty folder")


# --- recipes and sheets ------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["", "# only a comment\n\n"], ids=["0-bytes", "comments"])
def test_empty_recipe_is_refused(expanded, workdir, text):
    (workdir / "empty.yaml").write_text(text)
    before = snapshot(expanded)
    expect_error(invoke("train", "--run", expanded, "--recipe", "empty.yaml"), what="the recipe is empty",
                 where="empty.yaml", fix="testbed-cpu")
    assert snapshot(expanded) == before


def test_empty_fact_value_says_so(workdir):
    (workdir / "s.md").write_text("# Zorblat\n- colour: \n")
    expect_error(invoke("expand", "s.md"), what="the bullet names the relation 'colour' but states nothing after it",
                 where="s.md:2", fix="write the statement after the colon")
    assert not (workdir / "exports").exists()


# --- retraining: a stale export or report is never taken for the new adapter -------------------

def test_retraining_is_refused_then_marks_the_export_stale(trained, tmp_path, workdir):
    run = copy_run(trained.run, tmp_path / "r")
    before = snapshot(run)
    expect_error(invoke("train", "--run", run, "--recipe", trained.root / "tiny.yaml"),
                 what="this run already holds a trained adapter (and a merged export",
                 where=run / "adapter", fix="pass --force")
    assert snapshot(run) == before
    (workdir / "other.yaml").write_text((trained.root / "tiny.yaml").read_text()
                                        .replace("epochs: 2", "epochs: 1\n  learning_rate: 0.003"))
    retrained = invoke("train", "--run", run, "--recipe", "other.yaml", "--force")
    assert retrained.exit_code == 0, retrained.output
    assert "the merged export in" in retrained.output and "now stale" in retrained.output
    expect_error(invoke("probe", "--run", run), what="the merged export was made from an earlier adapter",
                 where=run / "merged", fix="--merged --force")
    assert invoke("export", "--run", run, "--merged", "--force").exit_code == 0
    probed = invoke("probe", "--run", run)
    assert probed.exit_code == 0, probed.output
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["export"]["merged"]["adapter_files"] == manifest["train"]["adapter_files"]
    assert manifest["probe"]["adapter_files"] == manifest["train"]["adapter_files"]


# --- any weights file in a run, damaged or truncated -------------------------------------------

def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def garble_header(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[8:16] = b"\xff\xfe{{{{{{"
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [truncate, garble_header], ids=["truncated", "garbled"])
@pytest.mark.parametrize("case", ["adapter-export", "adapter-probe", "merged-probe"])
def test_damaged_weights_are_named_before_any_work(trained, tmp_path, damage, case):
    run = copy_run(trained.run, tmp_path / "r")
    folder, command = {"adapter-export": ("adapter", ["export", "--merged", "--force"]),
                       "adapter-probe": ("adapter", ["probe"]), "merged-probe": ("merged", ["probe"])}[case]
    path = next((run / folder).glob("*.safetensors"))
    damage(path)
    before = snapshot(run)
    fix = "factinject train --force" if folder == "adapter" else "--merged --force"
    what = "is not the file training wrote" if folder == "adapter" else "the weights file is"
    expect_error(invoke(command[0], "--run", run, *command[1:]), what=what, where=path, fix=fix)
    assert snapshot(run) == before


def test_damaged_checkpoint_is_dropped_and_resume_says_so(expanded, workdir):
    from factinject.rundir.files import write_text_atomic

    state = expanded / "train"
    ckpt = state / "checkpoints" / "checkpoint-4"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text("{}")
    (ckpt / "adapter_model.safetensors").write_bytes(b"\x10\0\0\0\0\0\0\0{}")  # header says 16 bytes, has 2
    write_text_atomic(state / "job.json", json.dumps({"fingerprint": "whatever"}))
    result = invoke("train", "--run", expanded, "--recipe", "tiny.yaml", "--resume")
    out = expect_error(result, what="there is no interrupted training to resume", where=state, fix="without --resume")
    assert "cannot be resumed from (adapter_model.safetensors: the weights file is damaged" in out
    assert not ckpt.exists()


def test_resume_with_other_flags_points_at_fresh(expanded, workdir):
    from factinject.rundir.files import write_text_atomic

    ckpt = expanded / "train" / "checkpoints" / "checkpoint-4"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text("{}")
    write_text_atomic(expanded / "train" / "job.json", json.dumps({"fingerprint": "another recipe"}))
    expect_error(invoke("train", "--run", expanded, "--recipe", "tiny.yaml", "--resume"),
                 what="the interrupted training used another recipe or other data", where=expanded / "train",
                 fix="`factinject train --fresh`")


# --- exams --------------------------------------------------------------------------------------

@pytest.mark.parametrize("rows, what, line", [
    ([{"question": 42, "answer_key": "teal"}], "the question must be text, not 42", 1),
    ([{"question": "", "answer_key": "teal"}], "the question is empty", 1),
    ([{"question": "What colour is Zorblat?", "answer_key": "teal"},
      {"question": "what colour is Zorblat", "answer_key": "red"}], "the same question as line 1 with another key", 2),
    ([{"question": "What colour is Zorblat?", "answer_key": "teal"},
      {"question": "What colour is Zorblat?", "answer_key": "teal"}], "the same question as line 1", 2),
], ids=["number", "empty", "twice-other-key", "twice"])
def test_exam_rows_that_cannot_be_asked(expanded, workdir, rows, what, line):
    (workdir / "exam.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    before = snapshot(expanded)
    expect_error(invoke("probe", "--run", expanded, "--questions", "exam.jsonl"), what=what,
                 where=f"exam.jsonl:{line}", fix="")
    assert snapshot(expanded) == before


def test_exam_question_longer_than_the_context(expanded, workdir):
    (workdir / "exam.jsonl").write_text(json.dumps({"question": "What colour is Zorblat? " * 300,
                                                    "answer_key": "teal"}) + "\n")
    before = snapshot(expanded)
    out = expect_error(invoke("probe", "--run", expanded, "--questions", "exam.jsonl"),
                       what="does not fit the model's context of 512 tokens", where="exam.jsonl:1",
                       fix="shorten the question")
    assert "Token indices sequence length" not in out
    assert snapshot(expanded) == before


# --- output a user sees -------------------------------------------------------------------------

def test_the_hub_kernel_notice_of_bitsandbytes_is_not_shown(caplog):
    import factinject.backends  # noqa: F401 - installs the filter, as every engine's child process does

    logger = logging.getLogger("bitsandbytes.backends.cpu.ops")
    with caplog.at_level(logging.WARNING, logger=logger.name):
        logger.warning("Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please make sure you "
                       "already `pip install kernels`", "No module named 'kernels'")
        logger.warning("another bitsandbytes warning")
    assert [r.getMessage() for r in caplog.records] == ["another bitsandbytes warning"]


def test_full_disk_during_export_out_names_the_export_not_the_file_copied(trained, tmp_path, monkeypatch):
    import errno
    import shutil

    run = copy_run(trained.run, tmp_path / "r")
    out = tmp_path / "other disk" / "adapter"
    real = shutil.copy2

    def full(src, dst, *args, **kwargs):
        if "other disk" in str(dst):
            raise OSError(errno.ENOSPC, "No space left on device", str(src))  # as copy2 reports it: the source
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(shutil, "copy2", full)
    before = snapshot(run)
    out_text = expect_error(invoke("export", "--run", run, "--out", out), what=f"disk full while writing {out}",
                            where=out, fix="--out DIR")
    assert str(run / "adapter") not in out_text.split("fix:")[0], out_text
    assert snapshot(run) == before and not (out.exists() and any(out.iterdir())) and not leftovers(tmp_path)
