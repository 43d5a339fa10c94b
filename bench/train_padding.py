"""The padding share of a training epoch: how many of the positions the decoder computes
are padding, for the batches the trainer draws, under each way of forming them.

    python bench/train_padding.py RUN            # a trained (or training) run folder
    python bench/train_padding.py RUN --seeds 0 1 2

Reads the run's training rows as training builds them (fact rows, the base model's
replayed and contrast answers from the run's train/base_answers.json, mixed by the
recipe's replay ratio) and tokenizes them with the model's chat template. For the
trainer's shuffled batches of train.batch_size, prints the share of computed positions
that are padding and the decoder passes per epoch:
  batch     each batch padded to its longest row (Trainer's collator)
  groups    each batch's rows in groups of similar length, each cut to its own longest
            row (backends/sft.py answer_loss, the CPU trainer's path)
  by_length the batches drawn by length (recipe train.batches: by_length), then grouped
No model runs: this counts tokens only, so it can run beside a training.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

from factinject.backends.sft import GROUP_OVERHEAD_TOKENS, length_groups, training_rows
from factinject.models.base import ModelRef, load_tokenizer
from factinject.models.targets import resolve_base
from factinject.rundir.files import read_split
from factinject.train.policy import mix_replay


def epoch_rows(run_dir: Path, recipe) -> tuple[list[int], list[str]]:
    """(token length, source) of every training row of one epoch."""
    ref = resolve_base(recipe.model)
    tokenizer = load_tokenizer(ModelRef(recipe.model.name, ref.path, ref.local))
    reference = json.loads((run_dir / "train" / "base_answers.json").read_text(encoding="utf-8"))["reference"]

    def conversations(pairs):
        return [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a, *_ in pairs]

    from factinject.rundir.files import Run

    fact_rows = read_split(Run(run_dir), "train")
    rows = mix_replay(fact_rows, conversations(reference["replay"]), recipe.train.replay_ratio, recipe.train.seed,
                      conversations(reference["contrast"]))
    encoded = training_rows(tokenizer, rows, recipe.model.max_seq_length)
    return [len(r["input_ids"]) for r in encoded], [r["source"] if r["source"] in ("replay", "contrast") else "fact"
                                                       for r in rows]


def computed(lengths: list[int], batch_size: int, seed: int, grouped: bool,
             by_length: bool = False) -> tuple[int, int]:
    """(positions computed, decoder passes) over one epoch of batches: shuffled, or drawn
    by length as train.batches by_length draws them (transformers' length-grouped sampler)."""
    if by_length:
        import torch
        from transformers.trainer_pt_utils import get_length_grouped_indices

        order = get_length_grouped_indices(lengths, batch_size, generator=torch.Generator().manual_seed(seed))
    else:
        order = list(range(len(lengths)))
        random.Random(seed).shuffle(order)
    positions = passes = 0
    for start in range(0, len(order), batch_size):
        batch = [lengths[i] for i in order[start:start + batch_size]]
        groups = length_groups(batch, GROUP_OVERHEAD_TOKENS) if grouped else [list(range(len(batch)))]
        positions += sum(len(g) * max(batch[i] for i in g) for g in groups)
        passes += len(groups)
    return positions, passes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    from factinject.rundir.files import Run

    record = Run(args.run).checked_record()
    from factinject.recipe import load_recipe

    recipe = record.train.trained_recipe() if record.train else load_recipe("smollm2-135m-instruct")
    lengths, sources = epoch_rows(args.run, recipe)
    real = sum(lengths)
    for source in ("fact", "replay", "contrast"):
        mine = [n for n, s in zip(lengths, sources) if s == source]
        if mine:
            print(f"{source:<9} rows {len(mine):>4}  tokens {sum(mine):>7} ({sum(mine) / real:.0%})  "
                  f"mean {sum(mine) / len(mine):.0f}  max {max(mine)}")
    for name, grouped, by_length in (("batch", False, False), ("groups", True, False),
                                     ("by_length", True, True)):
        shares, passes = [], []
        for seed in args.seeds:
            positions, n = computed(lengths, recipe.train.batch_size, seed, grouped, by_length)
            shares.append(1 - real / positions)
            passes.append(n)
        print(f"{name:<9} padding {sum(shares) / len(shares):.1%} of computed positions "
              f"(seeds {', '.join(f'{s:.1%}' for s in shares)}), {sum(passes) / len(passes):.0f} decoder passes "
              f"per epoch, batch {recipe.train.batch_size}")


if __name__ == "__main__":
    sys.exit(main())
