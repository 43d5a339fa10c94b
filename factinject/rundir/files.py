"""The run directory (`exports/<name>/`) and its manifest: the I/O edge of every stage.

Every write goes to a temporary sibling first and is renamed into place, so a crash,
a full disk or Ctrl-C leaves either the old complete output or the new complete
output, never a half-written one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from factinject import __version__
from factinject.errors import FactinjectError
from factinject.redact import redact
from factinject.rundir.record import RunRecord, Section

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
EXPORTS = Path("exports")
CURRENT_POINTER = ".current-run"  # inside exports/: lets bare `factinject train` find the last run


def sha256_file(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable: without it a power cut can lose the new name
    although the file's data reached the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """Every file under `root` (written by libraries that do not sync), then its folders."""
    for folder, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(folder))


def _umask() -> int:
    """The user's umask (read by setting it and putting it back: there is no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def user_mode(path: str | Path, *, folder: bool) -> None:
    """mkstemp and mkdtemp create private (0600/0700) paths; what we publish gets the
    mode any file or folder the user creates would get (their umask)."""
    os.chmod(path, (0o777 if folder else 0o666) & ~_umask())


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        user_mode(tmp, folder=False)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM for the few milliseconds in which an output is swapped in and
    the manifest records it: they arrive right after, never between the two. (A kill
    cannot be held; the next command then finds the record and the files apart, and says so.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextlib.contextmanager
def atomic_dir(target: Path, then: Callable[[], None] | None = None) -> Iterator[Path]:
    """Yield an empty temporary directory; on success it replaces `target` whole.

    `then` (the manifest section that records the new output) runs right after the swap,
    with Ctrl-C and SIGTERM held: if it fails, the previous output is put back, so the
    folder and its record never disagree."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    old = target.with_name(f".{target.name}.old")
    try:
        user_mode(tmp, folder=True)
        yield tmp
        fsync_tree(tmp)
        with signals_deferred():
            if target.exists():
                shutil.rmtree(old, ignore_errors=True)
                os.replace(target, old)
            os.replace(tmp, target)
            fsync_dir(target.parent)
            if then is not None:
                try:
                    then()
                except BaseException:
                    os.replace(target, tmp)  # the new output goes (below), the old one comes back
                    raise
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _restore_old(target, old)  # interrupted between the two renames: put the previous output back
        raise


def _restore_old(target: Path, old: Path) -> None:
    if old.exists() and not target.exists():
        os.replace(old, target)


# Where factinject writes atomically, and the folders it swaps whole. Recovery looks only
# there, and only at names mkstemp/mkdtemp gave them, so `--run ~` can never touch a user's files.
_WRITE_DIRS = ("", "export", "train", "reports", "reports/.cache")
_SWAPPED = ("data", "adapter", "merged", "reports", "export/adapter", "train/best-adapter")
_TEMP = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


def recover_partial_writes(root: Path) -> list[Path]:
    """After a crash or SIGKILL mid-write: put back any `.name.old` whose replacement never
    arrived, and delete half-written `.name.XXXXXXXX.tmp` files and folders. Only safe while
    holding the run's lock (see rundir/lock.py). Returns what was removed."""
    removed = []
    for rel in _SWAPPED:
        target = root / rel
        old = target.with_name(f".{target.name}.old")
        _restore_old(target, old)
        if old.exists():  # the new output did arrive; only deleting the old copy was cut short
            shutil.rmtree(old, ignore_errors=True)
            removed.append(old)
    for rel in _WRITE_DIRS:
        here = root / rel
        for path in sorted(here.iterdir()) if here.is_dir() else []:
            if _TEMP.match(path.name):
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
                removed.append(path)
    return removed


class Run:
    """One injection's directory: data/, adapter/, merged/, reports/, manifest.json."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def data_dir(self) -> Path:
        return self.path / "data"

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    def manifest(self) -> dict:
        if not self.manifest_path.exists():
            return {}
        try:
            manifest = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise FactinjectError(f"manifest is not valid JSON ({err.msg})", where=self.manifest_path, line=err.lineno,
                                  fix="restore manifest.json from a backup, or expand the sheet into a new run "
                                      "(`factinject expand <sheet> --run exports/<new-name>`)") from None
        except UnicodeDecodeError:
            raise FactinjectError("manifest is not valid JSON (it is not UTF-8 text)", where=self.manifest_path,
                                  fix="restore manifest.json from a backup, or expand the sheet into a new run "
                                      "(`factinject expand <sheet> --run exports/<new-name>`)") from None
        if not isinstance(manifest, dict) or not {"manifest_version", "factinject_version"} & manifest.keys():
            raise FactinjectError("manifest.json was not written by factinject: this folder is not a factinject run",
                                  where=self.manifest_path,
                                  fix="pass --run with a factinject run, or expand into a new or empty folder "
                                      "(`factinject expand <sheet> --run exports/<new-name>`)")
        version = manifest.get("manifest_version")
        if version != MANIFEST_VERSION:
            writer = manifest.get("factinject_version", "an unknown version")
            raise FactinjectError(
                f"this run was written by factinject {writer} (manifest version {version}); "
                f"this factinject ({__version__}) reads manifest version {MANIFEST_VERSION}",
                where=self.manifest_path,
                fix=f"continue the run with factinject {writer}, or re-run `factinject expand` into a new --run directory",
            )
        return manifest

    def record(self) -> RunRecord:
        """The manifest as typed sections (see record.py); empty before `expand`."""
        return RunRecord.from_dict(self.manifest(), self.manifest_path)

    def checked_record(self) -> RunRecord:
        """The record, once the data files are checked against the hashes `expand` wrote:
        training and probing must read exactly the rows that were expanded."""
        record = self.record()
        expand = record.require_expand(self.manifest_path)
        for rel, digest in expand.files.items():
            path = self.path / rel
            if sha256_file(path) != digest:
                if path.parent == self.data_dir and path.suffix == ".jsonl":
                    read_split(self, path.stem)  # a broken line is named by file and line, not just as a changed hash
                raise FactinjectError(f"{rel} changed since it was expanded", where=self.path / rel,
                                      fix="re-run `factinject expand`; do not edit generated data by hand")
        return record

    def check_adapter(self, record: RunRecord) -> None:
        """The adapter on disk is, file for file, the one training published: a damaged,
        truncated or replaced file is named before any model is loaded."""
        trained = record.require_train(self.manifest_path)
        folder = self.path / "adapter"
        for name, digest in trained.adapter_files.items():
            path = folder / name
            if not path.is_file() or sha256_file(path) != digest:
                state = "is missing" if not path.is_file() else "is not the file training wrote (damaged, truncated or replaced)"
                raise FactinjectError(f"the adapter's {name} {state}", where=path,
                                      fix="train again with `factinject train --force` (or restore the file from a backup)")

    def write_section(self, section: Section) -> None:
        """Replace one stage's section of the manifest, atomically."""
        manifest = self.manifest() or {"manifest_version": MANIFEST_VERSION}
        manifest["factinject_version"] = __version__
        manifest["name"] = self.path.name
        manifest[section.name] = section.to_dict()
        write_text_atomic(self.manifest_path, redact(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"))


def default_run_for(sheet_paths: list[Path], exports: Path = EXPORTS) -> Path:
    """exports/<sheet name>/ for one sheet, exports/<a>+<b>/ for several."""
    name = "+".join(Path(p).stem for p in sheet_paths)
    if not name or name.startswith(".") or name != Path(name).name:  # '..md' has stem '.', '...md' has '..'
        raise FactinjectError(f"the sheet's file name gives no usable run name ({name!r})", where=sheet_paths[0],
                              fix="rename the sheet (e.g. facts/acme.md), or pass --run exports/<name>")
    return exports / name


def set_current(run: Run, exports: Path = EXPORTS) -> None:
    write_text_atomic(exports / CURRENT_POINTER, str(run.path) + "\n")


def resolve_run(option: str | None, exports: Path = EXPORTS) -> Run:
    """The run a command acts on: --run, else the last one `expand` wrote."""
    if option:
        return Run(option)
    pointer = exports / CURRENT_POINTER
    if pointer.exists():
        run = Run(pointer.read_text(encoding="utf-8").strip())
        if not run.path.is_dir():
            raise FactinjectError(f"the last expanded run ({run.path}) no longer exists", where=pointer,
                                  fix="pass --run exports/<name>, or expand a fact sheet again")
        return run
    raise FactinjectError("no run given and none expanded yet", where=exports,
                          fix="run `factinject expand facts/<sheet>.md` first, or pass --run exports/<name>")


def read_split(run: Run, split: str) -> list[dict]:
    """The rows of data/<split>.jsonl; a broken line is named by file and line."""
    path = run.data_dir / f"{split}.jsonl"
    if not path.exists():
        raise FactinjectError(f"no {split} data in this run", where=path,
                              fix="run `factinject expand facts/<sheet>.md` first (or pass --run)")
    rows = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            try:
                row = json.loads(line)
                assert isinstance(row, dict) and row["messages"] and row["answer_key"] is not None
            except (json.JSONDecodeError, KeyError, AssertionError, TypeError):
                raise FactinjectError("line is not a valid factinject row", where=path, line=number,
                                      fix="re-run `factinject expand` to rewrite the data") from None
            rows.append(row)
    return rows
