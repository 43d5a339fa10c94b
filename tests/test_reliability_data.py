"""The reliability catalogue (tests/reliability.py): data and manifests."""

from __future__ import annotations

import json
import shutil

import pytest
from reliability import copy_run, expect_error, invoke, snapshot

pytestmark = pytest.mark.usefixtures("one_thread", "small_parity")


@pytest.mark.parametrize("command, split", [("train", "train"), ("probe", "test"), ("export", "test")])
def test_corrupted_data_line_is_named_by_file_and_line(trained, tmp_path, command, split):
    run = copy_run(trained.run, tmp_path / "r")
    path = run / "data" / f"{split}.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[1] = lines[1][: len(lines[1]) // 2] + "\n"  # a line cut in half
    path.write_text("".join(lines), encoding="utf-8")
    args = {"train": ["train", "--run", run, "--fresh", "--force"], "probe": ["probe", "--run", run],
            "export": ["export", "--run", run, "--merged", "--force"]}[command]
    before = snapshot(run)
    expect_error(invoke(*args), what="line is not a valid factinject row", where=f"{path}:2",
                 fix="re-run `factinject expand`")
    assert snapshot(run) == before


def refused_with_edited_manifest(trained, tmp_path, command: str, edit, *, what: str, fix: str) -> None:
    """`command` on a copy of the trained run whose manifest `edit` changed: refused with a
    clear error naming the manifest, and nothing in the run changed."""
    run = copy_run(trained.run, tmp_path / "r")
    manifest = json.loads((run / "manifest.json").read_text())
    edit(manifest)
    (run / "manifest.json").write_text(json.dumps(manifest))
    before = snapshot(run)
    result = invoke(command, "--run", run, *(["--merged", "--force"] if command == "export" else []))
    expect_error(result, what=what, where=run / "manifest.json", fix=fix)
    assert snapshot(run) == before


@pytest.mark.parametrize("command", ["train", "export", "probe"])
def test_manifest_from_another_version(trained, tmp_path, command):
    refused_with_edited_manifest(trained, tmp_path, command,
                                 lambda m: m.update(manifest_version=2, factinject_version="9.0.0"),
                                 what="written by factinject 9.0.0 (manifest version 2)",
                                 fix="continue the run with factinject 9.0.0")


@pytest.mark.parametrize("command", ["export", "probe"])
def test_manifest_with_a_value_of_the_wrong_type(trained, tmp_path, command):
    """A hand-edited manifest: the epoch written as a string is refused, naming the key."""
    def epoch_as_text(manifest):
        manifest["train"]["best_epoch"] = str(manifest["train"]["best_epoch"])

    refused_with_edited_manifest(trained, tmp_path, command, epoch_as_text,
                                 what="the manifest's 'train' section has a bad best_epoch", fix="restore the file")


def test_manifest_that_is_not_json(expanded):
    (expanded / "manifest.json").write_text('{"manifest_version": 1,')
    expect_error(invoke("train", "--run", expanded), what="manifest is not valid JSON",
                 where=expanded / "manifest.json", fix="expand the sheet into a new run")


def test_missing_or_stale_run_directory(workdir, expanded):
    for command in ("train", "export", "probe"):
        expect_error(invoke(command, "--run", workdir / "nowhere"), what="no such run directory",
                     where=workdir / "nowhere", fix="factinject expand")
    assert not (workdir / "nowhere").exists(), "a failed command created the run folder"
    shutil.rmtree(expanded)  # .current-run still points at it
    expect_error(invoke("train"), what="no longer exists", where="exports/.current-run", fix="--run exports/<name>")
