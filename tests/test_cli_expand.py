"""`factinject expand` driven as a user would: CliRunner in a temp working directory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import FACTS, REPO

from factinject.cli import main


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_expand_writes_data_and_manifest(workdir):
    result = run("expand", str(FACTS / "tinyllm.md"))
    assert result.exit_code == 0, result.output
    data = workdir / "exports" / "tinyllm" / "data"
    rows = {split: read_rows(data / f"{split}.jsonl") for split in ("train", "dev", "test")}
    assert all(rows.values())
    families = {s: {(r["fact_id"], r["family"]) for r in rows[s]} for s in rows}
    assert not families["train"] & families["test"], "a fact's family is in both train and test"
    assert not families["train"] & families["dev"]
    manifest = json.loads((workdir / "exports" / "tinyllm" / "manifest.json").read_text())
    record = manifest["expand"]
    assert record["counts"]["train"] == len(rows["train"]) and record["counts"]["facts"] == 5
    assert record["sheets"][0]["sha256"] and record["config"]["seed"] == 0
    assert set(record["files"]) == {"data/train.jsonl", "data/dev.jsonl", "data/test.jsonl"}
    assert "tinyllm/license" in result.output and "total" in result.output  # the summary table
    assert (workdir / "exports" / ".current-run").read_text().strip() == "exports/tinyllm"


def test_expand_is_deterministic_and_seed_changes_it(workdir):
    sheet = str(FACTS / "kestrel.md")
    run("expand", sheet, "--run", "a")
    run("expand", sheet, "--run", "b")
    run("expand", sheet, "--run", "c", "--seed", "3")
    train = lambda d: (workdir / d / "data" / "train.jsonl").read_bytes()  # noqa: E731
    assert train("a") == train("b")
    assert train("a") != train("c")


def test_several_sheets_make_one_run(workdir):
    result = run("expand", str(FACTS / "tinyllm.md"), str(FACTS / "protosai.md"))
    assert result.exit_code == 0, result.output
    rows = read_rows(workdir / "exports" / "tinyllm+protosai" / "data" / "train.jsonl")
    assert {r["fact_id"].split("/")[0] for r in rows} == {"tinyllm", "protosai"}


BAD_SHEETS = {
    "empty.md": ("", "empty"),
    "nofacts.md": ("# Acme\naliases: A\n", "no facts"),
    "keyless.md": ("# Acme\n- license: Acme is MIT. (key: BSD)\n", "does not appear"),
    "dupe.md": ("# Acme\n- license: Acme is **MIT**.\n- license: Acme is **BSD**.\n", "duplicate fact id"),
    "conflict.md": ("# Acme\naliases: Zed\n- license: Acme is **MIT**.\n# Zed\n- license: Zed is **BSD**.\n", "two different answers"),
}


@pytest.mark.parametrize("name", sorted(BAD_SHEETS) + ["missing.md", "latin1.md"])
def test_bad_input_exits_nonzero_and_leaves_earlier_output_untouched(workdir, name):
    good = run("expand", str(FACTS / "tinyllm.md"), "--run", "exports/target")
    assert good.exit_code == 0
    target = workdir / "exports" / "target"
    before = {p: p.read_bytes() for p in sorted(target.rglob("*")) if p.is_file()}
    sheet = workdir / name
    if name == "latin1.md":
        sheet.write_bytes(b"# Caf\xe9\n- city: It is in **Paris**.\n")
    elif name in BAD_SHEETS:
        sheet.write_text(BAD_SHEETS[name][0], encoding="utf-8")
    result = CliRunner().invoke(main, ["expand", str(sheet), "--run", "exports/target"])
    assert result.exit_code != 0
    assert result.output.startswith("error: ") and str(sheet) in result.output and "fix:" in result.output, result.output
    assert "Traceback" not in result.output
    after = {p: p.read_bytes() for p in sorted(target.rglob("*")) if p.is_file()}
    assert after == before, "a failed expand changed files of an earlier run"
    assert not list(target.parent.glob(".*tmp")), "temporary directory left behind"


def test_reexpanding_a_trained_run_with_different_data_needs_force(workdir):
    run("expand", str(FACTS / "tinyllm.md"), "--run", "r")
    (workdir / "r" / "adapter").mkdir()
    same = run("expand", str(FACTS / "tinyllm.md"), "--run", "r")
    assert same.exit_code == 0, "identical data does not invalidate the adapter"
    changed = CliRunner().invoke(main, ["expand", str(FACTS / "tinyllm.md"), "--run", "r", "--seed", "5"])
    assert changed.exit_code != 0 and "trained adapter" in changed.output
    forced = run("expand", str(FACTS / "tinyllm.md"), "--run", "r", "--seed", "5", "--force")
    assert forced.exit_code == 0


NO_TORCH = """
import sys
from click.testing import CliRunner
from factinject.cli import main
r = CliRunner().invoke(main, {args!r})
assert r.exit_code == 0, r.output
heavy = sorted(m for m in ("torch", "transformers", "trl", "peft", "datasets", "unsloth", "vllm") if m in sys.modules)
print("HEAVY:" + ",".join(heavy))
"""


@pytest.mark.parametrize("args", [["--help"], ["expand", "--help"], ["expand", str(FACTS / "tinyllm.md"), "--run", "x"]])
def test_help_and_expand_never_import_torch(tmp_path, args):
    # A fresh interpreter: this test process has long since imported torch elsewhere.
    out = subprocess.run([sys.executable, "-c", NO_TORCH.format(args=args)], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert "HEAVY:\n" in out.stdout, out.stdout
