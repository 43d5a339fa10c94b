"""`factinject export`: the adapter as a folder, or (--merged) a merged safetensors model."""

from __future__ import annotations

from pathlib import Path

import click

from factinject.commands.common import answer_cache_option
from factinject.models.gguf_out import GGUF_TYPES


@click.command()
@click.option("--run", "run_path", type=click.Path(path_type=Path), help="Run directory (default: the last expanded run).")
@click.option("--merged", is_flag=True, help="Merge the adapter into the base weights (<run>/merged/).")
@click.option("--gguf", "gguf_type", type=click.Choice(GGUF_TYPES),
              help="Also (or, with a merged export already there, only) write the merged model as one GGUF file "
                   "with an Ollama Modelfile (<run>/gguf-<type>/), for llama.cpp, Ollama and LM Studio.")
@click.option("--out", type=click.Path(path_type=Path),
              help="Write the export here instead of inside the run (e.g. on a disk with more room).")
@click.option("--force", is_flag=True, help="Replace an existing export (the old one stays intact until the new one is complete).")
@click.option("--allow-pickle", is_flag=True, help="Allow .bin (pickle) base weights. Only for models you trust.")
@click.option("--trust-remote-code", is_flag=True, help="Allow a model's own Python code. Only for models you trust.")
@answer_cache_option
def export(run_path, merged, gguf_type, out, force, allow_pickle, trust_remote_code, no_answer_cache) -> None:
    """Export the trained adapter (<run>/export/adapter/) or, with --merged, a merged model.

    The merged model holds 16-bit weights (the recipe's export.dtype, bf16 by default)
    in safetensors shards, the tokenizer and chat template used in training, and a
    generation config that stops at the end-of-turn token. Before it is published its
    greedy answers are compared with the adapter's on the same 16-bit base (they must
    all be identical) and, for a 4-bit run, with the 4-bit model as trained (fact
    recall may drop at most export.max_recall_drop); otherwise nothing is written.

    With --gguf, the merged model is also written as GGUF (f16, bf16, q8_0 or q4_0) with a
    Modelfile: `ollama create <name> -f <run>/gguf-q8_0/Modelfile`, or llama.cpp's
    `llama-cli -m <run>/gguf-q8_0/model-q8_0.gguf`. --out then names the GGUF's folder.
    """
    from factinject.export.stage import export_adapter, export_gguf, export_merged
    from factinject.models.base import run_template
    from factinject.rundir.files import resolve_run
    from factinject.rundir.guard import check_run_data, guarded

    run = resolve_run(str(run_path) if run_path else None)
    again = ("factinject export" + (" --merged" if merged else "") + (f" --gguf {gguf_type}" if gguf_type else "")
             + (" --force" if force else ""))
    interrupt = ("interrupted (Ctrl-C); nothing was exported", f"any previous export is intact; run `{again}` again")
    with guarded(run, "export", interrupt):
        if not merged and not gguf_type:
            record = export_adapter(run, force=force, out=out)
            click.echo(f"adapter exported to {record['adapter']['path']}")
            return
        if merged:
            check_run_data(run, ("train", "test"))  # the parity check asks the run's own questions
            with run_template(run, None) as template:
                record = export_merged(run, force=force, allow_pickle=allow_pickle,
                                       trust_remote_code=trust_remote_code, out=None if gguf_type else out,
                                       chat_template=template, answer_cache=not no_answer_cache)["merged"]
            click.echo(f"merged model in {record['path']} ({len(record['shards'])} shard(s), {record['dtype']}): "
                       + parity_summary(record["parity"]))
        if gguf_type:
            written = export_gguf(run, gguf_type, force=force, out=out)["gguf"]
            click.echo(f"GGUF ({gguf_type}, {written['architecture']}, {written['bytes'] / 1e6:.1f} MB) in "
                       f"{written['path']}: run it with `ollama create <name> -f {written['path']}/Modelfile` "
                       f"or llama.cpp's `llama-cli -m {written['path']}/{written['file']}`")
            if written.get("parity"):
                checked = written["parity"]
                click.echo(f"checked in llama.cpp: {checked['identical']}/{checked['n']} answers identical to the "
                           f"merged model's, the same verdict on {checked['verdicts']['count']}/"
                           f"{checked['verdicts']['n']} fact questions (recall {checked['recall_merged']['count']} "
                           f"-> {checked['recall_gguf']['count']})")
            else:
                click.echo('not checked in llama.cpp: pip install -e ".[gguf]" to have every GGUF export checked')


def parity_summary(parity: dict) -> str:
    exact, quant = parity["exactness"], parity["quantization"]
    method = exact.get("method")
    if method:  # teacher-forced: every token of every answer, and a generated sample
        text = (f"parity {exact['identical']}/{exact['n']} answers alike token by token with the adapter on the same "
                f"16-bit base ({method['tokens']:,} tokens teacher-forced, {method['generated_by_both']} answers "
                f"generated by both), largest logit difference {exact['max_logit_diff']:.2e}")
    else:
        text = (f"parity {exact['identical']}/{exact['n']} identical answers to the adapter on the same 16-bit base, "
                f"largest logit difference {exact['max_logit_diff']:.2e}")
    if quant:
        text += (f"; against the 4-bit model as trained: {quant['agreement']['count']}/{quant['agreement']['n']} "
                 f"identical, fact recall {quant['recall_4bit']['count']}/{quant['recall_4bit']['n']} -> "
                 f"{quant['recall_merged']['count']}/{quant['recall_merged']['n']}")
    return text
