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
from functools import lru_cache

from factinject.errors import FactinjectError
from factinject.expand import lexicon as L
from factinject.expand import templates as T
from factinject.expand.statement import statement_questions
from factinject.sheet.factsheet import Fact, FactSheet, Subject, UserQuestion

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
    """All questions of a fact, grouped by family, and its answer phrasings.

    A question belongs to one family only (the first that makes it), so no question can
    be both trained and held out."""
    pronoun_it, pronoun_its = ("they", "their") if subject.kind == "person" else ("it", "its")
    families: dict[str, list[str]] = {}
    taken: set[str] = set()

    def add(family: str, rendered: str) -> None:
        # Sentences start with a capital ("the TinyLLM project is ..."), except the
        # terse families, which imitate what people type into a search box.
        if not family.endswith("terse"):
            rendered = _cap(rendered)
        if normalise_question(rendered) in taken:
            return
        taken.add(normalise_question(rendered))
        families.setdefault(family, []).append(rendered)

    if fact.polarity == "negative":
        aux, rest, neg, _ = _polar_core(fact, subject)
        context = T.NEGATIVE_CONTEXT["software" if subject.kind in ("thing", "project") else "other"]
        for family, tpls in {**T.NEGATIVE_FAMILIES, **context}.items():
            for name in _names(subject):
                for tpl in tpls:
                    add(family, _fill(tpl, _polar_slots(aux, rest, name, subject, pronoun_it)))
        for swapped in L.polar_swaps(rest):  # "need" is also asked "require"
            for name in _names(subject):
                for tpl in T.POLAR_SYNONYM:
                    add("polar-synonym", _fill(tpl, _polar_slots(aux, swapped, name, subject, pronoun_it)))
        it = subject.name if subject.kind == "person" else pronoun_it
        answers = [_fill(a, {"statement": fact.statement, "it": it, "neg_aux": neg}) for a in T.NEGATIVE_ANSWERS]
        return families, answers

    spec = T.RELATIONS.get(fact.relation, T.RelationSpec())
    kind = L.relation_type(fact.relation, fact.statement)
    noun = spec.noun or fact.relation
    count = _COUNT_RE.match(fact.relation)
    wh = "who" if spec.who or (kind is not None and kind.who) else "what"
    named_families: list[tuple[str, tuple[str, ...]]] = list(spec.families)
    if count:
        named_families += list(T.COUNT_FAMILIES.items())
    # The relation's own name first, then the lexicon's other names for it.
    nouns = [noun] + [n for n in (kind.nouns if kind else ()) if n.lower() != noun.lower()]
    for name in _names(subject):
        slots = {"S": name, "s": name.lower(), "W": wh, "W_cap": _cap(wh), "its": pronoun_its, "it": pronoun_it,
                 "N": count.group(1) if count else ""}
        for family, tpls in named_families:
            for tpl in tpls:
                add(family, _fill(tpl, {**slots, "R": noun, "be": _be(noun, count)}))
        if spec.noun_frames:
            for family, tpls in T.NOUN_FAMILIES.items():
                # Terse and imperative frames keep the relation's own name: "x licensing
                # terms" is how nobody types, and the synonyms read well in full questions.
                for n in nouns if family not in ("terse", "imperative") else nouns[:1]:
                    for tpl in tpls:
                        add(family, _fill(tpl, {**slots, "R": n, "be": _be(n, count)}))
    # The statement's own verb ("is maintained by" -> "Who maintains X?"), then synonyms.
    for name in _names(subject):
        statement = _with_subject(fact.statement, subject.name, name)
        for family, questions in statement_questions(statement, [name], fact.answer_key).items():
            for q in questions:
                add(family, q)
        for tpl in kind.questions if kind else ():
            add("syn", _fill(tpl, {"S": name}))
    answer_slots = {"statement": fact.statement, "K": fact.answer_key}
    answers = list(dict.fromkeys(_cap(_fill(a, answer_slots)) for a in T.POSITIVE_ANSWERS))
    return families, answers


def _be(noun: str, count) -> str:
    return "are" if _is_plural(noun) and not count else "is"


def _polar_slots(aux: str, rest: str, name: str, subject: Subject, pronoun_it: str) -> dict[str, str]:
    q = f"{aux} {name} {rest}"
    q_it = f"{aux} {name if subject.kind == 'person' else pronoun_it} {rest}"
    return {"Q": q, "Q_cap": _cap(q), "q": q.lower(), "S": name, "s": name.lower(),
            "Q_it": q_it, "Q_it_cap": _cap(q_it), "q_it": q_it.lower()}


