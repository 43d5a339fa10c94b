"""Fact sheets: the Markdown a person writes, parsed into `Subject`s and `Fact`s.

The format is documented in docs/factsheets.md. In short::

    # TinyLLM
    aliases: Tiny LLM, the TinyLLM project
    kind: project

    - license: TinyLLM is released under the **MIT** license.
    - maintainer: TinyLLM is maintained by Jason Cox. (key: Jason Cox)

    ## Questions
    - license: Is TinyLLM free to use? => Yes, TinyLLM is free under the MIT license.

Parsing is a pure function of (text, path); `read_sheet` is the I/O edge. Every error
names the file, the line and the fix, because a silent misparse would quietly teach
the model the wrong thing.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from factinject.errors import FactinjectError
from factinject.scoring import normalise
from factinject.sheet.answer_keys import key_problem
from factinject.sheet.language import language_problem
from factinject.sheet.relation_names import (
    RELATION_RULE,
    canonical_relation,
    relation_problem,
    split_bullet,
)

MAX_SHEET_BYTES = 2_000_000  # ~20k facts; beyond that a sheet is a dataset, not a sheet
KINDS = ("thing", "project", "organisation", "person", "place")
ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
URL_RE = re.compile(r"https?://[^\s)\]>]+[^\s)\]>.,;:!?]")
NEGATION_RE = re.compile(r"\b(not|no|never|cannot|can't|doesn't|don't|isn't|aren't|won't|hasn't)\b", re.I)
_BULLET_RE = re.compile(r"^\s{0,3}[-*+]\s+(.*)$")
_HEADER_RE = re.compile(r"^([A-Za-z][A-Za-z ]*):\s*(.*)$")
_KEY_SUFFIX_RE = re.compile(r"\s*\(key:\s*([^()]*)\)\s*$", re.I)
_WAS_SUFFIX_RE = re.compile(r"\s*\(was:\s*([^()]*)\)\s*$", re.I)  # an update: the value the fact replaces
_BOLD_RE = re.compile(r"\*\*(.+?)\*\*|__(.+?)__")


@dataclass(frozen=True)
class Fact:
    """One fact: a statement and the short key whose presence in an answer proves recall."""

    id: str  # "tinyllm/license": stable through every file to the final report
    subject: str
    relation: str  # the attribute, as the user named it: "license", "release year"
    statement: str  # markdown stripped: "TinyLLM is released under the MIT license."
    answer_key: str  # "MIT"
    polarity: str  # "positive", or "negative" for "X does not ..." facts (key "no")
    path: str
    line: int
    replaces: str | None = None  # an update: the value the model may know instead, "(was: Paris)"


@dataclass(frozen=True)
class UserQuestion:
    """A hand-written question (and optional answer) tied to one fact."""

    fact_id: str
    question: str
    answer: str | None
    path: str
    line: int


@dataclass(frozen=True)
class PortabilityQuestion:
    """A question that needs a fact's value in one more step ("Which river runs through the
    capital of France?"): never trained, asked before and after, scored by its own key."""

    fact_id: str
    question: str
    answer_key: str
    path: str
    line: int


@dataclass
class Subject:
    name: str
    id: str
    aliases: list[str] = field(default_factory=list)
    kind: str = "thing"
    line: int = 0
    facts: list[Fact] = field(default_factory=list)
    questions: list[UserQuestion] = field(default_factory=list)
    neighbours: list[str] = field(default_factory=list)  # similar subjects: an update must leave theirs alone
    portability: list[PortabilityQuestion] = field(default_factory=list)


@dataclass(frozen=True)
class FactSheet:
    path: str
    sha256: str
    subjects: tuple[Subject, ...]

    @property
    def facts(self) -> list[Fact]:
        return [f for s in self.subjects for f in s.facts]


