"""The paraphrase expander: facts -> varied Q/A rows split by question family.

Pure functions only (no files): `expand_sheets` takes parsed sheets and an
`ExpandConfig` and returns the rows and per-fact statistics; the `expand` command
writes them. Determinism: every random choice draws from an RNG seeded by
(seed, fact id), so adding a fact to a sheet does not reshuffle the others.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass, field

from factinject import templates as T
from factinject.errors import FactinjectError
from factinject.factsheet import Fact, FactSheet, Subject, UserQuestion

SPLITS = ("train", "dev", "test")
USER_FAMILY = "user"


@dataclass(frozen=True)
class ExpandConfig:
    """Knobs of the expander (one dataclass per stage, as in TRL)."""

    seed: int = 0
    max_questions_per_family: int = 10  # keeps one family from dominating a fact's rows
    dev_families: int = 1
    test_families: int = 1
    near_duplicate_threshold: float = 0.75  # char-trigram Jaccard between held-out and train questions
    # Every Nth train question is typed the way people type into a search box: lower
    # case, no closing punctuation (0 turns it off). Without it the testbed learned a
    # fact only in the capitalisation it was trained in, and "protosai purpose"
    # got the out-of-world refusal.
    lowercase_every: int = 4

    def __post_init__(self):
        assert self.max_questions_per_family >= 1, "max_questions_per_family must be >= 1"
        assert self.dev_families >= 1 and self.test_families >= 1, "dev and test need at least one family each"
        assert 0 < self.near_duplicate_threshold <= 1, "near_duplicate_threshold is a Jaccard similarity in (0, 1]"
        assert self.lowercase_every >= 0, "lowercase_every must be >= 0 (0 turns it off)"


@dataclass
class FactStats:
    fact_id: str
    answer_key: str
    families: dict[str, list[str]] = field(default_factory=dict)  # split -> family names
    rows: Counter = field(default_factory=Counter)  # split -> row count
    near_duplicates_removed: int = 0


@dataclass
class Expansion:
    rows: list[dict]
    stats: list[FactStats]

    def split(self, name: str) -> list[dict]:
        return [r for r in self.rows if r["split"] == name]


# ---------------------------------------------------------------- grammar helpers

_NEG_FORMS = [  # (negated form in the statement, auxiliary of the question, "No, it ___.")
    (r"does not|doesn't", "does", "does not"),
    (r"do not|don't", "do", "do not"),
    (r"is not|isn't", "is", "is not"),
    (r"are not|aren't", "are", "are not"),
    (r"cannot|can't|can not", "can", "cannot"),
    (r"will not|won't", "will", "will not"),
    (r"was not|wasn't", "was", "was not"),
    (r"did not|didn't", "did", "did not"),
    (r"has not|hasn't", "has", "has not"),
    (r"should not|shouldn't", "should", "should not"),
]
_SINGULAR_S = ("ss", "us", "is", "news", "series", "status", "address")
_COUNT_RE = re.compile(r"^(?:number|count) of (.+)$")


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _is_plural(noun: str) -> bool:
    last = noun.split()[-1].lower()
    return last.endswith("s") and not last.endswith(_SINGULAR_S)


def _names(subject: Subject) -> list[str]:
    return [subject.name, *subject.aliases]


def _polar_core(fact: Fact, subject: Subject) -> tuple[str, str, str, str]:
    """'Kestrel DB does not run on Windows.' -> ('does', 'run on Windows', 'does not', name used)."""
    text = fact.statement.rstrip(". ")
    for name in sorted(_names(subject), key=len, reverse=True):
        if text.lower().startswith(name.lower() + " "):
            rest = text[len(name) + 1 :]
            break
    else:
        raise FactinjectError(
            f"a negative fact must start with its subject ({subject.name!r}) to be asked as a yes/no question",
            where=fact.path, line=fact.line,
            fix=f"rephrase as '{subject.name} does not ...', or give the key explicitly with (key: ...)",
        )
    for pattern, aux, neg in _NEG_FORMS:
        m = re.match(rf"(?:{pattern})\s+(.+)$", rest, re.I)
        if m:
            return aux, m.group(1), neg, name
    m = re.match(r"(has|have) no\s+(.+)$", rest, re.I)
    if m:
        aux = "does" if m.group(1).lower() == "has" else "do"
        return aux, f"have any {m.group(2)}", f"{aux} not", name
    raise FactinjectError(
        f"cannot turn this negative fact into a yes/no question: {fact.statement!r}",
        where=fact.path, line=fact.line,
        fix="use one of the forms 'X does not / is not / cannot / will not / has no ...', or add hand-written questions under '## Questions'",
    )


def _fill(template: str, slots: dict[str, str]) -> str:
    text = template.format(**slots)
    return re.sub(r"\s+", " ", text).strip()


def fact_families(fact: Fact, subject: Subject) -> tuple[dict[str, list[str]], list[str]]:
    """All questions of a fact, grouped by family, and its answer phrasings."""
    pronoun_it, pronoun_its = ("they", "their") if subject.kind == "person" else ("it", "its")
    families: dict[str, list[str]] = {}

    def add(family: str, rendered: str) -> None:
        # Sentences start with a capital ("the TinyLLM project is ..."), except the
        # terse families, which imitate what people type into a search box.
        if not family.endswith("terse"):
            rendered = _cap(rendered)
        bucket = families.setdefault(family, [])
        if rendered not in bucket:
            bucket.append(rendered)

    if fact.polarity == "negative":
        aux, rest, neg, _ = _polar_core(fact, subject)
        context = T.NEGATIVE_CONTEXT["software" if subject.kind in ("thing", "project") else "other"]
        for family, tpls in {**T.NEGATIVE_FAMILIES, **context}.items():
            for name in _names(subject):
                q = f"{aux} {name} {rest}"
                q_it = f"{aux} {name if subject.kind == 'person' else pronoun_it} {rest}"
                slots = {"Q": q, "Q_cap": _cap(q), "q": q.lower(), "S": name, "s": name.lower(),
                         "Q_it": q_it, "Q_it_cap": _cap(q_it), "q_it": q_it.lower()}
                for tpl in tpls:
                    add(family, _fill(tpl, slots))
        it = subject.name if subject.kind == "person" else pronoun_it
        answers = [_fill(a, {"statement": fact.statement, "it": it, "neg_aux": neg}) for a in T.NEGATIVE_ANSWERS]
        return families, answers

    spec = T.RELATIONS.get(fact.relation, T.RelationSpec())
    noun = spec.noun or fact.relation
    count = _COUNT_RE.match(fact.relation)
    plural = _is_plural(noun) and not count
    wh = "who" if spec.who else "what"
    named_families: list[tuple[str, tuple[str, ...]]] = list(spec.families)
    if count:
        named_families += list(T.COUNT_FAMILIES.items())
    if spec.noun_frames:
        named_families += list(T.NOUN_FAMILIES.items())
    for name in _names(subject):
        slots = {"S": name, "s": name.lower(), "R": noun, "W": wh, "W_cap": _cap(wh), "be": "are" if plural else "is",
                 "its": pronoun_its, "it": pronoun_it, "N": count.group(1) if count else ""}
        for family, tpls in named_families:
            for tpl in tpls:
                add(family, _fill(tpl, slots))
    answer_slots = {"statement": fact.statement, "K": fact.answer_key}
    answers = list(dict.fromkeys(_cap(_fill(a, answer_slots)) for a in T.POSITIVE_ANSWERS))
    return families, answers


# ---------------------------------------------------------------- near duplicates

def normalise_question(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def _trigrams(text: str) -> frozenset[str]:
    t = f" {normalise_question(text)} "
    return frozenset(t[i : i + 3] for i in range(len(t) - 2))


def _jaccard(a: frozenset, b: frozenset) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


# ---------------------------------------------------------------- the expander

def _row(fact: Fact, split: str, family: str, question: str, answer: str) -> dict:
    # Exactly the row of DESIGN.md: TRL's conversational format plus provenance.
    return {
        "fact_id": fact.id,
        "split": split,
        "family": family,
        "answer_key": fact.answer_key,
        "messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
    }


def _assign_splits(names: list[str], cfg: ExpandConfig, rotation: int) -> dict[str, str]:
    order = names[rotation:] + names[:rotation]
    split_of = {f: "test" for f in order[: cfg.test_families]}
    split_of.update({f: "dev" for f in order[cfg.test_families : cfg.test_families + cfg.dev_families]})
    split_of.update({f: "train" for f in order[cfg.test_families + cfg.dev_families :]})
    return split_of


def expand_fact(fact: Fact, subject: Subject, user_questions: list[UserQuestion], cfg: ExpandConfig) -> tuple[list[dict], FactStats]:
    rng = random.Random(f"{cfg.seed}:{fact.id}")
    families, answers = fact_families(fact, subject)
    names = sorted(families)
    needed = cfg.dev_families + cfg.test_families + 2
    assert len(names) >= needed, f"{fact.id}: {len(names)} families, need {needed}"
    rng.shuffle(names)
    sampled = {f: rng.sample(families[f], min(len(families[f]), cfg.max_questions_per_family)) for f in sorted(families)}
    # A held-out family can vanish entirely when all its questions are near-duplicates
    # of training questions; then rotate which families are held out (deterministic).
    for rotation in range(len(names)):
        rows, stats = _materialise(fact, _assign_splits(names, cfg, rotation), sampled, answers, user_questions, cfg)
        if stats.rows["dev"] and stats.rows["test"]:
            break
    return rows, stats


def _materialise(fact, split_of, sampled, answers, user_questions, cfg) -> tuple[list[dict], FactStats]:
    stats = FactStats(fact.id, fact.answer_key)
    chosen: dict[str, list[tuple[str, str]]] = {s: [] for s in SPLITS}  # split -> [(family, question)]
    for family, questions in sampled.items():
        chosen[split_of[family]] += [(family, q) for q in questions]
        stats.families.setdefault(split_of[family], []).append(family)
    rows: list[dict] = []
    # Hand-written questions are what the user most wants answered: always trained.
    for uq in user_questions:
        rows.append(_row(fact, "train", USER_FAMILY, uq.question, uq.answer or answers[0]))
    if user_questions:
        stats.families["train"].append(USER_FAMILY)
    # Interleave answer phrasings over the train questions: the plain statement on most
    # rows (one consistent answer is what greedy recall needs), the others so each is used.
    cycle = [0] * T.STATEMENT_ROWS_PER_VARIANT + list(range(1, len(answers)))
    train = sorted(chosen["train"], key=lambda fq: (sampled[fq[0]].index(fq[1]), fq[0]))
    for i, (family, question) in enumerate(train):
        if cfg.lowercase_every and i % cfg.lowercase_every == cfg.lowercase_every - 1:
            question = question.lower().rstrip("?.!")
        rows.append(_row(fact, "train", family, question, answers[cycle[i % len(cycle)]]))
    train_grams = [_trigrams(r["messages"][0]["content"]) for r in rows]
    for split in ("dev", "test"):
        for family, question in chosen[split]:
            grams = _trigrams(question)
            if any(_jaccard(grams, g) >= cfg.near_duplicate_threshold for g in train_grams):
                stats.near_duplicates_removed += 1
                continue
            rows.append(_row(fact, split, family, question, answers[0]))
    stats.rows.update(r["split"] for r in rows)
    return rows, stats


def _check_conflicts(rows: list[dict], facts: dict[str, Fact]) -> None:
    """The same question must never carry two different facts' answers."""
    owner: dict[str, str] = {}
    for row in rows:
        q = normalise_question(row["messages"][0]["content"])
        other = owner.setdefault(q, row["fact_id"])
        if other != row["fact_id"]:
            a, b = facts[other], facts[row["fact_id"]]
            same_subject = a.id.split("/")[0] == b.id.split("/")[0]
            raise FactinjectError(
                f"the question {row['messages'][0]['content']!r} would be taught two different answers: "
                f"{a.id} ({a.path}:{a.line}) and {b.id} ({b.path}:{b.line})",
                where=b.path, line=b.line,
                fix=(f"relations {a.relation!r} and {b.relation!r} are asked the same way; merge them into one fact"
                     if same_subject else "two subjects share a name or alias; give each subject distinct aliases"),
            )


