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
