"""`factinject testbed build|eval`.

Light at import time (click only): torch and transformers load inside the commands.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import click

from factinject.testbed import world as W


@click.group()
def testbed() -> None:
    """The embedded CPU testbed model (a tiny Llama that knows a synthetic world)."""


@testbed.command()
@click.option("--seed", default=W.DEFAULT_SEED, show_default=True, help="Seed for world, tokenizer and weights.")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder that receives model/ and world/ [default: the committed factinject/testbed/].")
@click.option("--steps", type=int, default=None, help="Training steps [default: 4000, or 20 with --tiny].")
@click.option("--threads", type=int, default=None,
              help="Torch threads [default: 1]. The weights depend on it; build_info.json records it.")
@click.option("--tiny", is_flag=True, help="A miniature model and a few steps: seconds, for tests of determinism.")
def build(seed: int, out: Path | None, steps: int | None, threads: int | None, tiny: bool) -> None:
    """Generate the world, train the tokenizer, pretrain the model, write it all."""
    from rich.console import Console

    from factinject.testbed import model_dir
    from factinject.testbed.pretrain import BuildConfig
    from factinject.testbed.pretrain import build as run_build

    root = out if out is not None else model_dir().parent
    overrides: dict = {"seed": seed}
    if tiny:
        overrides.update(shape="tiny", steps=20, eval_limit=0)
    if steps is not None:
        overrides["steps"] = steps
    if threads is not None:
        overrides["threads"] = threads
    cfg = BuildConfig(**overrides)
    console = Console(stderr=True)
    console.print(f"building the testbed into {root} ({cfg.shape}, {cfg.steps} steps, seed {cfg.seed})")
    result = run_build(cfg, root / "model", root / "world", console=console)
    held = result.heldout
    summary = {"params": result.params, "seconds": result.seconds, "train_seconds": result.train_seconds,
               "final_loss": result.final_loss}
    for split, scored in held.items():
        summary.update({f"{split}_accuracy_sample": round(scored["accuracy"], 4), f"{split}_sample_n": scored["n"]})
    click.echo(json.dumps(summary))


@testbed.command(name="eval")
@click.option("--model", "model_path", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Model folder [default: the committed testbed model].")
@click.option("--limit", type=int, default=None, help="Score a seeded sample of N questions per split.")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--show-misses", type=int, default=0, help="Print up to N wrong held-out and unseen answers to stderr.")
@click.option("--table", is_flag=True, help="Also print accuracy per relation type as a table to stderr.")
def eval_cmd(model_path: Path | None, limit: int | None, batch_size: int, show_misses: int, table: bool) -> None:
    """Print one JSON line: world accuracy on held-out wordings and on wordings never
    trained for any entity, overall and per relation type, on the questions of both
    typed casually (all lower case, no closing mark) and cased, plus train accuracy,
    n, params and seconds.

    Also the never-trained generic turns (chat) and questions it cannot know, which
    it should decline with its fixed refusal (unknown)."""
    import torch

    from factinject.testbed import (
        load_chat,
        load_heldout,
        load_model,
        load_unknown,
        load_unseen,
        load_world_train,
    )
    from factinject.testbed.evaluate import by_relation, evaluate, key_recalled

    t0 = time.perf_counter()
    torch.set_num_threads(2)
    model, tokenizer = load_model(path=model_path)

    def sample(rows: list[dict]) -> list[dict]:
        return random.Random(0).sample(rows, limit) if limit and limit < len(rows) else rows

    heldout, unseen = sample(load_heldout()), sample(load_unseen())
    # Train: a sample as large as the held-out set, for equal error bars.
    train = random.Random(0).sample(load_world_train(), len(heldout))
    scored = {name: evaluate(model, tokenizer, rows, batch_size=batch_size)
              for name, rows in (("heldout", heldout), ("unseen", unseen), ("train", train),
                                 ("chat_heldout", sample(load_chat("heldout"))),
                                 ("unknown_heldout", sample(load_unknown("heldout"))))}
    for name, rows in (("heldout", heldout), ("unseen", unseen)):
        misses = [(r, a) for r, a in zip(rows, scored[name]["answers"]) if r["answer_key"].lower() not in a.lower()]
        for row, answer in misses[:show_misses]:
            click.echo(f"MISS {name} {row['question']!r} -> {answer!r} (key {row['answer_key']!r})", err=True)
    held = scored["heldout"]
    report = {"heldout_accuracy": round(held["accuracy"], 4), "n": held["n"], "heldout_correct": held["correct"]}
    for name in ("unseen", "train", "chat_heldout", "unknown_heldout"):
        report[f"{name}_accuracy"] = round(scored[name]["accuracy"], 4)
        report[f"{name}_n"] = scored[name]["n"]
    # Typed casually ("julfulib license"): does the model read a name however it is cased?
    answered = [*zip(heldout, scored["heldout"]["answers"]), *zip(unseen, scored["unseen"]["answers"])]
    for label, want in (("casual", True), ("cased", False)):
        hits = [key_recalled(a, r["answer_key"]) for r, a in answered if r["casual"] == want]
        report[f"{label}_accuracy"] = round(sum(hits) / len(hits), 4) if hits else None
        report[f"{label}_n"] = len(hits)
    per = {"heldout": by_relation(heldout, scored["heldout"]["answers"]),
           "unseen": by_relation(unseen, scored["unseen"]["answers"])}
    report["relations"] = len(per["heldout"])
    report["per_relation"] = {rel: {split: per[split][rel] for split in per if rel in per[split]} for rel in sorted(per["heldout"])}
    report["params"] = sum(p.numel() for p in model.parameters())
    report["seconds"] = round(time.perf_counter() - t0, 2)
    if table:
        _print_table(report["per_relation"])
    click.echo(json.dumps(report))


def _print_table(per_relation: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    out = Table(title="world accuracy per relation type", title_justify="left")
    for col in ("relation", "held-out wordings", "unseen wordings"):
        out.add_column(col, justify="left" if col == "relation" else "right")
    for rel, splits in per_relation.items():
        cells = [f"{100 * s['accuracy']:.0f} % ({s['correct']}/{s['n']})" if (s := splits.get(k)) else "–"
                 for k in ("heldout", "unseen")]
        out.add_row(rel, *cells)
    Console(stderr=True).print(out)
