"""How long training the expanded data will take, said by `expand` before anyone waits.

A 300-fact sheet expands in a second and then trains for hours; the user should
know that before starting. The estimate counts the work the default recipe does
(training conversations per epoch: fact rows, replayed rows, contrast prompts; greedy
answers per epoch: dev questions and drift controls; answers generated once for the
replay, contrast and drift prompts) and prices it with costs measured on the build
machine (docs/benchmarks.md, "Training time estimates"). When this machine has
trained a run before, the costs are scaled by how fast that training really was.

Pure arithmetic and JSON reading: no torch (`factinject expand` must stay light).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

from factinject.recipe import load_recipe

# Measured on the build machine (2 CPU cores, idle): the default recipe's training on
# the testbed model, and batched greedy answers of up to 64 tokens. docs/benchmarks.md
# says how; `python bench/train_cost.py` measures them again.
SECONDS_PER_TRAIN_ROW = 0.0170
SECONDS_PER_ANSWER = 0.0071
SECONDS_TO_START = 3.0  # load the model and tokenizer, build the dataset
WARN_ABOVE_SECONDS = 10 * 60
MAX_REPLAY_PROMPTS = 512  # unique replay prompts answered once (train.build_job caps the sample)


@dataclass(frozen=True)
class Workload:
    rows_per_epoch: int  # training conversations per epoch
    answers_per_epoch: int  # dev questions and drift controls answered after each epoch
    answers_once: int  # base-model answers for the replay, contrast and drift prompts
    epochs: int  # the most epochs the recipe may run

    def seconds(self, per_row: float = SECONDS_PER_TRAIN_ROW, per_answer: float = SECONDS_PER_ANSWER) -> float:
        return (SECONDS_TO_START + self.answers_once * per_answer
                + self.epochs * (self.rows_per_epoch * per_row + self.answers_per_epoch * per_answer))


def workload(train_rows: int, dev_rows: int, facts: int, recipe) -> Workload:
    """The work a recipe (a recipe.Recipe) does on expanded data of this size."""
    t, stop = recipe.train, recipe.stop
    replay = round(t.replay_ratio * train_rows) if t.replay_ratio > 0 else 0
    contrast = t.contrast_per_fact * facts
    epochs = t.epochs if isinstance(t.epochs, int) else t.max_epochs
    own_words = train_rows if t.fact_answers == "own_words" else 0  # the base model answers every fact row once
    per_epoch_answers = dev_rows + (stop.control_prompts if stop.drift == "openings" else 0)
    return Workload(rows_per_epoch=train_rows + replay + contrast, answers_per_epoch=per_epoch_answers,
                    answers_once=min(replay, MAX_REPLAY_PROMPTS) + contrast + stop.control_prompts + own_words,
                    epochs=epochs)


def speed_here(exports: Path, model_name: str) -> tuple[float, str] | None:
    """(measured / estimated time per epoch, which run) from the latest CPU training of
    this model in `exports`, or None when there is none to learn from."""
    manifests = sorted(exports.glob("*/manifest.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in manifests:
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
            train, rows = manifest["train"], manifest["train"]["rows"]
            if train["backend"] not in ("hf", "cpu") or train["recipe"]["model"]["name"] != model_name or not train["curve"]:
                continue
            contrast = train["recipe"]["train"]["contrast_per_fact"] * manifest["expand"]["counts"]["facts"]
            per_epoch = (rows["facts"] + rows["replay"] + contrast) * SECONDS_PER_TRAIN_ROW \
                + (rows["dev"] + rows["drift_prompts"]) * SECONDS_PER_ANSWER
            measured = statistics.median(e["seconds"] for e in train["curve"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # an unreadable or older manifest teaches nothing; the build machine's costs stand
        if per_epoch > 0 and measured > 0:
            return measured / per_epoch, str(path.parent)
    return None


def duration(seconds: float) -> str:
    """3700 -> '1 h 2 min'; 150 -> '3 min'."""
    minutes = max(1, round(seconds / 60))
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"


def training_warning(train_rows: int, dev_rows: int, facts: int, exports: Path, recipe=None) -> str | None:
    """What `expand` (and `run`) say when training this data will take long; None otherwise.
    `recipe`: the one `run` trains with; `expand` does not know it and assumes the default."""
    label = "this recipe"
    if recipe is None:

        recipe, label = load_recipe("testbed-cpu"), "the default recipe (testbed-cpu)"
    if recipe.model.name != "testbed":
        return None  # the costs were measured on the testbed model; a GPU recipe trains far faster
    work = workload(train_rows, dev_rows, facts, recipe)
    here = speed_here(exports, recipe.model.name)
    factor, basis = here if here else (1.0, None)
    seconds = work.seconds() * factor
    if seconds < WARN_ABOVE_SECONDS:
        return None
    source = (f"scaled to the speed of the last training here ({basis})" if basis
              else f"at the build machine's measured {1000 * SECONDS_PER_TRAIN_ROW:.0f} ms per conversation on "
                   "2 CPU cores; docs/benchmarks.md")
    return (f"training this data will take about {duration(seconds)} on the CPU with {label} "
            f"(up to {work.epochs} epochs of {work.rows_per_epoch:,} conversations, {source}). To make it shorter: "
            "fewer questions per fact (`--per-family 4`), fewer facts per run, or a GPU recipe (recipes/).")
