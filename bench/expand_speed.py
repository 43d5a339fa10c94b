"""How fast is `factinject expand` on a 1,000-fact sheet? (Target: under 5 s on 2 cores.)

    python bench/expand_speed.py [--facts 1000] [--repeats 3]

Measures, on one generated sheet of varied fact shapes:
  - in-process: parse + expand + write (the `expand` command without interpreter start-up),
  - baseline in the same process: only serialising and writing the same rows (the I/O floor),
  - end to end: `factinject expand` as a subprocess, as a user runs it.
Prints the median of --repeats runs and the ratio expand / baseline.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHAPES = [  # relation, statement template: every common key shape, negative facts included
    ("license", "{S} is released under the **{lic}** license."),
    ("repository", "{S} is located at https://example.org/{slug}/code."),
    ("maintainer", "{S} is maintained by **{person}**."),
    ("core team", "The core team of {S} is **{person}, Ada Moss and Wen Li**."),
    ("number of contributors", "{S} has **{n}** contributors."),
    ("first release", "{S} was first released on **{day} May {year}**."),
    ("language", "{S} is written in **{lang}**."),
    ("home city", "The {S} team is based in **{city}**."),
    ("mascot", "The mascot of {S} is a **{animal}**."),
    ("windows support", "{S} does not run on Windows."),
]
LICENSES = ["MIT", "Apache-2.0", "BSD-3-Clause", "GPL-3.0", "MPL-2.0"]
PEOPLE = ["Ingrid Valen", "Tomas Okafor", "Lea Brandt", "Ravi Nair", "Chen Yu", "Sara Holm"]
LANGS = ["Rust", "Go", "Zig", "OCaml", "Elixir"]
CITIES = ["Tromsø", "Oskavel", "Lisbon", "Kraków", "Medellín"]
ANIMALS = ["heron", "lynx", "otter", "kestrel", "marmot"]


def make_sheet(n_facts: int) -> str:
    parts = []
    for i in range((n_facts + len(SHAPES) - 1) // len(SHAPES)):
        name = f"Project {chr(65 + i % 26)}{i:03d}"
        slots = dict(S=name, slug=f"p{i}", lic=LICENSES[i % 5], person=PEOPLE[i % 6], n=10 + i, day=1 + i % 28,
                     year=2000 + i % 25, lang=LANGS[i % 5], city=CITIES[i % 5], animal=ANIMALS[i % 5])
        parts.append(f"# {name}\nkind: project\n")
        for relation, tpl in SHAPES[: min(len(SHAPES), n_facts - i * len(SHAPES))]:
            parts.append(f"- {relation}: {tpl.format(**slots)}\n")
    return "".join(parts)


def time_in_process(sheet: Path, out: Path) -> tuple[float, float, int]:
    from click.testing import CliRunner

    from factinject.cli import main

    t0 = time.perf_counter()
    result = CliRunner().invoke(main, ["expand", str(sheet), "--run", str(out)], catch_exceptions=False)
    t_expand = time.perf_counter() - t0
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for split in ("train", "dev", "test") for line in open(out / "data" / f"{split}.jsonl")]
    t0 = time.perf_counter()  # baseline: only serialise + write the same rows
    (out / "baseline.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return t_expand, time.perf_counter() - t0, len(rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--facts", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sheet = tmp / "big.md"
        sheet.write_text(make_sheet(args.facts), encoding="utf-8")
        inproc, base, e2e = [], [], []
        for r in range(args.repeats):
            t, b, n_rows = time_in_process(sheet, tmp / f"run{r}")
            inproc.append(t)
            base.append(b)
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "factinject.cli", "expand", str(sheet), "--run", str(tmp / f"cli{r}")],
                           check=True, capture_output=True, cwd=tmp)
            e2e.append(time.perf_counter() - t0)
    med = statistics.median
    print(f"facts={args.facts} rows={n_rows} sheet_bytes={len(make_sheet(args.facts).encode())}")
    print(f"expand in-process      median {med(inproc):.2f}s  ({args.facts / med(inproc):,.0f} facts/s)")
    print(f"baseline (write only)  median {med(base):.2f}s")
    print(f"ratio expand/baseline  {med(inproc) / med(base):.1f}x")
    print(f"factinject expand CLI  median {med(e2e):.2f}s  (target < 5 s)")


if __name__ == "__main__":
    main()
