"""One writer per run: an OS lock (`flock`) on `<run>/.lock`.

The kernel drops an flock when its process dies (crash, SIGKILL, power-off of the
process), so a lock can never be left stale: a dead holder's lock is free, and the
next command simply takes it. The file's content only says who holds the lock, for
the message the second command prints; it is emptied on release.

Taking the lock also tidies the run: leftovers of a command that was killed
mid-write (hidden `.name.*.tmp` folders, a `.name.old` swapped out of the way) can
only be cleaned once we know nobody else is writing.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

from factinject.errors import FactinjectError
from factinject.rundir.files import recover_partial_writes

LOCK_NAME = ".lock"
_held: dict[str, int] = {}  # run path -> nesting depth: `run` holds the lock while calling expand, train, ...


def _holder(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode("utf-8") or "{}")
    except (ValueError, OSError):
        return {}


@contextlib.contextmanager
def run_lock(run_path: Path, command: str) -> Iterator[None]:
    """Hold the run's lock for the block, or fail at once naming who holds it."""
    key = str(Path(run_path).resolve())
    if key in _held:  # already ours (a command calling another stage): no second flock on our own file
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    run_path = Path(run_path)
    run_path.mkdir(parents=True, exist_ok=True)
    lock_path = run_path / LOCK_NAME
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        holder = _holder(fd)
        os.close(fd)
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            who = f"`factinject {holder.get('command', '?')}` (pid {holder.get('pid', '?')}, since {holder.get('started', '?')})"
            raise FactinjectError(
                f"another factinject command is writing this run: {who}", where=lock_path,
                fix=f"wait for it to finish, or stop it (kill {holder.get('pid', '<pid>')}); a lock whose process "
                    "has died is released by the system, so just run the command again",
            ) from None
        raise FactinjectError(f"cannot lock the run ({err.strerror})", where=lock_path,
                              fix="put the run on a local disk (network filesystems may not support locks)") from None
    try:
        os.ftruncate(fd, 0)
        # Only the subcommand's name: arguments may carry paths or values nobody should see in a lock file.
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "command": command,
                                  "started": time.strftime("%Y-%m-%d %H:%M:%S")}).encode(), 0)
        _held[key] = 1
        recover_partial_writes(run_path)
        yield
    finally:
        _held.pop(key, None)
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
