"""The reliability catalogue (tests/reliability.py): faults: two writers."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest
from reliability import HOLD_LOCK, expect_error, invoke, snapshot, subprocess_env

pytestmark = pytest.mark.usefixtures("one_thread", "small_parity")


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


def test_an_atomic_write_syncs_its_data_then_the_folder_that_names_it(tmp_path, monkeypatch):
    """A power cut after the rename keeps the new file: its data is synced before the
    rename, and the folder holding the new name after it (a swapped folder: every file)."""
    import os

    from factinject.rundir import files

    synced: list[str] = []
    real_fsync = os.fsync

    def remember_fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))  # what the descriptor names (Linux)
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", remember_fsync)
    files.write_text_atomic(tmp_path / "a.json", "{}")
    assert len(synced) == 2 and synced[0].endswith(".tmp") and synced[1] == str(tmp_path)
    synced.clear()
    with files.atomic_dir(tmp_path / "out") as tmp:
        (tmp / "weights.bin").write_bytes(b"x" * 10)
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b.txt").write_text("b")
    assert (tmp_path / "out" / "sub" / "b.txt").read_text() == "b"
    assert any(s.endswith("weights.bin") for s in synced) and any(s.endswith("b.txt") for s in synced)
    assert synced[-1] == str(tmp_path), "the folder that names the swapped output is synced last"