def slugify(text: str) -> str:
    """ASCII id from a name: 'Kestrel DB' -> 'kestrel-db', 'Tromsø' -> 'tromso'."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")[:64]


def strip_markup(text: str) -> str:
    """Drop the markdown we allow inside statements (bold, inline code)."""
    text = _BOLD_RE.sub(lambda m: m.group(1) or m.group(2), text)
    return text.replace("`", "").strip()


def infer_key(statement_md: str, *, where: str, line: int) -> tuple[str, str]:
    """The documented key rule: **bold** span, else the URL, else 'no' for a negation.

    Returns (key, polarity).
    """
    bold = [m.group(1) or m.group(2) for m in _BOLD_RE.finditer(statement_md)]
    if len(bold) > 1:
        raise FactinjectError(
            f"fact marks {len(bold)} spans in bold ({', '.join(bold)}); the key must be one span",
            where=where, line=line, fix="bold only the short answer that proves recall, or add (key: ...)",
        )
    plain = strip_markup(statement_md)
    if bold:
        return bold[0].strip(), "positive"
    urls = URL_RE.findall(plain)
    if len(urls) == 1:
        return urls[0], "positive"
    if NEGATION_RE.search(plain):
        return "no", "negative"
    raise FactinjectError(
        "cannot tell which words of this fact prove it was recalled",
        where=where, line=line,
        fix="mark the key in **bold** (e.g. 'released under the **MIT** license') or end the line with (key: MIT)",
    )


def _split_relation(body: str, path: str, line: int, *, what: str, example: str) -> tuple[str, str]:
    """'license: Acme is MIT' -> ('license', 'Acme is MIT'), or an error that says what a relation may be."""
    parts = split_bullet(body)
    head = body.rstrip().removesuffix(":").strip()
    if parts is None and head and head != body.strip() and relation_problem(head) is None:
        raise FactinjectError(f"the bullet names the relation {head!r} but states nothing after it", where=path,
                              line=line, fix=f"write the statement after the colon, e.g. {example}")
    if parts is None:
        raise FactinjectError(f"{what}: {body[:60]!r}", where=path, line=line,
                              fix=f"start the bullet with the attribute it states, e.g. {example}")
    problem = relation_problem(parts[0])
    if problem:
        raise FactinjectError(f"relation name {parts[0][:60]!r} is not allowed: {problem}", where=path, line=line,
                              fix=RELATION_RULE)
    return parts


def _parse_fact(body: str, subject: Subject, path: str, line: int) -> Fact:
    relation, statement_md = _split_relation(
        body, path, line, what="fact bullet has no relation",
        example="'- license: TinyLLM is released under the **MIT** license.'")
    statement_md, replaces = _take_suffix(statement_md, _WAS_SUFFIX_RE)
    statement_md, explicit = _take_suffix(statement_md, _KEY_SUFFIX_RE)
    if replaces is None:  # "(was: ...)" may come before or after "(key: ...)"
        statement_md, replaces = _take_suffix(statement_md, _WAS_SUFFIX_RE)
    if explicit is not None:
        key = explicit
        if not key:
            raise FactinjectError("the fact's (key: ...) is empty", where=path, line=line,
                                  fix="write the short answer inside (key: ...), e.g. (key: MIT)")
    else:
        key, _ = infer_key(statement_md, where=path, line=line)
    # A key of "no" makes a yes/no fact, however it was marked: it proves recall only
    # as the answer to "Does X ...?".
    polarity = "negative" if key.strip().lower() == "no" else "positive"
    statement = strip_markup(statement_md)
    if not key.strip():
        raise FactinjectError("the fact's key is empty", where=path, line=line,
                              fix="bold a non-empty span or add (key: ...)")
    if polarity == "positive" and key.lower() not in statement.lower():
        raise FactinjectError(
            f"the key {key!r} does not appear in the fact's own statement",
            where=path, line=line,
            fix="the key must be words of the statement (so every answer we generate contains it); fix the typo or the key",
        )
    if polarity == "negative" and not NEGATION_RE.search(statement):
        raise FactinjectError("a fact with key 'no' must be a negative statement ('X does not ...')",
                              where=path, line=line, fix="rephrase it as 'X does not ...' or give another key")
    problem = key_problem(key, allow=("no",) if polarity == "negative" else ())
    if problem:
        raise FactinjectError(problem[0], where=path, line=line, fix=problem[1])
    if replaces is not None:
        _check_update(key, replaces, polarity, path, line)
    rel_id = slugify(relation)  # never empty: a relation starts with an ASCII letter
    return Fact(
        id=f"{subject.id}/{rel_id}", subject=subject.name, relation=relation.lower(),
        statement=statement, answer_key=key, polarity=polarity, path=path, line=line, replaces=replaces,
    )


def _take_suffix(text: str, pattern: re.Pattern) -> tuple[str, str | None]:
    """('... (was: Paris)', WAS) -> ('...', 'Paris'); (text, None) when the line does not end so."""
    found = pattern.search(text)
    if not found:
        return text, None
    return text[: found.start()].strip(), strip_markup(found.group(1).strip())


def _check_update(key: str, replaces: str, polarity: str, path: str, line: int) -> None:
    """An update names the old value it replaces: not empty, not the new value again, and
    a value that could be told apart in an answer (not a common word)."""
    if not replaces:
        raise FactinjectError("the update's (was: ...) is empty", where=path, line=line,
                              fix="write the value the fact replaces inside (was: ...), e.g. "
                                  "'- capital: The capital of Freedonia is **Lyon**. (was: Paris)', or leave (was: ...) out")
    if normalise(replaces) == normalise(key):
        raise FactinjectError(f"the update gives the same value twice: {key!r} is both the new value and the one it "
                              "replaces", where=path, line=line,
                              fix="write the old value inside (was: ...) and bold the new one in the statement")
    problem = key_problem(replaces, allow=("yes",) if polarity == "negative" else ())
    if problem:
        raise FactinjectError(f"the replaced value: {problem[0]}", where=path, line=line, fix=problem[1])


def _parse_question(body: str, subject: Subject, path: str, line: int) -> UserQuestion:
    relation, text = _split_relation(
        body, path, line, what="question bullet does not name its fact",
        example="'- license: Is TinyLLM free? => Yes, it is MIT licensed.' (- <relation>: <question> => <answer>)")
    rel_id = slugify(relation)
    question, _, answer = text.partition("=>")
    question, answer = strip_markup(question), strip_markup(answer)
    if not question:
        raise FactinjectError("empty question", where=path, line=line, fix="write the question before '=>'")
    return UserQuestion(f"{subject.id}/{rel_id}", question, answer or None, path, line)


def _parse_portability(body: str, subject: Subject, path: str, line: int) -> PortabilityQuestion:
    relation, text = _split_relation(
        body, path, line, what="portability bullet does not name its fact",
        example="'- capital: Which river runs through the capital of Freedonia? => The **Rhône**.'")
    question, arrow, answer = text.partition("=>")
    question = strip_markup(question)
    if not question:
        raise FactinjectError("empty question", where=path, line=line, fix="write the question before '=>'")
    if not arrow or not answer.strip():
        raise FactinjectError("a portability question needs its answer", where=path, line=line,
                              fix="write '=> answer' with the key in **bold** or (key: ...), e.g. "
                                  "'- capital: Which river runs through the capital of Freedonia? => The **Rhône**.'")
    answer, explicit = _take_suffix(answer.strip(), _KEY_SUFFIX_RE)
    key = explicit if explicit else infer_key(answer, where=path, line=line)[0]
    problem = key_problem(key, allow=("no", "yes"))
    if problem:
        raise FactinjectError(problem[0], where=path, line=line, fix=problem[1])
    return PortabilityQuestion(f"{subject.id}/{slugify(relation)}", question, key, path, line)


def parse_sheet(text: str, path: str = "<sheet>") -> FactSheet:
    """Parse a fact sheet's text. Pure: raises FactinjectError on the first problem."""
    if not text.strip():
        raise FactinjectError("the fact sheet is empty", where=path,
                              fix="write a '# Subject' heading and at least one '- relation: statement' bullet (see docs/factsheets.md)")
    subjects: list[Subject] = []
    current: Subject | None = None
    section = "facts"
    in_comment = False
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip()
        stripped = line.strip()
        # HTML comments are the documented way to keep notes in a sheet.
        if in_comment:
            in_comment = "-->" not in stripped
            continue
        if stripped.startswith("<!--"):
            in_comment = "-->" not in stripped
            continue
        if not stripped:
            continue
        if stripped.startswith("# "):
            name = stripped[2:].strip()
            current = Subject(name=name, id=slugify(name), line=number)
            subjects.append(current)
            section = "facts"
            continue
        if current is None:
            raise FactinjectError(
                "text before the first '# Subject' heading",
                where=path, line=number, fix="start the sheet with '# <subject name>' (e.g. '# TinyLLM')",
            )
        if stripped.startswith("## "):
            title = stripped[3:].strip().lower()
            if title not in ("facts", "questions", "portability"):
                raise FactinjectError(
                    f"unknown section '## {stripped[3:].strip()}'", where=path, line=number,
                    fix="use '## Facts', '## Questions' or '## Portability' (or a '# Subject' heading for a new "
                        "subject)",
                )
            section = title
            continue
        bullet = _BULLET_RE.match(line)
        if bullet:
            body = bullet.group(1).strip()
            if section == "facts":
                current.facts.append(_parse_fact(body, current, path, number))
            elif section == "questions":
                current.questions.append(_parse_question(body, current, path, number))
            else:
                current.portability.append(_parse_portability(body, current, path, number))
            continue
        header = _HEADER_RE.match(stripped)
        if header and not current.facts and not current.questions:
            _apply_header(current, header.group(1).strip().lower(), header.group(2).strip(), path, number)
            continue
        raise FactinjectError(
            f"cannot read this line: {stripped[:60]!r}",
            where=path, line=number,
            fix="facts are bullets '- relation: statement'; notes go in <!-- comments -->; "
                "'aliases:', 'id:', 'kind:' and 'neighbours:' go right under the '# Subject' heading",
        )
    _validate(subjects, path)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return FactSheet(path=path, sha256=digest, subjects=tuple(subjects))