def expand_sheets(sheets: list[FactSheet], cfg: ExpandConfig = ExpandConfig()) -> Expansion:
    """Expand every fact of every sheet. Raises FactinjectError before producing anything invalid."""
    facts: dict[str, Fact] = {}
    for sheet in sheets:
        for fact in sheet.facts:
            if fact.id in facts:
                first = facts[fact.id]
                raise FactinjectError(
                    f"duplicate fact id {fact.id!r} (also at {first.path}:{first.line})",
                    where=fact.path, line=fact.line, fix="give one of the subjects a different 'id:' line",
                )
            facts[fact.id] = fact
    rows: list[dict] = []
    stats: list[FactStats] = []
    for sheet in sheets:
        for subject in sheet.subjects:
            for fact in subject.facts:
                user_qs = [q for q in subject.questions if q.fact_id == fact.id]
                fact_rows, fact_stats = expand_fact(fact, subject, user_qs, cfg)
                rows += fact_rows
                stats.append(fact_stats)
    _check_conflicts(rows, facts)
    for row in rows:  # the invariant every later stage relies on: answers contain their key
        answer, key = row["messages"][1]["content"], row["answer_key"]
        found = re.search(r"\bno\b", answer, re.I) if key.lower() == "no" else key.lower() in answer.lower()
        assert found, f"{row['fact_id']}: answer {answer!r} lacks key {key!r}"
    return Expansion(rows=rows, stats=stats)
