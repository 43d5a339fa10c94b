"""Which folders factinject may write into or replace: never one it did not create.

A user's folder can be named by mistake (`--run ~/project`, `export --out ~/models`);
`--force` must then not delete what is there. factinject replaces only:

- a run folder: one holding a factinject manifest.json, or an empty one;
- an export folder: one holding the marker factinject writes into every export
  (`factinject_export.json`, listing the files it wrote), with nothing else in it; or
  an empty folder.

Every check runs before anything is created or locked, so a refused folder is left
exactly as it was (not even a lock file appears in it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from factinject import __version__
from factinject.errors import FactinjectError
from factinject.rundir.files import MANIFEST, write_text_atomic

EXPORT_MARKER = "factinject_export.json"
_OURS_IN_ANY_RUN = {".lock"}  # a lock left by an earlier command is factinject's own


def check_folder_path(path: Path, what: str = "run folder") -> None:
    """`path` can be (or become) a folder we can write: it is not a file, nothing above
    it is a file, and the first folder that exists above it is writable."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FactinjectError(f"the {what} is not a folder (it is a file or a device)", where=path,
                              fix="name a new or empty folder instead")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise FactinjectError(f"the {what} cannot be created: {parent} is not a folder", where=path,
                                      fix="name a folder whose parent folders exist or can be created")
            break
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    resolved = existing.resolve() if existing else None
    if resolved is not None and resolved.parts[1:2] in (("proc",), ("sys",)):  # the kernel's views, not a disk
        raise FactinjectError(f"the {what} is under {Path(*resolved.parts[:2])}, a system folder, not a place for files",
                              where=path, fix="name a folder on a disk, e.g. exports/<name>")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise FactinjectError(f"cannot write the {what}: {existing} is not writable", where=path,
                              fix="check the folder's permissions, or name a folder elsewhere")


def is_factinject_run(path: Path) -> bool:
    manifest = Path(path) / MANIFEST
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return manifest.is_file()  # a damaged manifest is still a run's: Run.manifest() names the problem
    return isinstance(data, dict) and "manifest_version" in data


def check_run_folder(path: Path) -> None:
    """A run may be created in a new or empty folder, or go on in a factinject run: never
    in a folder of the user's (its data/ or adapter/ would be replaced)."""
    path = Path(path)
    check_folder_path(path)
    if not path.is_dir() or is_factinject_run(path):
        return
    theirs = sorted(p.name for p in path.iterdir() if p.name not in _OURS_IN_ANY_RUN)
    if theirs:
        shown = ", ".join(theirs[:5]) + (f" and {len(theirs) - 5} more" if len(theirs) > 5 else "")
        raise FactinjectError(f"this folder is not a factinject run and is not empty (it holds {shown})", where=path,
                              fix="pass --run with a new or empty folder, e.g. exports/<name>; factinject never "
                                  "writes into a folder it did not create")


def write_export_marker(folder: Path, kind: str, adapter_files: dict[str, str], run_path: Path) -> None:
    """Mark `folder` (still the temporary one) as factinject's: the files it holds now and
    the adapter it was made from. Written last, so it lists every file of the export."""
    files = sorted(p.name for p in folder.iterdir() if p.name != EXPORT_MARKER)
    marker = {"written_by": "factinject", "factinject_version": __version__, "kind": kind, "run": str(run_path),
              "adapter_files": adapter_files, "files": files}
    write_text_atomic(folder / EXPORT_MARKER, json.dumps(marker, indent=2) + "\n")


def read_export_marker(folder: Path) -> dict | None:
    try:
        marker = json.loads((Path(folder) / EXPORT_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = isinstance(marker, dict) and marker.get("written_by") == "factinject" and isinstance(marker.get("files"), list)
    return marker if ok else None


def check_export_target(target: Path, force: bool, recorded_files: dict | None = None) -> None:
    """Refuse to write an export over anything factinject did not write.

    `recorded_files` is what the run's manifest says it exported to `target` (name ->
    sha256), which also recognises an export written before exports carried a marker."""
    target = Path(target)
    check_folder_path(target, "export folder")
    if not target.exists():
        return
    present = sorted(p.name for p in target.iterdir())
    if not present:
        return  # an empty folder: nothing to lose
    marker = read_export_marker(target)
    ours = set(marker["files"]) | {EXPORT_MARKER} if marker else set(recorded_files or ())
    foreign = [name for name in present if name not in ours]
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        what = ("this folder holds files factinject did not write" if ours
                else "this folder is not a factinject export and is not empty")
        raise FactinjectError(f"{what} ({shown}); they would be lost", where=target,
                              fix="write the export to a new or empty folder with --out DIR (or move those files "
                                  "away); --force replaces only an export factinject wrote")
    if not force:
        raise FactinjectError("an export already exists here", where=target,
                              fix="pass --force to replace it (the old export stays intact until the new one is complete)")