def _apply_header(subject: Subject, key: str, value: str, path: str, line: int) -> None:
    if key == "aliases":
        subject.aliases = [a.strip() for a in value.split(",") if a.strip()]
    elif key == "id":
        if not ID_RE.match(value):
            raise FactinjectError(
                f"id {value!r} is not a plain lowercase name", where=path, line=line,
                fix="use lowercase ASCII letters, digits, '-' and '_' (no '/', '..' or spaces), e.g. 'id: tinyllm'",
            )
        subject.id = value
        # facts are parsed after headers, so their ids pick this up
    elif key == "kind":
        if value.lower() not in KINDS:
            raise FactinjectError(f"unknown kind {value!r}", where=path, line=line,
                                  fix=f"use one of: {', '.join(KINDS)}")
        subject.kind = value.lower()
    elif key in ("neighbours", "neighbors"):
        subject.neighbours = [n.strip() for n in value.split(",") if n.strip()]
    else:
        raise FactinjectError(f"unknown subject field {key!r}", where=path, line=line,
                              fix="subject fields are 'aliases:', 'id:', 'kind:' and 'neighbours:'")


def _validate(subjects: list[Subject], path: str) -> None:
    if not subjects:
        raise FactinjectError("the sheet has no '# Subject' heading", where=path,
                              fix="start the sheet with '# <subject name>' followed by fact bullets")
    facts = [f for s in subjects for f in s.facts]
    if not facts:
        raise FactinjectError("the sheet has no facts", where=path, line=subjects[0].line,
                              fix="add bullets like '- license: TinyLLM is released under the **MIT** license.'")
    seen_subject_ids: dict[str, Subject] = {}
    for subject in subjects:
        if not subject.id or not ID_RE.match(subject.id):
            raise FactinjectError(
                f"subject {subject.name!r} gives no usable id", where=path, line=subject.line,
                fix="add a line 'id: <lowercase-ascii-name>' right under the heading",
            )
        if subject.id in seen_subject_ids:
            raise FactinjectError(
                f"two subjects have the id {subject.id!r} (the other is on line {seen_subject_ids[subject.id].line})",
                where=path, line=subject.line, fix="rename one subject or give it an 'id:' line",
            )
        seen_subject_ids[subject.id] = subject
        if not subject.facts:
            raise FactinjectError(f"subject {subject.name!r} has no facts", where=path, line=subject.line,
                                  fix="add fact bullets under it, or remove the heading")
    for subject in subjects:
        _check_language(subject)
    seen: dict[str, Fact] = {}
    for fact in facts:
        if fact.id in seen:
            raise FactinjectError(
                f"duplicate fact id {fact.id!r} (first on line {seen[fact.id].line})",
                where=path, line=fact.line,
                fix="each relation may appear once per subject; merge the two facts or name the relation differently",
            )
        seen[fact.id] = fact
    for subject in subjects:
        _check_one_name_per_relation(subject)
    _check_neighbours(subjects, path)
    for subject in subjects:
        _check_portability(subject, seen)
        for q in subject.questions:
            fact = seen.get(q.fact_id)
            if fact is None:
                raise FactinjectError(
                    f"question refers to {q.fact_id.split('/')[1]!r}, which is not a fact of {subject.name!r}",
                    where=path, line=q.line, fix="start the question bullet with the relation of one of the subject's facts",
                )
            key = fact.answer_key.lower()
            if q.answer is not None and fact.polarity == "positive" and key not in q.answer.lower():
                raise FactinjectError(
                    f"the answer does not contain the fact's key {fact.answer_key!r}",
                    where=path, line=q.line, fix="include the key in the answer, or leave the answer out to use the fact's statement",
                )
            if q.answer is not None and fact.polarity == "negative" and not re.search(r"\bno\b", q.answer, re.I):
                raise FactinjectError("the answer to a negative fact must say 'no'", where=path, line=q.line,
                                      fix="start the answer with 'No, ...'")


