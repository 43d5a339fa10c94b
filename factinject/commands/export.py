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

    The merged model holds 16-bit weights (the recipe's export.dtype, bf16 by default)
    in safetensors shards, the tokenizer and chat template used in training, and a
    generation config that stops at the end-of-turn token. Before it is published its
    greedy answers are compared with the adapter's on the same 16-bit base (they must
    all be identical) and, for a 4-bit run, with the 4-bit model as trained (fact
    recall may drop at most export.max_recall_drop); otherwise nothing is written.
    """
    from factinject.export.stage import export_adapter, export_merged
    from factinject.models.base import run_template
    from factinject.rundir.files import resolve_run
    from factinject.rundir.guard import check_run_data, guarded

    run = resolve_run(str(run_path) if run_path else None)
    again = "factinject export" + (" --merged" if merged else "") + (" --force" if force else "")
    interrupt = ("interrupted (Ctrl-C); nothing was exported", f"any previous export is intact; run `{again}` again")
    with guarded(run, "export", interrupt):
        if not merged:
            record = export_adapter(run, force=force, out=out)
            click.echo(f"adapter exported to {record['adapter']['path']}")
            return
        check_run_data(run, ("train", "test"))  # the parity check asks the run's own questions
        with run_template(run, None) as template:
            record = export_merged(run, force=force, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code,
                                   out=out, chat_template=template)["merged"]
    click.echo(f"merged model in {record['path']} ({len(record['shards'])} shard(s), {record['dtype']}): "
               + parity_summary(record["parity"]))


def parity_summary(parity: dict) -> str:
    exact, quant = parity["exactness"], parity["quantization"]
    text = (f"parity {exact['identical']}/{exact['n']} identical answers to the adapter on the same 16-bit base, "
            f"largest logit difference {exact['max_logit_diff']:.2e}")
    if quant:
        text += (f"; against the 4-bit model as trained: {quant['agreement']['count']}/{quant['agreement']['n']} "
                 f"identical, fact recall {quant['recall_4bit']['count']}/{quant['recall_4bit']['n']} -> "
                 f"{quant['recall_merged']['count']}/{quant['recall_merged']['n']}")
    return text
