"""One error type for everything a user can get wrong.

Every message names *what* is wrong, *where* (file and line when there is one) and
*what to do*, because the person reading it is in the middle of a long job.
"""

from __future__ import annotations

from pathlib import Path

from factinject.redact import redact


class FactinjectError(Exception):
    """A user-facing error: the CLI prints it and exits non-zero, no traceback."""

    exit_code = 2

    def __init__(self, what: str, *, where: str | Path | None = None, line: int | None = None, fix: str | None = None):
        self.what = what
        self.where = str(where) if where is not None else None
        self.line = line
        self.fix = fix
        super().__init__(self.render())

    def render(self) -> str:
        place = ""
        if self.where:
            place = f"{self.where}:{self.line}: " if self.line else f"{self.where}: "
        text = f"{place}{self.what}"
        if self.fix:
            text += f"\n  fix: {self.fix}"
        return redact(text)


class Interrupted(FactinjectError):
    """Ctrl-C (SIGINT): say what was kept and how to go on; 130 is the shell's code for it."""

    exit_code = 130


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, a job scheduler, a container stopping), raised where Ctrl-C would be,
    so that it cleans up and reports the same way; the shell's code for it is 143."""


def interrupted(what: str, *, where=None, fix: str | None = None, signal: BaseException | None = None) -> Interrupted:
    """The Interrupted error for Ctrl-C, or for SIGTERM when `signal` is a Terminated."""
    err = Interrupted(what.replace("(Ctrl-C)", "(SIGTERM)") if isinstance(signal, Terminated) else what,
                      where=where, fix=fix)
    if isinstance(signal, Terminated):
        err.exit_code = 143
    return err
