"""The training method's pure rules, applied after every epoch by whichever engine trains.

`own_words_rows` and `mix_replay` decide what one epoch trains on; `choose_epoch`
decides, from the curve so far, which epoch to keep and whether to go on. All run inside
the engine's child process (backends/epochs.py, backends/sft.py) and are tested on their
own.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from factinject.engines.records import EpochRecord
from factinject.recipe import StopSpec
from factinject.scoring import contains_key, wilson_interval


@dataclass(frozen=True)
class EpochDecision:
    best_epoch: int | None
    stop: bool
    reason: str


def choose_epoch(curve: list[EpochRecord], stop: StopSpec, fixed_epochs: int | None, max_epochs: int) -> EpochDecision:
    """Which epoch to keep so far, and whether to stop.

    auto: the best epoch is the one with the highest dev recall among epochs whose
    drift is within `max_drift`; among epochs within `min_delta` of that top, the
    latest wins (dev sets are small, so a one-question dip is noise, and the later
    epoch has seen the training questions more often: trained recall needs it). Stop when
    dev recall is perfect, when `patience` epochs pass without a gain of `min_delta`,
    when drift is surely above the bound, or at `max_epochs`.
    fixed: train exactly N epochs and keep the last (still recording the curve).
    """
    assert curve, "choose_epoch needs at least one epoch"
    last = curve[-1]
    if fixed_epochs is not None:
        return EpochDecision(last.epoch, last.epoch >= fixed_epochs, f"fixed {fixed_epochs} epochs")
    eligible = [r for r in curve if r.drift <= stop.max_drift]
    if eligible:
        top = max(r.dev_recall for r in eligible)
        best = max((r for r in eligible if r.dev_recall >= top - stop.min_delta), key=lambda r: r.epoch)
    else:  # every epoch drifted: keep the least-drifted one, and say so
        best = min(curve, key=lambda r: (r.drift, r.epoch))
    # An epoch above max_drift is never kept, but training stops only when the drift is
    # above the bound beyond doubt (95 % lower bound): early epochs swing, and with 48
    # control prompts 6 changed answers is within noise of 3.
    if drift_lower_bound(last) > stop.max_drift:
        return EpochDecision(best.epoch, True, f"drift {last.drift:.3f} is above max_drift {stop.max_drift} "
                                               f"(95 % interval)")
    if best.dev_recall >= 1.0 and best.epoch == last.epoch:
        return EpochDecision(best.epoch, True, "dev recall is 100%")
    if last.epoch - best.epoch >= stop.patience:
        return EpochDecision(best.epoch, True, f"no dev-recall gain for {stop.patience} epochs")
    if last.epoch >= max_epochs:
        return EpochDecision(best.epoch, True, f"reached max_epochs {max_epochs}")
    return EpochDecision(best.epoch, False, "improving")


def drift_lower_bound(record: EpochRecord) -> float:
    """The 95 % lower bound of an epoch's drift. Read on tokens, the sample is the control
    prompts, not their tokens: the tokens of one answer change together, and counting
    each as a trial would make a few changed answers look certain."""
    if record.drift_unit == "tokens" and record.drift_prompts:
        return wilson_interval(round(record.drift * record.drift_prompts), record.drift_prompts)[0]
    return wilson_interval(record.drift_changed, record.drift_n)[0]


def mix_replay(fact_rows: list[dict], replay: list[dict], ratio: float, seed: int,
               contrast: list[dict] = ()) -> list[dict]:
    """Fact rows plus round(ratio * len(fact_rows)) replay rows plus every contrast row, shuffled with `seed`.

    Each row is one conversation and is never packed with another, so the paraphrases
    of one fact cannot see each other inside a training sequence.
    """
    rng = random.Random(seed)
    n_replay = round(ratio * len(fact_rows)) if replay else 0
    pool = list(replay)
    rng.shuffle(pool)
    chosen = [pool[i % len(pool)] for i in range(n_replay)] if pool else []
    rows = [{"messages": r["messages"], "source": r.get("fact_id", "fact")} for r in fact_rows]
    rows += [{"messages": r["messages"], "source": "replay", **({"cut": True} if r.get("cut") else {})}
             for r in chosen]
    rows += [{"messages": r["messages"], "source": "contrast"} for r in contrast]
    rng.shuffle(rows)
    return rows


def own_words_rows(fact_rows: list[dict], prompts: list[str | None],
                   answers: dict[str, tuple[str, bool]]) -> tuple[list[dict], int]:
    """The fact rows with the base model's answers as targets where they qualify (they
    name the fact's key, they ended within the budget), and how many did."""
    assert len(prompts) == len(fact_rows), "one teacher prompt (or None) per fact row"
    rows, used = [], 0
    for row, prompt in zip(fact_rows, prompts):
        answer, finished = answers.get(prompt, ("", False)) if prompt else ("", False)
        if finished and answer.strip() and contains_key(answer, row["answer_key"]):
            row = {**row, "messages": [row["messages"][0], {"role": "assistant", "content": answer.strip()}]}
            used += 1
        rows.append(row)
    return rows, used
