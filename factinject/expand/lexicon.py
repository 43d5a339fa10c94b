"""The words people use for common relations, for the expander.

A person asks about a maintainer as "who looks after X", "who takes care of X", "the
lead developer of X"; about a license as "the licence", "the terms of use". A
pretrained model knows these mean the same; training questions that use them teach a
fact under all of them, not only under the word the fact sheet happened to use.

`relation_type(relation, statement)` finds a fact's type (by the relation name the
user wrote, or by a cue in the statement); its `questions` become the `syn` family
and its `nouns` are used by the noun frames alongside the relation's own name.
`canonical(text)` folds every synonym onto one word, so the near-duplicate filter
between training and held-out questions also catches a synonym swap ("Who looks
after X?" against "Who takes care of X?").

Pure data and functions, no heavy imports (`factinject expand` stays light).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache


@dataclass(frozen=True)
class RelationType:
    relations: tuple[str, ...]  # relation names people write in a sheet ("maintainer", "maintainers")
    cue: str | None  # regex on the statement that marks the type when the relation name is unknown
    who: bool  # answered by people
    nouns: tuple[str, ...]  # other names of the relation, for the noun frames
    questions: tuple[str, ...]  # questions in other words ({S}: the subject), the `syn` family


TYPES: dict[str, RelationType] = {
    "maintainer": RelationType(
        ("maintainer", "maintainers", "maintained by", "lead developer", "lead developers", "steward"),
        r"\bmaintained by\b", True, ("lead developer", "current maintainer"), (
            "Who looks after {S} day to day?",
            "Who takes care of {S} these days?",
            "Who oversees the development of {S}?",
            "Who currently maintains {S}?",
            "Who is the lead developer behind {S}?",
            "Who handles the upkeep of {S}?",
            "Who manages {S} now?",
            "Whose project is {S} today?",
        )),
    "creator": RelationType(
        ("creator", "creators", "author", "authors", "created by", "original author", "inventor", "written by"),
        r"\b(?:created|written|invented|started|built|designed) by\b", True, ("original author", "inventor"), (
            "Who wrote {S}?",
            "Who invented {S}?",
            "Who is the author of {S}?",
            "Who originally built {S}?",
            "Who designed {S} originally?",
            "Who brought {S} to life?",
            "Who is {S} by?",
            "Who first wrote the code of {S}?",
        )),
    "license": RelationType(
        ("license", "licence", "licensing", "license type", "licensed under", "terms"),
        r"\blicen[cs]", False, ("licence", "software license", "terms of use"), (
            "What licence does {S} come under?",
            "Which license is {S} published under?",
            "What kind of license does {S} have?",
            "What are the terms of use for {S}?",
            "Is {S} under an open-source license? Which one?",
            "What license applies to {S}?",
            "Which licensing terms cover {S}?",
            "What may I do with {S}, license-wise?",
        )),
    "repository": RelationType(
        ("repository", "repo", "source", "source code", "code", "github", "git", "code repository"),
        r"https?://\S*(?:github|gitlab|codeberg|bitbucket|sourcehut|/git)", False,
        ("source code", "code repository", "repo"), (
            "Where is the source code of {S}?",
            "Where can I get the code for {S}?",
            "Where can I clone {S} from?",
            "What is the repo link for {S}?",
            "Where is the code of {S} kept?",
            "Which URL has the source of {S}?",
            "Where can I download the source code of {S}?",
            "Where is {S} developed in the open?",
        )),
    "website": RelationType(
        ("website", "homepage", "home page", "site", "web site", "web page", "url", "documentation", "docs"),
        r"\b(?:website|homepage|lives at|online at)\b", False, ("web address", "homepage", "site"), (
            "What is the URL of {S}?",
            "Where is {S} on the internet?",
            "Which address do I type to visit {S}?",
            "Where can I read about {S} on the web?",
            "What is {S}'s web address?",
            "Which site belongs to {S}?",
            "Where is the official page of {S}?",
        )),
    "purpose": RelationType(
        ("purpose", "description", "about", "summary", "goal", "what it does", "overview", "use"),
        None, False, (), (
            "What is {S} good for?",
            "What does {S} offer?",
            "What is {S} used for?",
            "What does {S} let me do?",
            "Why does {S} exist?",
            "How would you sum up {S}?",
            "What is the aim of {S}?",
            "What is {S}, briefly?",
        )),
    "contributing": RelationType(
        ("contributing", "contributions", "contribute", "how to contribute", "contribution", "getting involved"),
        r"\bcontribut", False, (), (
            "How can I get involved in {S}?",
            "How do I help improve {S}?",
            "Where do I file an issue for {S}?",
            "How can developers take part in {S}?",
            "Where do I send patches for {S}?",
            "How does one contribute to {S}?",
            "How would I submit a bug report for {S}?",
            "Where do bug reports for {S} go?",
        )),
    "language": RelationType(
        ("language", "programming language", "written in", "implementation language", "lang"),
        r"\b(?:written|coded|implemented) in\b", False, ("implementation language", "language"), (
            "Which language was {S} built with?",
            "What language does {S} use?",
            "Which language is {S} implemented in?",
            "What language is {S} developed in?",
            "Which language do I need to work on {S}?",
            "What is {S} implemented in?",
        )),
    "location": RelationType(
        ("location", "home city", "headquarters", "hq", "based", "base", "city", "home", "team location", "offices"),
        r"\b(?:based|headquartered|located) in\b", False, ("home city", "location", "home base"), (
            "Which city is {S} based in?",
            "Where does {S} operate from?",
            "Where are the people behind {S}?",
            "Where is the home of {S}?",
            "In which town does {S} have its base?",
            "Where in the world is {S} run from?",
        )),
    "release": RelationType(
        ("first release", "release date", "released", "launch", "launch date", "initial release", "release"),
        r"\b(?:released|launched|published) on\b", False, ("launch date", "initial release date"), (
            "When was {S} released?",
            "When did {S} debut?",
            "What date did {S} come out?",
            "When did {S} go public?",
            "When was the initial release of {S}?",
            "What day did {S} first appear?",
        )),
    "founded": RelationType(
        ("founded", "founding year", "established", "year founded", "started", "founding", "since"),
        r"\b(?:founded|established) in\b", False, ("year of founding", "start year"), (
            "When was {S} established?",
            "What year did {S} get started?",
            "In which year was {S} set up?",
            "When did {S} open its doors?",
            "What year was {S} started?",
            "How long ago was {S} founded?",
        )),
    "version": RelationType(
        ("latest version", "version", "current version", "latest release", "newest version"),
        r"\bversion\b", False, ("current version", "newest release"), (
            "What version is {S} on?",
            "What is the newest release of {S}?",
            "Which version of {S} is out now?",
            "What is the latest release of {S}?",
            "What version of {S} should I download?",
            "What release is {S} at?",
        )),
    "mascot": RelationType(
        ("mascot",), r"\bmascot\b", False, (), (
            "What animal represents {S}?",
            "What is {S}'s mascot called?",
            "Which creature is the mascot of {S}?",
            "What is the mascot that stands for {S}?",
            "Who is the face of {S}?",
        )),
    "format": RelationType(
        ("data source", "format", "file format", "data format", "input format", "input"),
        r"\bformat\b", False, ("data format", "input format"), (
            "What data format does {S} use?",
            "What kind of data does {S} read?",
            "Which format does {S} take?",
            "What format are the input files of {S} in?",
            "What does {S} read its data from?",
        )),
}

# Synonyms of a yes/no question's verb: "does X need a network connection" is also
# asked "does X require a network connection".
POLAR_SWAPS: dict[str, tuple[str, ...]] = {
    "need": ("require",), "require": ("need",), "run on": ("work on",), "work on": ("run on",),
    "sync to": ("synchronise with",), "support": ("work with",), "use": ("rely on",),
}

# Interchangeable words, the first of each group is the one the others fold onto.
# Verb groups list the base form; inflections are added by `_forms`.
SYNONYM_GROUPS: tuple[tuple[str, ...], ...] = (
    ("maintain", "look after", "take care of", "oversee", "manage", "steward", "handle the upkeep of", "keep"),
    ("maintainer", "lead developer", "current maintainer", "steward", "keeper"),
    ("license", "licence", "licensing terms", "terms of use", "software license", "terms"),
    ("repository", "repo", "source code", "code repository", "source", "codebase", "code"),
    ("website", "homepage", "home page", "web address", "site", "url", "web page"),
    ("creator", "author", "original author", "inventor"),
    ("create", "write", "invent", "build", "design", "come up with", "bring to life"),
    ("contribute", "help", "get involved", "take part", "help improve", "give back"),
    ("language", "programming language", "implementation language"),
    ("implement", "code", "develop", "program"),
    ("base", "locate", "headquarter", "situate"),
    ("release", "launch", "come out", "debut", "go public", "first appear"),
    ("found", "establish", "set up", "start", "open its doors"),
    ("latest", "newest", "current", "most recent"),
    ("format", "data format", "file format", "input format"),
    ("need", "require"),
    ("purpose", "aim", "goal", "point"),
)
_IRREGULAR_FORMS = {"write": ("writes", "wrote", "written", "writing"), "build": ("builds", "built", "building"),
                    "keep": ("keeps", "kept", "keeping"), "come up with": ("comes up with", "came up with"),
                    "come out": ("comes out", "came out"), "take care of": ("takes care of", "took care of"),
                    "set up": ("sets up", "setting up"), "take part": ("takes part", "took part"),
                    "give back": ("gives back", "gave back"), "go public": ("goes public", "went public"),
                    "bring to life": ("brought to life", "brings to life"), "get involved": ("got involved",)}


def _forms(phrase: str) -> list[str]:
    """A phrase and its inflections: 'look after' -> looks after, looked after, looking after."""
    if phrase in _IRREGULAR_FORMS:
        return [phrase, *_IRREGULAR_FORMS[phrase]]
    first, _, rest = phrase.partition(" ")
    rest = f" {rest}" if rest else ""
    stem = first.removesuffix("e")
    out = [first, first + "s", stem + "ed", stem + "ing"]
    if first.endswith(("s", "sh", "ch")):
        out[1] = first + "es"
    return [f + rest for f in dict.fromkeys(out)]


@cache
def _canonical_table() -> tuple[dict[tuple[str, ...], str], int]:
    """{phrase as a tuple of words: canonical word}, and the longest phrase's length."""
    table: dict[tuple[str, ...], str] = {}
    for group in SYNONYM_GROUPS:
        head = group[0].replace(" ", "_")
        for phrase in group:
            # "code" is a noun in one group and a verb in another: only its noun forms here.
            forms = [phrase, phrase + "s"] if phrase == "code" and group[0] == "repository" else _forms(phrase)
            for form in forms:
                table.setdefault(tuple(form.split()), head)
    return table, max(len(k) for k in table)


