"""What every run-writing command does around its work: one lock, clear endings.

`guarded(run, command, ...)` holds the run's lock (rundir/lock.py) and turns the faults a
long job meets into a FactinjectError that says what was kept and what to do:
Ctrl-C (exit 130), a full disk, a read-only folder, a GPU out of memory. Stage code
stays free of this; its writes are atomic (rundir/files.py), so after any of these the run
holds the previous complete output, never a half-written one.
"""

from __future__ import annotations

import contextlib
import errno
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from factinject.errors import FactinjectError, interrupted
from factinject.rundir.files import Run, read_split
from factinject.rundir.lock import run_lock

OOM_TRAIN_FIX = ("lower train.batch_size (raise train.grad_accum to keep the effective batch), model.max_seq_length "
                 "or lora.r (--rank) in the recipe, then run `factinject train` again "
                 "(add --resume when an epoch checkpoint was written)")
OOM_PROBE_FIX = ("lower generate.batch_size in the recipe, probe with --backend vllm (it sizes itself to the card), "
                 "or probe on a GPU with more memory")
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
_NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


def gigabytes(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def free_space(path: Path) -> int | None:
    for p in (Path(path), *Path(path).parents):  # the first folder that exists is on the same disk
        if p.exists():
            return shutil.disk_usage(p).free
    return None


def disk_full(err: OSError, where: Path, *, need: int | None = None, fix: str | None = None) -> FactinjectError:
    path = Path(err.filename) if err.filename else Path(where)
    free = free_space(path)
    room = f"{gigabytes(free)} free there now" if free is not None else "no room left"
    needs = f"; this needs about {gigabytes(need)}" if need else ""
    return FactinjectError(f"disk full while writing {path} ({room}{needs})", where=where,
                           fix=fix or f"free {'about ' + gigabytes(need) if need else 'some space'} on that disk and "
                                      "run the command again, or put the run on another disk with --run; "
                                      "the run's earlier files are intact")


def is_out_of_memory(err: BaseException) -> bool:
    torch = sys.modules.get("torch")  # never import torch here: `expand` must stay light
    return torch is not None and isinstance(err, torch.OutOfMemoryError)


@contextlib.contextmanager
def command_errors(interrupt: tuple[str, str] | Callable[[], tuple[str, str]], *, oom_fix: str | None = None, disk_fix: str | None = None,
                   where: Path | None = None) -> Iterator[None]:
    """Turn Ctrl-C, a full disk, a read-only folder and GPU out-of-memory into clear messages.

    `interrupt` is (what, fix) to print after Ctrl-C, or a function returning it (what
    was kept can depend on how far the command got).
    """
    try:
        yield
    except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM (errors.Terminated)
        what, fix = interrupt() if callable(interrupt) else interrupt
        raise interrupted(what, where=where, fix=fix, signal=stop) from None
    except OSError as err:
        if err.errno in DISK_FULL:
            raise disk_full(err, where or Path(err.filename or "."), fix=disk_fix) from None
        if err.errno in _NOT_WRITABLE:
            raise FactinjectError(f"cannot write {err.filename or where}: {err.strerror}", where=where,
                                  fix="check the folder's permissions (or that the disk is mounted read-write), "
                                      "or put the run elsewhere with --run") from None
        raise
    except Exception as err:
        if oom_fix and is_out_of_memory(err):
            first = str(err).strip().splitlines()[0] if str(err).strip() else "CUDA out of memory"
            raise FactinjectError(f"out of GPU memory ({first[:160]})", where=where, fix=oom_fix) from None
        raise


@contextlib.contextmanager
def guarded(run: Run, command: str, interrupt: tuple[str, str] | Callable[[], tuple[str, str]], *, create: bool = False,
            **kwargs) -> Iterator[None]:
    """The run's lock plus `command_errors`, for a command that writes `run`.

    Only `expand` and `run` create a run; the others refuse a missing folder rather
    than leave an empty one behind."""
    if not create and not run.path.is_dir():
        raise FactinjectError("no such run directory", where=run.path,
                              fix="run `factinject expand facts/<sheet>.md` first, or pass --run exports/<name>")
    with run_lock(run.path, command), command_errors(interrupt, where=run.path, **kwargs):
        yield


def check_run_data(run: Run, splits: tuple[str, ...] = ("train", "dev", "test")) -> None:
    """Read the manifest (version check) and every data line before a stage starts, so a
    corrupted line is reported with its file and line number, not as a changed hash."""

    run.manifest()
    for split in splits:
        if (run.data_dir / f"{split}.jsonl").exists():
            read_split(run, split)
