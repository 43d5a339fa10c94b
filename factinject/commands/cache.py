"""`factinject cache`: what factinject keeps once per machine, and clearing it."""

from __future__ import annotations

import shutil

import click

# What lives in the cache folder (models.cache_home), by what `info` calls it.
PARTS = {"answers": "base-model answers, kept across runs",
         "gguf": "GGUF bases converted to model folders",
         "llamacpp": "bases written as GGUF for the llamacpp probe engine",
         "fixtures": "tiny test models of each family"}


def _size(path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def _folder(part: str):
    from factinject.models import cache_home
    from factinject.models.answer_cache import answers_root

    return answers_root() if part == "answers" else cache_home() / part


def _megabytes(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


@click.group()
def cache() -> None:
    """The factinject cache folder (FACTINJECT_CACHE, else ~/.cache/factinject)."""


@cache.command()
def info() -> None:
    """Show the cache folder, the size of each part and how many answers it holds."""
    from factinject.models import cache_home
    from factinject.models.answer_cache import cache_size

    root = cache_home()
    click.echo(f"cache folder: {root}")
    for part, what in PARTS.items():
        click.echo(f"  {part:9} {_megabytes(_size(_folder(part))):>12}  {what}")
    size, entries = cache_size()
    click.echo(f"answers stored: {entries:,} ({_megabytes(size)})")


@cache.command()
@click.option("--all", "everything", is_flag=True, help="Also remove converted GGUF bases, bases written as GGUF and the test fixtures.")
def clear(everything: bool) -> None:
    """Remove the stored base-model answers (and with --all everything else in the cache).

    Later runs generate the answers again; nothing in any run folder is touched."""
    for part in PARTS if everything else ["answers"]:
        folder = _folder(part)
        freed = _size(folder)
        shutil.rmtree(folder, ignore_errors=True)
        click.echo(f"removed {folder} ({_megabytes(freed)})")
