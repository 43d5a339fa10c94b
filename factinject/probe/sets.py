"""Probe sets: the same prompts for the base model ("before") and the tuned model ("after").

Pure functions: `build_probe_set` (from the run's data and the control sets), and
the per-prompt views of the answers (per fact, every answer, the misses, the worst
regressions). The metrics are in metrics.py; the probe stage (stage.py) does the
generation and I/O.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from factinject.expand.namesakes import misspellings, namesakes
from factinject.probe.updates import neighbour_questions, portability_questions, questions_about, stated_old_values
from factinject.scoring import contains_key, normalise, same_answer, share

MIN_BLEED_KEY = 3  # keys shorter than this ("no", "Go") occur in ordinary answers; bleed checks skip them


@dataclass(frozen=True)
class Prompt:
    kind: str  # one of recipe.PROBE_SETS: trained | heldout | exam | retention | locality | bleed | misspelling
    #            | neighbour | portability (updates: probe/updates.py)
    question: str
    answer_key: str | None = None
    aliases: tuple[str, ...] = ()
    fact_id: str | None = None


@dataclass
class ProbeSet:
    prompts: list[Prompt]
    injected_keys: list[str]  # answer keys of the injected facts (for bleed)
    injected_names: list[str]  # subjects and aliases of the injected facts (for bleed)
    notes: dict = field(default_factory=dict)
    # fact id -> the value it replaces, {"value", "stated", ...}: stated in the sheet, or
    # found in the base model's answers (updates.detect_old_values, once they are known)
    old_values: dict[str, dict] = field(default_factory=dict)

    def unique_questions(self) -> list[str]:
        return list(dict.fromkeys(p.question for p in self.prompts))

    def budgets(self, budget_of_set) -> list[int]:
        """Per unique question, its answer budget: `budget_of_set(kind)` of its set, the
        largest where one question is in two sets (an exam question also trained)."""
        most: dict[str, int] = {}
        for p in self.prompts:
            most[p.question] = max(most.get(p.question, 0), budget_of_set(p.kind))
        return [most[q] for q in self.unique_questions()]



def bleed_prompts(subjects: dict[str, dict], other_names: list[str], per_fact: int, seed: int) -> list[Prompt]:
    """The fact's own question forms asked of near-namesakes and of other subjects; those
    asked of the subject's name mistyped are of kind "misspelling", the rest "bleed"."""

    rng = random.Random(seed)
    prompts: list[Prompt] = []
    for fact_id, info in subjects.items():
        avoid = [info["subject"], *info.get("aliases", [])]
        candidates = namesakes(info["subject"], avoid) + rng.sample(other_names, min(3, len(other_names)))
        for name in rng.sample(candidates, min(per_fact, len(candidates))):
            questions = questions_about(info, name)
            if not questions:
                continue
            kind = "misspelling" if name in misspellings(info["subject"]) else "bleed"
            prompts.append(Prompt(kind, rng.choice(questions), fact_id=fact_id))
    return prompts


def sample_per_fact(rows: list[dict], per_fact: int | None, seed: int) -> list[dict]:
    """At most `per_fact` rows of each fact (a seeded sample, in file order); all when None."""
    if per_fact is None:
        return rows
    import random

    by_fact: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_fact.setdefault(r["fact_id"], []).append(i)
    rng = random.Random(seed)
    kept = {i for ids in by_fact.values() for i in (ids if len(ids) <= per_fact else rng.sample(ids, per_fact))}
    return [r for i, r in enumerate(rows) if i in kept]


def build_probe_set(train_rows: list[dict], test_rows: list[dict], facts: dict[str, dict], *, locality: list[str],
                    retention: list[dict], other_names: list[str], exam: list[Prompt] = (), bleed_per_fact: int = 3,
                    seed: int = 0) -> ProbeSet:
    """All prompts of one probe. `facts` maps fact id -> subject/relation/statement/key/polarity/aliases."""
    retention, contradicted = kept_known_answers(retention, facts, [r["messages"][0]["content"] for r in
                                                                      [*train_rows, *test_rows]])
    prompts = [Prompt("trained", r["messages"][0]["content"], r["answer_key"], fact_id=r["fact_id"]) for r in train_rows]
    prompts += [Prompt("heldout", r["messages"][0]["content"], r["answer_key"], fact_id=r["fact_id"]) for r in test_rows]
    prompts += [Prompt("locality", q) for q in locality]
    prompts += [Prompt("retention", r["question"], r["answer_key"], tuple(r.get("aliases", ()))) for r in retention]
    prompts += bleed_prompts(facts, other_names, bleed_per_fact, seed)
    prompts += list(exam)
    prompts += [Prompt("neighbour", q, fact_id=fact_id) for q, fact_id in neighbour_questions(facts, seed)]
    prompts += [Prompt("portability", q, key, fact_id=fact_id) for q, key, fact_id in portability_questions(facts)]
    old = {fact_id: {"value": value, "stated": True} for fact_id, value in stated_old_values(facts).items()}
    notes = {"known_answers_contradicted": contradicted} if contradicted else {}
    return ProbeSet(prompts, *injected(facts), notes=notes, old_values=old)


