"""The reliability catalogue (tests/reliability.py): every stage interrupted by SIGINT,
SIGTERM and SIGKILL at a point of its work, driven as a user would.

For each case: the interrupted command ends with the signal's exit status and no
traceback; nothing the run held before changed (a SIGKILL may leave hidden temporary
files, which the next command clears); then the command is run again and either
finishes or refuses with a clear message whose fix (`--resume`) then finishes; and the
run's record matches its files.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from reliability import ONE_FACT, TINY_RECIPE, copy_run, leftovers, planted, sigint_as_in_a_terminal, subprocess_env

pytestmark = pytest.mark.slow

# Planted in every process of the command (tests/reliability.py: planted): in the process whose
# arguments start with FI_ARGV, FI_AT (module:attribute) is wrapped so that its first call sends
# FI_SIGNAL to this process or to its parent (the command, when a job's child does the work),
# before the call or, with FI_AFTER=1, once it returned.
FAULT = """
import importlib, os, signal, sys, time
_when = os.environ["FI_ARGV"].split()
if sys.argv[1:1 + len(_when)] == _when:
    _module, _, _attr = os.environ["FI_AT"].partition(":")
    _owner = importlib.import_module(_module)
    *_path, _name = _attr.split(".")
    for _part in _path:
        _owner = getattr(_owner, _part)
    _real = getattr(_owner, _name)
    _sig = getattr(signal, os.environ["FI_SIGNAL"])
    _fired = []
    def _fault(*args, **kwargs):
        if _fired:
            return _real(*args, **kwargs)
        _fired.append(1)
        out = _real(*args, **kwargs) if os.environ.get("FI_AFTER") == "1" else None
        os.kill(os.getppid() if os.environ["FI_TO"] == "parent" else os.getpid(), _sig)
        time.sleep(60)  # the signal (or the command passing Ctrl-C on to its job) ends this
        return out
    setattr(_owner, _name, _fault)
"""

# stage -> (command, where the fault fires, which process, signalled process, after the call?)
POINTS = {
    "expand": (["expand", "s.md", "--run", "r", "--seed", "5"], "factinject.expand.write:expand_sheets",
               "expand", "self", False),
    "train": (["train", "--run", "r", "--recipe", "tiny.yaml"], "transformers:Trainer._save_checkpoint",
              "hf train", "parent", True),
    "export": (["export", "--run", "r", "--merged", "--force"], "factinject.backends.merge:write_shard",
               "hf export", "parent", False),
    "probe": (["probe", "--run", "r", "--world-limit", "20"], "factinject.probe.stage:teacher_forced_locality", "probe", "self", False),
}
EXIT = {"SIGINT": 130, "SIGTERM": 143, "SIGKILL": -signal.SIGKILL}
IGNORED = (".lock",)


def outputs(run: Path) -> dict[str, bytes]:
    """What the run holds for the user: every file but the lock, training's resumable state, the
    probe's answer cache and a kill's hidden temporary files (cleared by the next command)."""
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*"))
            if p.is_file() and p.name not in IGNORED and not p.relative_to(run).parts[0] == "train"
            and ".cache" not in p.parts and not any(part.endswith((".tmp", ".old")) for part in p.parts)}


def cli(cwd: Path, args: list[str], **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "factinject.cli", *args], cwd=cwd, env=subprocess_env(**env),
                          capture_output=True, text=True, timeout=300, check=False, preexec_fn=sigint_as_in_a_terminal)


@pytest.fixture
def stage_run(request, tmp_path, trained):
    """The run each stage starts from: an expanded run for expand and train, a trained and
    exported one (the catalogue's shared training) for export and probe."""
    stage = request.param
    (tmp_path / "s.md").write_text(ONE_FACT, encoding="utf-8")
    (tmp_path / "tiny.yaml").write_text(TINY_RECIPE.format(model="testbed", epochs=2), encoding="utf-8")
    if stage in ("export", "probe"):
        copy_run(trained.run, tmp_path / "r")
    else:
        done = cli(tmp_path, ["expand", "s.md", "--run", "r", "--per-family", "2"])
        assert done.returncode == 0, done.stderr
    return stage, tmp_path


@pytest.mark.timeout(600)
@pytest.mark.parametrize("signame", list(EXIT))
@pytest.mark.parametrize("stage_run", list(POINTS), indirect=True)
def test_interrupted_stage_keeps_earlier_outputs_and_recovers(stage_run, signame):
    stage, root = stage_run
    run = root / "r"
    args, at, argv, to, after = POINTS[stage]
    before = outputs(run)
    env = {"PYTHONPATH": planted(root, FAULT), "FI_AT": at, "FI_ARGV": argv, "FI_TO": to, "FI_SIGNAL": signame,
           "FI_AFTER": "1" if after else "0"}
    stopped = cli(root, args, **env)
    assert stopped.returncode == EXIT[signame], (stopped.returncode, stopped.stderr[-3000:])
    assert "Traceback" not in stopped.stderr, stopped.stderr[-3000:]
    if signame != "SIGKILL":
        assert f"interrupted ({'SIGTERM' if signame == 'SIGTERM' else 'Ctrl-C'})" in stopped.stderr, stopped.stderr
        assert not leftovers(run), "an interrupted command left temporary files behind"
    assert outputs(run) == before, "an interrupted command changed what the run held"

    again = cli(root, args)
    if again.returncode == 2:  # a clear refusal: do what its fix says
        assert "error: " in again.stderr and "fix: " in again.stderr and "Traceback" not in again.stderr, again.stderr
        fix = again.stderr.split("fix: ", 1)[1]
        assert "--resume" in fix, again.stderr
        again = cli(root, [*args, "--resume"])
    assert again.returncode == 0, again.stderr[-3000:]
    assert not leftovers(run)
    from factinject.rundir.files import Run

    record = Run(run).checked_record()  # the data matches its record
    if record.train:
        Run(run).check_adapter(record)  # and the adapter too
    if stage == "train":
        assert [e["epoch"] for e in record.train.curve] == [1, 2], "resume did not go on from the checkpoint"
    assert re.search(r"\S", again.stdout), "the rerun printed nothing"