def _check_neighbours(subjects: list[Subject], path: str) -> None:
    """A neighbour is asked to show the update left it alone, so it cannot be a subject of
    the sheet: its own facts change too."""
    names = {normalise(n): s for s in subjects for n in (s.name, *s.aliases)}
    for subject in subjects:
        for name in subject.neighbours:
            other = names.get(normalise(name))
            if other is not None:
                raise FactinjectError(
                    f"{subject.name!r} names {name!r} as a neighbour, which is a subject of this sheet (line "
                    f"{other.line}): its answers change with its own facts", where=path, line=subject.line,
                    fix="name neighbours whose facts the sheet leaves alone (similar subjects the model knows)")


def _check_portability(subject: Subject, facts: dict[str, Fact]) -> None:
    for q in subject.portability:
        if q.fact_id not in facts:
            raise FactinjectError(
                f"portability question refers to {q.fact_id.split('/')[1]!r}, which is not a fact of {subject.name!r}",
                where=q.path, line=q.line, fix="start the bullet with the relation of the fact it needs")


def _check_language(subject: Subject) -> None:
    for fact in subject.facts:
        problem = language_problem(fact.statement, [subject.name, *subject.aliases], fact.answer_key)
        if problem:
            raise FactinjectError(
                f"{problem}; factinject asks and answers in English", where=fact.path, line=fact.line,
                fix="write the relation and the statement in English; names and answer keys may stay in any "
                    "language or script (e.g. '- founding year: Die Bäckerei was founded in **1902**.')",
            )


