"""Heavy jobs run in child processes: one interface (train, merge, generate) over engines.

Every job that loads a model (training, merging, generating answers) runs in a
child process that owns the model from load to release: when the child exits, all
of its memory (GPU memory included) is returned, and two engines never pile up in
one process. The job travels as JSON (a dataclass turned into a dict), so whatever
the child needs, the chat template included, is data, not state of this process.

    run_job("hf", "generate", job_dict) -> result dict

Errors come back as they were raised: a FactinjectError with its where and fix,
CUDA out-of-memory, an OSError with its errno (full disk), Ctrl-C. With
FACTINJECT_INLINE_JOBS=1 the same job runs inside this process, through the same
JSON boundary (for a debugger, and for tests that inject faults).

No heavy imports here: this module is loaded by the CLI.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
from pathlib import Path

from factinject.engines import ENGINES
from factinject.errors import FactinjectError

INLINE_ENV = "FACTINJECT_INLINE_JOBS"
OOM_EXIT = 3  # a child's exit code for out-of-memory, in case it dies before writing its result


class ChildFailed(FactinjectError):
    """A job's child process died without a result (a crash, a kill)."""


def run_job(engine: str, operation: str, job: dict) -> dict:
    """Run `operation` of `engine` on `job` in a child process; return its result."""
    assert engine in ENGINES and operation in ENGINES[engine].operations, f"engine {engine!r} has no {operation!r}"
    with tempfile.TemporaryDirectory(prefix="factinject-job-") as tmp:
        job_file, result_file = Path(tmp) / "job.json", Path(tmp) / "result.json"
        job_file.write_text(json.dumps(job, ensure_ascii=False), encoding="utf-8")
        if os.environ.get(INLINE_ENV) == "1":
            code = execute(engine, operation, job_file, result_file)
        else:
            code = _spawn(engine, operation, job_file, result_file)
        return _outcome(engine, operation, code, result_file)


def _spawn(engine: str, operation: str, job_file: Path, result_file: Path) -> int:
    cmd = [sys.executable, "-m", "factinject.engines.process", engine, operation, str(job_file), str(result_file)]
    proc = subprocess.Popen(cmd, preexec_fn=_die_with_parent_hook())
    try:
        return proc.wait()
    except KeyboardInterrupt:
        # Ctrl-C in a terminal reaches the child too; a signal sent to this process alone
        # is passed on, and the child gets a moment to finish writing what it was writing.
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise


def _die_with_parent_hook():
    """On Linux, the child is killed when this process dies (SIGKILL included), so an
    orphaned job never goes on writing into a run that another command now holds."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here: the forked child only calls it
    pr_set_pdeathsig = 1

    def hook() -> None:
        prctl(pr_set_pdeathsig, signal.SIGKILL)

    return hook


def _outcome(engine: str, operation: str, code: int, result_file: Path) -> dict:
    outcome = json.loads(result_file.read_text(encoding="utf-8")) if result_file.exists() else None
    if outcome and outcome.get("ok"):
        return outcome["result"]
    error = (outcome or {}).get("error") or {}
    kind = error.get("kind")
    if kind == "interrupted" or code in (130, -signal.SIGINT):
        raise KeyboardInterrupt
    if kind == "factinject":
        cls = FactinjectError
        err = cls(error["what"], where=error.get("where"), line=error.get("line"), fix=error.get("fix"))
        err.exit_code = error.get("exit_code", err.exit_code)
        raise err
    if kind == "oserror":
        raise OSError(error["errno"], error["strerror"], error.get("filename"))
    if kind == "oom" or code == OOM_EXIT:
        import torch  # a GPU job ran, so torch is installed; the CLI's guard turns this into its message

        raise torch.OutOfMemoryError(error.get("message") or "CUDA out of memory")
    detail = error.get("message") or (
        "it was killed (SIGKILL: the system may have run out of memory)" if code == -signal.SIGKILL
        else f"exit code {code}")
    raise ChildFailed(f"the {engine} engine's {operation} process failed: {detail}",
                      fix="read the output above; if it is a bug, report it with the run's manifest.json")


# ----------------------------------------------------------------------------- child side

def execute(engine: str, operation: str, job_file: Path, result_file: Path) -> int:
    """Run the job and write {"ok": true, "result": ...} or {"ok": false, "error": ...}; return an exit code."""
    try:
        module = importlib.import_module(ENGINES[engine].module)  # first: unsloth must be imported before trl/peft
        job = json.loads(Path(job_file).read_text(encoding="utf-8"))
        result = getattr(module, operation)(job)
        _write(result_file, {"ok": True, "result": result})
        return 0
    except KeyboardInterrupt:
        _write(result_file, {"ok": False, "error": {"kind": "interrupted"}})
        return 130
    except FactinjectError as err:
        _write(result_file, {"ok": False, "error": {"kind": "factinject", "what": err.what, "where": err.where,
                                                    "line": err.line, "fix": err.fix, "exit_code": err.exit_code}})
        return 2
    except OSError as err:
        if err.errno is None:
            return _crash(result_file, err)
        _write(result_file, {"ok": False, "error": {"kind": "oserror", "errno": err.errno, "strerror": err.strerror,
                                                    "filename": err.filename}})
        return 1
    except Exception as err:  # noqa: BLE001 - everything else is reported, with its traceback
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(err, torch.OutOfMemoryError):
            first = str(err).strip().splitlines()[0] if str(err).strip() else "CUDA out of memory"
            _write(result_file, {"ok": False, "error": {"kind": "oom", "message": first}})
            return OOM_EXIT
        return _crash(result_file, err)


def _crash(result_file: Path, err: BaseException) -> int:
    traceback.print_exc()
    _write(result_file, {"ok": False, "error": {"kind": "crash", "message": f"{type(err).__name__}: {err}"[:500]}})
    return 1


def _write(path: Path, payload: dict) -> None:
    tmp = Path(path).with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)


def _watch_parent() -> None:
    """Outside Linux there is no death signal: leave when the parent is gone."""
    parent = os.getppid()

    def watch() -> None:
        import time

        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(137)

    threading.Thread(target=watch, daemon=True).start()


if __name__ == "__main__":
    _watch_parent()
    sys.exit(execute(*sys.argv[1:3], Path(sys.argv[3]), Path(sys.argv[4])))