def canonical(normalised: str) -> str:
    """Fold synonyms onto one word in an already normalised question (lower case, no
    punctuation); the longest phrase wins ("lead developer" before "lead")."""
    table, longest = _canonical_table()
    words = normalised.split()
    out: list[str] = []
    i = 0
    while i < len(words):
        for n in range(min(longest, len(words) - i), 0, -1):
            head = table.get(tuple(words[i:i + n]))
            if head is not None:
                out.append(head)
                i += n
                break
        else:
            out.append(words[i])
            i += 1
    return " ".join(out)


def relation_type(relation: str, statement: str) -> RelationType | None:
    """The lexicon entry of a fact: by the relation name the user wrote, else by a cue in the statement."""
    name = relation.strip().lower()
    for entry in TYPES.values():
        if name in entry.relations:
            return entry
    for entry in TYPES.values():
        if entry.cue and re.search(entry.cue, statement, re.IGNORECASE):
            return entry
    return None


def polar_swaps(core: str) -> list[str]:
    """The polar core with its verb swapped for a synonym ("need" -> "require")."""
    out = []
    for word, others in POLAR_SWAPS.items():
        pattern = re.compile(rf"(?<!\w){re.escape(word)}(?!\w)", re.IGNORECASE)
        if pattern.search(core):
            out += [pattern.sub(o, core, count=1) for o in others]
    return out


def all_templates() -> list[str]:
    """Every question template of the lexicon (for checks against other template sets)."""
    return [q for entry in TYPES.values() for q in entry.questions]
