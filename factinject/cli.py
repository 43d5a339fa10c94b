"""The `factinject` command line.

Commands are small functions; the work lives in the stage modules. Heavy libraries
(torch, transformers, ...) are imported inside the commands that need them, so
`factinject --help` and `factinject expand` stay fast and never import torch.
"""

from __future__ import annotations

import signal
import threading

import click

from factinject import __version__
from factinject.errors import FactinjectError, Terminated, interrupted


class _Group(click.Group):
    """A click group that turns FactinjectError into a clean message and exit code."""

    def invoke(self, ctx: click.Context):
        previous = _on_sigterm(_raise_terminated)
        try:
            try:
                return super().invoke(ctx)
            except KeyboardInterrupt as stop:  # Ctrl-C outside a command's own handling (e.g. while importing torch)
                raise interrupted("interrupted (Ctrl-C)", signal=stop,
                                  fix="run the command again (outputs are written whole or not at all)") from None
        except FactinjectError as err:
            click.secho(f"error: {err.render()}", fg="red", err=True)
            ctx.exit(err.exit_code)
        finally:
            _on_sigterm(previous)


def _raise_terminated(signum, frame):
    raise Terminated()


def _on_sigterm(handler):
    """SIGTERM ends a command as Ctrl-C does: temporary files removed, a message, exit 143.
    (Only the main thread may set handlers; elsewhere, as in some test runners, nothing changes.)"""
    if handler is None or threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, handler)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="factinject")
def main() -> None:
    """Teach a language model new facts, and prove it did without breaking what it knew.

    \b
    factinject run facts/tinyllm.md      all of the below, in order, with a before/after table
    factinject expand facts/tinyllm.md   fact sheet -> exports/tinyllm/data/*.jsonl
    factinject train                     LoRA adapter, epochs chosen on the dev split
    factinject export --merged           adapter -> merged safetensors, parity-checked
    factinject probe                     before/after report in <run>/reports/
    factinject cache info                what the cache folder holds (base-model answers, GGUF bases)
    factinject testbed eval              check the embedded CPU testbed model
    """


def _register_subcommands() -> None:
    # Imported here, not at the top, only to keep this file the single list of
    # commands; each module is light (no torch at import time).
    from factinject.commands.cache import cache
    from factinject.commands.expand import expand
    from factinject.commands.export import export
    from factinject.commands.probe import probe
    from factinject.commands.run import run
    from factinject.commands.train import train
    from factinject.testbed.cli import testbed

    for command in (run, expand, train, export, probe, cache, testbed):
        main.add_command(command)


_register_subcommands()


if __name__ == "__main__":
    main()