def kept_known_answers(retention: list[dict], facts: dict[str, dict], fact_questions: list[str]) -> tuple[list, list]:
    """(kept, left out): a known answer that an update replaces ("What is the capital of
    France?" -> Paris, when the sheet says Lyon (was: Paris)), or whose question is one of
    the facts' own, measures the update, not what the model kept."""
    old = {normalise(v) for v in stated_old_values(facts).values()}
    asked = {normalise(q) for q in fact_questions}
    out = [r for r in retention if normalise(r["answer_key"]) in old or normalise(r["question"]) in asked]
    return [r for r in retention if r not in out], [r["question"] for r in out]


def injected(facts: dict[str, dict]) -> tuple[list[str], list[str]]:
    """(answer keys, subject names) whose mention in an answer counts as bleed."""
    keys = sorted({f["answer_key"] for f in facts.values() if len(f["answer_key"]) >= MIN_BLEED_KEY
                   and f["answer_key"].lower() not in ("yes", "no")})
    names = sorted({n for f in facts.values() for n in [f["subject"], *f.get("aliases", [])]})
    return keys, names


def mentions_injected(answer: str, probe: ProbeSet) -> bool:
    return any(contains_key(answer, k) for k in probe.injected_keys + probe.injected_names)



SCORED = ("trained", "heldout", "exam", "retention", "portability")  # sets scored by key; the others by change


def per_fact(probe: ProbeSet, before: dict[str, str], after: dict[str, str] | None) -> dict:
    """Recall per fact id, before and after: trained, held-out and (when given) exam questions."""
    out: dict[str, dict] = {}
    for p in probe.prompts:
        if p.kind not in ("trained", "heldout") or p.fact_id is None:
            continue
        out.setdefault(p.fact_id, {"answer_key": p.answer_key, "trained": [0, 0, 0], "heldout": [0, 0, 0]})
    kinds = ("trained", "heldout", "exam")
    for p in probe.prompts:
        if p.kind not in kinds or p.fact_id not in out:
            continue
        counts = out[p.fact_id].setdefault(p.kind, [0, 0, 0])  # [before hits, after hits, n]
        counts[0] += contains_key(before[p.question], p.answer_key, p.aliases)
        counts[1] += contains_key(after[p.question], p.answer_key, p.aliases) if after else 0
        counts[2] += 1
    facts = {}
    for fact_id, e in out.items():
        facts[fact_id] = {"answer_key": e["answer_key"]}
        for side, idx in (("before", 0), ("after", 1)):
            if side == "after" and after is None:
                continue
            facts[fact_id][side] = {f"recall_{k}": share(e[k][idx], e[k][2]) for k in kinds if k in e}
    return facts


def answer_rows(probe: ProbeSet, before: dict[str, str], after: dict[str, str] | None) -> list[dict]:
    """One row per probed prompt, for answers.jsonl: which set, which fact, the key, both
    answers and the verdict (correct before/after for scored sets; changed for the others)."""
    rows = []
    for p in probe.prompts:
        b, a = before[p.question], after[p.question] if after else None
        row = {"set": p.kind, "fact_id": p.fact_id, "question": p.question, "answer_key": p.answer_key,
               "before": b, "after": a}
        if p.aliases:
            row["aliases"] = list(p.aliases)
        if p.kind in SCORED:
            row["correct_before"] = contains_key(b, p.answer_key, p.aliases)
            row["correct_after"] = contains_key(a, p.answer_key, p.aliases) if after else None
        else:  # locality and bleed prompts: did the answer change, does it newly name an injected fact?
            row["changed"] = not same_answer(a, b) if after else None
            row["bleed"] = (mentions_injected(a, probe) and not mentions_injected(b, probe)) if after else None
        rows.append(row)
    return rows


def misses(probe: ProbeSet, answers: dict[str, str], kinds: tuple[str, ...] = ("heldout", "exam")) -> dict:
    """Every question of `kinds` whose answer lacks the key, grouped per fact:
    {kind: {fact_id or "": [{"question", "answer_key", "answer"}]}} ("" = an exam
    question that matches no fact)."""
    out: dict[str, dict[str, list[dict]]] = {}
    for p in probe.prompts:
        if p.kind in kinds and not contains_key(answers[p.question], p.answer_key, p.aliases):
            entry = {"question": p.question, "answer_key": p.answer_key, "answer": answers[p.question]}
            if p.aliases:
                entry["aliases"] = list(p.aliases)
            out.setdefault(p.kind, {}).setdefault(p.fact_id or "", []).append(entry)
    return {kind: dict(sorted(groups.items(), key=lambda kv: (kv[0] == "", kv[0]))) for kind, groups in out.items()}


def regressions(probe: ProbeSet, before: dict[str, str], after: dict[str, str], limit: int = 10) -> list[dict]:
    """The worst changes on prompts the model should not have changed: retention first."""
    rows = []
    for p in probe.prompts:
        if p.kind == "retention" and contains_key(before[p.question], p.answer_key, p.aliases) \
                and not contains_key(after[p.question], p.answer_key, p.aliases):
            rows.append({"kind": "retention lost", "question": p.question, "before": before[p.question],
                         "after": after[p.question], "expected": p.answer_key})
    for p in probe.prompts:
        if p.kind in ("locality", "bleed") and mentions_injected(after[p.question], probe) \
                and not mentions_injected(before[p.question], probe):
            rows.append({"kind": "bleed", "question": p.question, "before": before[p.question], "after": after[p.question]})
    for p in probe.prompts:
        if p.kind == "locality" and not same_answer(before[p.question], after[p.question]):
            rows.append({"kind": "changed", "question": p.question, "before": before[p.question], "after": after[p.question]})
    return rows[:limit]
