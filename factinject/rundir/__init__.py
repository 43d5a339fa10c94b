"""A run's directory and its record: atomic writes, the lock, the typed manifest.

    files.py    Run(path): exports/<name>/ with data/, adapter/, merged/, reports/, manifest.json
    record.py   Run.record(): the manifest as typed sections
    guard.py    guarded(run, ...): the lock plus clear endings for Ctrl-C, a full disk, out of memory
    lock.py     one command at a time holds a run
"""
