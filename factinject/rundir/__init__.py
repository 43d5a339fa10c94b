"""A run's directory and its record: atomic writes, the lock, the typed manifest.

    Run(path)            exports/<name>/: data/, adapter/, merged/, reports/, manifest.json
    Run.record()         the manifest as typed sections (record.py)
    guarded(run, ...)    the lock plus clear endings for Ctrl-C, a full disk, out of memory (guard.py)
"""

from factinject.rundir.files import (
    Run,
    atomic_dir,
    read_split,
    resolve_run,
    write_text_atomic,
)
from factinject.rundir.record import RunRecord

__all__ = ["Run", "RunRecord", "atomic_dir", "read_split", "resolve_run", "write_text_atomic"]
