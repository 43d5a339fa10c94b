"""`factinject export`: the adapter as a folder, or (--merged) a merged safetensors model."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.option("--run", "run_path", type=click.Path(path_type=Path), help="Run directory (default: the last expanded run).")
@click.option("--merged", is_flag=True, help="Merge the adapter into the base weights (<run>/merged/).")
@click.option("--force", is_flag=True, help="Replace an existing export (the old one stays intact until the new one is complete).")
@click.option("--allow-pickle", is_flag=True, help="Allow .bin (pickle) base weights. Only for models you trust.")
@click.option("--trust-remote-code", is_flag=True, help="Allow a model's own Python code. Only for models you trust.")
def export(run_path, merged, force, allow_pickle, trust_remote_code) -> None:
    """Export the trained adapter (<run>/export/adapter/) or, with --merged, a merged model.

    The merged model carries the tokenizer and chat template used in training and a
    generation config that stops at the end-of-turn token. Before it is published,
    its greedy answers are compared with the adapter's: below 99 % identical, nothing
    is written and the command fails.
    """
    from factinject.export import export_adapter, export_merged
    from factinject.rundir import resolve_run

    run = resolve_run(str(run_path) if run_path else None)
    if not merged:
        record = export_adapter(run, force=force)
        click.echo(f"adapter exported to {record['adapter']['path']}")
        return
    record = export_merged(run, force=force, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)["merged"]
    p = record["parity"]
    click.echo(f"merged model in {record['path']}: parity {p['identical']}/{p['n']} identical answers, "
               f"largest logit difference {p['max_logit_diff']:.2e}")