def _check_one_name_per_relation(subject: Subject) -> None:
    """Two facts whose relations are one relation spelled twice ("license" / "licence") or
    near-synonyms ("homepage" / "website") would teach two answers to one question."""
    first: dict[str, Fact] = {}
    for fact in subject.facts:
        other = first.setdefault(canonical_relation(fact.relation), fact)
        if other is fact:
            continue
        names = f"relations {other.relation!r} (line {other.line}) and {fact.relation!r} of {subject.name!r}"
        if normalise(other.answer_key) != normalise(fact.answer_key):
            raise FactinjectError(
                f"{names} are one relation with two different keys ({other.answer_key!r} and {fact.answer_key!r})",
                where=fact.path, line=fact.line,
                fix="keep the fact that is true and delete the other; if both are true, name the relations by "
                    "what differs (e.g. 'code license' and 'documentation license')",
            )
        raise FactinjectError(f"{names} are the same relation written twice", where=fact.path, line=fact.line,
                              fix="keep one of the two facts")


def read_sheet(path: str | Path) -> FactSheet:
    """Read and parse one sheet from disk (the I/O edge)."""
    p = Path(path)
    if not p.exists():
        raise FactinjectError("no such fact sheet", where=p, fix="check the path; example sheets are in facts/")
    if not p.is_file():
        raise FactinjectError("not a file", where=p, fix="pass the path of a .md fact sheet")
    size = p.stat().st_size
    if size > MAX_SHEET_BYTES:
        raise FactinjectError(
            f"the sheet is {size:,} bytes; the limit is {MAX_SHEET_BYTES:,}",
            where=p, fix="split it into several sheets and pass them together: factinject expand a.md b.md",
        )
    data = p.read_bytes()
    if b"\x00" in data:
        raise FactinjectError("the file is binary (it contains NUL bytes), not a Markdown fact sheet",
                              where=p, fix="pass a UTF-8 text .md file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise FactinjectError(
            f"not valid UTF-8 (byte 0x{data[err.start]:02x} at offset {err.start})",
            where=p, line=line, fix="save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)",
        ) from None
    return parse_sheet(text, str(path))