def _with_subject(statement: str, name: str, alias: str) -> str:
    """The statement with its leading subject written as `alias` ("Tiny LLM is maintained by ...").
    An alias with an article ("the TinyLLM project") only replaces a bare leading name."""
    if alias == name or not statement.startswith(name + " "):
        return statement
    return _cap(alias) + statement[len(name):]


# ---------------------------------------------------------------- near duplicates

@lru_cache(maxsize=1 << 17)  # the same questions are normalised again and again
def normalise_question(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def _trigrams(text: str) -> frozenset[str]:
    t = f" {normalise_question(text)} "
    return frozenset(t[i : i + 3] for i in range(len(t) - 2))


def _jaccard(a: frozenset, b: frozenset) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


@lru_cache(maxsize=1 << 17)
def _grams(text: str) -> tuple[frozenset[str], frozenset[str]]:
    """Trigrams of the question as written and with synonyms folded (lexicon.canonical)."""
    folded = f" {L.canonical(normalise_question(text))} "
    return _trigrams(text), frozenset(folded[i : i + 3] for i in range(len(folded) - 2))


def is_near_duplicate(question: str, others: list[tuple[frozenset, frozenset]], threshold: float) -> bool:
    """Close to any of `others` (from `_grams`) as written, or once synonyms are folded:
    "Who looks after X?" and "Who takes care of X?" are the same question."""
    raw, folded = _grams(question)
    for r, f in others:
        # |A & B| / |A | B| >= t needs min(|A|, |B|) >= t * max(|A|, |B|): a cheap test first.
        if _close_in_size(raw, r, threshold) and _jaccard(raw, r) >= threshold:
            return True
        if _close_in_size(folded, f, threshold) and _jaccard(folded, f) >= threshold:
            return True
    return False


def _close_in_size(a: frozenset, b: frozenset, threshold: float) -> bool:
    return min(len(a), len(b)) >= threshold * max(len(a), len(b))


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


def expand_fact(fact: Fact, subject: Subject, user_questions: list[UserQuestion], cfg: ExpandConfig,
                exclude: frozenset[str] = frozenset()) -> tuple[list[dict], FactStats]:
    """One fact's rows; `exclude` holds normalised questions to leave out (ambiguous ones)."""
    rng = random.Random(f"{cfg.seed}:{fact.id}")
    families, answers = fact_families(fact, subject)
    families = {f: kept for f, qs in families.items()
                if (kept := [q for q in qs if normalise_question(q) not in exclude])}
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
    train_grams = [_grams(r["messages"][0]["content"]) for r in rows]
    for split in ("dev", "test"):
        for family, question in chosen[split]:
            if is_near_duplicate(question, train_grams, cfg.near_duplicate_threshold):
                stats.near_duplicates_removed += 1
                continue
            rows.append(_row(fact, split, family, question, answers[0]))
    stats.rows.update(r["split"] for r in rows)
    return rows, stats


# Families made from the statement's wording or the lexicon's synonyms: a question of
# theirs that another fact also asks ("Where is X located?" for a repository URL and
# for a home city) is ambiguous and left out of both. A clash between the relation
# families themselves is still an error (two facts that are one relation).
SECONDARY_FAMILIES = ("stmt-wh", "stmt-echo", "syn", "polar-synonym")


def _ambiguous_questions(facts: list[tuple[Fact, Subject]]) -> frozenset[str]:
    owners: dict[str, set[str]] = {}
    secondary: set[str] = set()
    for fact, subject in facts:
        for family, questions in fact_families(fact, subject)[0].items():
            for q in questions:
                key = normalise_question(q)
                owners.setdefault(key, set()).add(fact.id)
                if family in SECONDARY_FAMILIES:
                    secondary.add(key)
    return frozenset(q for q, ids in owners.items() if len(ids) > 1 and q in secondary)


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
    ambiguous = _ambiguous_questions([(f, s) for sheet in sheets for s in sheet.subjects for f in s.facts])
    for sheet in sheets:
        for subject in sheet.subjects:
            for fact in subject.facts:
                user_qs = [q for q in subject.questions if q.fact_id == fact.id]
                fact_rows, fact_stats = expand_fact(fact, subject, user_qs, cfg, ambiguous)
                rows += fact_rows
                stats.append(fact_stats)
    _check_conflicts(rows, facts)
    for row in rows:  # the invariant every later stage relies on: answers contain their key
        answer, key = row["messages"][1]["content"], row["answer_key"]
        found = re.search(r"\bno\b", answer, re.I) if key.lower() == "no" else key.lower() in answer.lower()
        assert found, f"{row['fact_id']}: answer {answer!r} lacks key {key!r}"
    return Expansion(rows=rows, stats=stats)
