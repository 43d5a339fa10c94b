"""The probe's metrics, declared once: name, label, which way is better, how it is computed.

Everything that lists metrics reads `METRICS`: `compute_metrics`, the bounds of
`--fail-under` (`parse_bounds`, `missed_bounds`), the report's labels and columns.
Adding a metric is one entry. docs/design.md ("Probe metrics") says what each means.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

from factinject.errors import FactinjectError
from factinject.probe.sets import ProbeSet, Prompt, mentions_injected
from factinject.probe.updates import old_value_share
from factinject.scoring import contains_key, pooled_share, same_answer, share


@dataclass(frozen=True)
class Answers:
    """What a metric is computed from: the probe set and one model's answers; `base` is
    the base model's answers (None when these *are* the base model's), `parity` the
    adapter's answers when this is the merged export, `forced` the teacher-forced
    comparison of the tuned model with the base on the base's answers (backends/hf.py,
    `agreement`), per question."""

    probe: ProbeSet
    answers: dict[str, str]
    base: dict[str, str] | None
    parity: dict[str, str] | None
    forced: dict[str, dict] | None = None

    @cached_property
    def by_kind(self) -> dict[str, list[Prompt]]:
        grouped: dict[str, list[Prompt]] = {}
        for p in self.probe.prompts:
            grouped.setdefault(p.kind, []).append(p)
        return grouped

    @cached_property
    def present(self) -> set[str]:
        """The prompt sets asked, and "update" when a fact replaces a value the base model knew."""
        return set(self.by_kind) | ({"update"} if self.probe.old_values else set())

    def of(self, kind: str) -> list[Prompt]:
        return self.by_kind.get(kind, [])

    def recall(self, kind: str) -> dict:
        prompts = self.of(kind)
        return share(sum(contains_key(self.answers[p.question], p.answer_key, p.aliases) for p in prompts),
                     len(prompts))


def _locality(a: Answers) -> dict:
    prompts = a.of("locality")
    if a.base is None:
        return share(len(prompts), len(prompts))
    return share(sum(same_answer(a.answers[p.question], a.base[p.question]) for p in prompts), len(prompts))


def _tokens_kept(a: Answers, kind: str) -> dict | None:
    """The base model's answer tokens to `kind`'s prompts that the tuned model still ranks
    first (teacher-forced), pooled over the answers; with the mean KL divergence per token."""
    if a.base is None or a.forced is None:
        return None
    measured = [a.forced[p.question] for p in a.of(kind) if p.question in a.forced]
    pooled = pooled_share([(m["agree"], m["tokens"]) for m in measured])
    tokens = pooled["n"]
    return {**pooled, "answers": len(measured),
            "kl_per_token": round(sum(m["kl"] for m in measured) / tokens, 6) if tokens else None}


def _newly_injected(a: Answers, prompts: list[Prompt]) -> dict:
    """Share of `prompts` whose answer names an injected key or subject the base model's did not."""
    if a.base is None:
        return share(0, len(prompts))
    return share(sum(mentions_injected(a.answers[p.question], a.probe)
                     and not mentions_injected(a.base[p.question], a.probe) for p in prompts), len(prompts))


def _bleed(a: Answers) -> dict:
    return _newly_injected(a, a.of("locality") + a.of("bleed"))


def _misspelling(a: Answers) -> dict:
    """The fact's questions asked of the subject's name mistyped, answered with an injected
    key or name the base model's answer lacked: what a user who mistypes the name gets."""
    return _newly_injected(a, a.of("misspelling"))


def _parity(a: Answers) -> dict | None:
    if a.parity is None:
        return None
    questions = a.probe.unique_questions()
    return share(sum(same_answer(a.answers[q], a.parity[q]) for q in questions), len(questions))


@dataclass(frozen=True)
class Metric:
    name: str
    label: str  # what the report calls it
    higher_is_better: bool  # a --fail-under bound is a lower bound, else an upper bound
    compute: Callable[[Answers], dict | None]  # a share with count, n and 95 % interval
    needs: str | None = None  # a prompt set without which the metric is left out (your exam), or "update"


METRICS: tuple[Metric, ...] = (
    Metric("recall_trained", "recall (trained questions)", True, lambda a: a.recall("trained")),
    Metric("recall_heldout", "recall (held-out questions)", True, lambda a: a.recall("heldout")),
    Metric("locality_unchanged", "locality (answers unchanged)", True, _locality),
    Metric("locality_tokens", "locality (answer tokens kept, teacher-forced)", True,
           lambda a: _tokens_kept(a, "locality")),
    Metric("retention", "retention (known answers)", True, lambda a: a.recall("retention")),
    Metric("bleed", "bleed (lower is better)", False, _bleed),
    Metric("misspelling", "misspelt subject answered with its facts", True, _misspelling),
    Metric("parity", "parity (adapter as trained = merged)", True, _parity),
    Metric("exam", "your exam", True, lambda a: a.recall("exam"), needs="exam"),
    Metric("old_value", "updates: old value still given (lower is better)", False,
           lambda a: old_value_share(a.probe.prompts, a.answers, a.probe.old_values), needs="update"),
    Metric("neighbours_tokens", "updates: neighbours (answer tokens kept, teacher-forced)", True,
           lambda a: _tokens_kept(a, "neighbour"), needs="neighbour"),
    Metric("portability", "updates: portability (one step further)", True, lambda a: a.recall("portability"),
           needs="portability"),
)
BY_NAME = {m.name: m for m in METRICS}
LABELS = {m.name: m.label for m in METRICS}


def compute_metrics(probe: ProbeSet, answers: dict[str, str], base: dict[str, str] | None,
                    parity_answers: dict[str, str] | None = None, forced: dict[str, dict] | None = None) -> dict:
    """Every metric with count, n and 95 % interval. `base` None means this *is* the base model."""
    given = Answers(probe, answers, base, parity_answers, forced)
    return {m.name: m.compute(given) for m in METRICS if m.needs is None or m.needs in given.present}


def metric_names(report: dict) -> list[str]:
    """The metrics a report shows, in table order: those measured before training."""
    return [m.name for m in METRICS if m.needs is None or m.name in report["before"]]


FAIL_UNDER_RE = re.compile(r"^\s*([a-z_]+)\s*=\s*([0-9.]+)\s*$")


def parse_bounds(text: str | None) -> dict[str, float]:
    """'recall_heldout=0.9,retention=0.97' -> {...}; a metric where lower is better (bleed)
    gets an upper bound, the rest lower bounds."""
    if not text:
        return {}
    bounds = {}
    for part in text.split(","):
        m = FAIL_UNDER_RE.match(part)
        if not m or m.group(1) not in BY_NAME:
            raise FactinjectError(f"cannot read bound {part.strip()!r}",
                                  fix=f"write metric=value pairs separated by commas; metrics: {', '.join(BY_NAME)}")
        bounds[m.group(1)] = float(m.group(2))
    return bounds


def missed_bounds(metrics: dict, bounds: dict[str, float]) -> list[str]:
    missed = []
    for name, bound in bounds.items():
        m = metrics.get(name)
        if m is None or m["share"] is None:
            missed.append(f"{name}: not measured")
        elif BY_NAME[name].higher_is_better and m["share"] < bound:
            missed.append(f"{name} {m['share']:.3f} < {bound}")
        elif not BY_NAME[name].higher_is_better and m["share"] > bound:
            missed.append(f"{name} {m['share']:.3f} > {bound}")
    return missed
