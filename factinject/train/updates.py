"""Training rows for updates: facts that replace a value the model knew (`(was: OLD)`).

Two optional kinds, each a recipe switch ranked on SmolLM2 (docs/benchmarks.md):

- contradiction rows (`train.update_contradict`): the old value asked about and denied,
  "Is Paris the capital of France?" -> "No. The capital of France is Lyon.": plain
  injection teaches the new answer, these also teach that the old one is wrong;
- the subject's other relations (`train.update_locality`): questions about the updated
  subject's other attributes ("How large is the area of France?"), answered by the base
  model itself, so that the update moves only the relation it is about. The relations
  are not the probe's (probe/updates.py OTHER_RELATIONS), so the neighbour rows of the
  report are never trained.

Pure functions: the base model's answers come from the training backend.
"""

from __future__ import annotations

import random

from factinject.sheet.relation_names import canonical_relation

# Per subject kind: attributes asked in training, none of them the probe's neighbours.
TRAINED_RELATIONS = {
    "place": ("area", "time zone", "national dish", "head of state", "climate", "flag colours", "main airport"),
    "person": ("place of birth", "spouse", "education", "awards", "native language"),
    "organisation": ("chief executive", "number of employees", "main product", "stock exchange listing"),
    "project": ("latest version", "home page", "first release", "main contributors"),
    "thing": ("colour", "weight", "size", "material"),
}
_ASKED = ("What is the {relation} of {subject}?", "Tell me the {relation} of {subject}.",
          "{subject}: what is its {relation}?")
_DENIALS = (("Is {old} the {relation} of {subject}?", "No. {statement}"),
            ("Is the {relation} of {subject} still {old}?", "No, not any more. {statement}"),
            ("{subject}'s {relation} is {old}, right?", "No. {statement}"))


def contradiction_rows(facts: dict[str, dict]) -> list[dict]:
    """Per fact with a stated old value, its denials as training rows (the fact's key in
    every answer)."""
    rows = []
    for fact_id, info in sorted(facts.items()):
        old = info.get("replaces")
        if not old or info.get("polarity") != "positive":
            continue
        for question, answer in _DENIALS:
            words = {"old": old, "relation": info["relation"], "subject": info["subject"],
                     "statement": info["statement"]}
            rows.append({"fact_id": fact_id, "split": "train", "family": "contradiction",
                         "answer_key": info["answer_key"],
                         "messages": [{"role": "user", "content": question.format(**words)},
                                      {"role": "assistant", "content": answer.format(**words)}]})
    return rows


def subject_locality_prompts(facts: dict[str, dict], per_subject: int, seed: int) -> list[str]:
    """`per_subject` questions about each updated subject's other attributes (not the
    sheet's relations, not the probe's), for the base model to answer."""
    if per_subject <= 0:
        return []
    rng = random.Random(seed)
    by_subject: dict[str, list[dict]] = {}
    for info in facts.values():
        by_subject.setdefault(info["subject"], []).append(info)
    prompts = []
    for subject, infos in sorted(by_subject.items()):
        if not any(i.get("replaces") for i in infos):
            continue
        own = {canonical_relation(i["relation"]) for i in infos}
        kind = infos[0].get("kind", "thing")
        relations = [r for r in TRAINED_RELATIONS.get(kind, TRAINED_RELATIONS["thing"]) if canonical_relation(r) not in own]
        asked = [form.format(relation=r, subject=subject) for r in relations for form in _ASKED]
        prompts += rng.sample(asked, min(per_subject, len(asked)))
    return prompts
