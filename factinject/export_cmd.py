"""`factinject export`: the adapter as a folder, or (--merged) a merged safetensors model."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.option("--run", "run_path", type=click.Path(path_type=Path), help="Run directory (default: the last expanded run).")
@click.option("--merged", is_flag=True, help="Merge the adapter into the base weights (<run>/merged/).")
@click.option("--out", type=click.Path(path_type=Path),
              help="Write the export here instead of inside the run (e.g. on a disk with more room).")
@click.option("--force", is_flag=True, help="Replace an existing export (the old one stays intact until the new one is complete).")
@click.option("--allow-pickle", is_flag=True, help="Allow .bin (pickle) base weights. Only for models you trust.")
@click.option("--trust-remote-code", is_flag=True, help="Allow a model's own Python code. Only for models you trust.")
def export(run_path, merged, out, force, allow_pickle, trust_remote_code) -> None:
    """Export the trained adapter (<run>/export/adapter/) or, with --merged, a merged model.

    The merged model carries the tokenizer and chat template used in training and a
    generation config that stops at the end-of-turn token. Before it is published,
    its greedy answers are compared with the adapter's: below 99 % identical, nothing
    is written and the command fails.
    """
    from factinject.export import export_adapter, export_merged
    from factinject.guard import check_run_data, guarded
    from factinject.models import run_template
    from factinject.rundir import resolve_run

    run = resolve_run(str(run_path) if run_path else None)
    again = "factinject export" + (" --merged" if merged else "") + (" --force" if force else "")
    interrupt = ("interrupted (Ctrl-C); nothing was exported", f"any previous export is intact; run `{again}` again")
    with guarded(run, "export", interrupt):
        if not merged:
            record = export_adapter(run, force=force, out=out)
            click.echo(f"adapter exported to {record['adapter']['path']}")
            return
        check_run_data(run, ("train", "test"))  # the parity check asks the run's own questions
        with run_template(run, None):
            record = export_merged(run, force=force, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code,
                                   out=out)["merged"]
    p = record["parity"]
    click.echo(f"merged model in {record['path']}: parity {p['identical']}/{p['n']} identical answers, "
               f"largest logit difference {p['max_logit_diff']:.2e}")
