"""Relation names: the rule for what a relation may be, and when two names mean one relation.

A relation is the attribute a fact states ("license", "release year"). The expander
puts it into English questions ("What is the release year of Acme?"), so it must be
a short English noun phrase. Two facts of one subject whose relations differ only in
spelling ("license" / "licence", "home page" / "homepage") or are near-synonyms
("website" / "homepage") would teach two answers to one question.
"""

from __future__ import annotations

import re

MAX_RELATION_CHARS = 60
RELATION_RULE = (f"a relation is an English noun phrase of at most {MAX_RELATION_CHARS} characters: ASCII letters, "
                 "digits, spaces, '-', '_' and \"'\", starting with a letter (e.g. 'license', 'release year', "
                 "'number of contributors'; see docs/factsheets.md)")
_ALLOWED_RE = re.compile(r"^[A-Za-z][A-Za-z0-9 '_-]*$")
_BULLET_HEAD_RE = re.compile(r"^(.*?)\s*:\s+(.+)$")  # the first colon followed by a space ends the relation


def split_bullet(body: str) -> tuple[str, str] | None:
    """'license: Acme is **MIT**.' -> ('license', 'Acme is **MIT**.'); None without a 'relation: ' head."""
    m = _BULLET_HEAD_RE.match(body)
    if not m or not m.group(1).strip():
        return None
    return m.group(1).strip(), m.group(2).strip()


def relation_problem(name: str) -> str | None:
    """Why `name` is not an allowed relation name, or None when it is."""
    if len(name) > MAX_RELATION_CHARS:
        return f"it is {len(name)} characters long"
    if _ALLOWED_RE.match(name):
        return None
    if not name[0].isascii() or not name[0].isalpha():
        if name[0].isalpha():
            return f"it starts with the non-English letter {name[0]!r}"
        return f"it starts with {name[0]!r}"
    bad = sorted({ch for ch in name if not (ch.isascii() and (ch.isalnum() or ch in " '_-"))})
    letters = [ch for ch in bad if ch.isalpha()]
    if letters:
        return f"it has non-English letters ({', '.join(repr(c) for c in letters)})"
    return f"it contains {' and '.join(repr(c) for c in bad)}"


# ---------------------------------------------------------------- one relation, several names

# British spellings to American ones, per word (only ever compared, never shown).
_SPELLING = [(re.compile(r"isation$"), "ization"), (re.compile(r"ise$"), "ize"), (re.compile(r"yse$"), "yze"),
             (re.compile(r"(?<=\w{2})our$"), "or"), (re.compile(r"(?<=[^aeiou])re$"), "er"),
             (re.compile(r"ence$"), "ense"), (re.compile(r"ogue$"), "og"), (re.compile(r"mme$"), "m"),
             (re.compile(r"^grey$"), "gray")]
# Names that mean the same attribute, in their compared form (no spaces, singular, American).
_SYNONYMS = [
    ("license", ("licensing", "licensetype", "softwarelicense")),
    ("maintainer", ("maintainedby", "currentmaintainer")),
    ("creator", ("author", "createdby", "authoredby")),
    ("website", ("homepage", "webpage", "site", "officialwebsite")),
    ("repository", ("repo", "sourcerepository", "coderepository", "gitrepository", "sourcecode")),
    ("language", ("programminglanguage", "implementationlanguage")),
    ("headquarter", ("hq", "headoffice")),
    ("founded", ("foundingyear", "yearfounded", "foundingdate", "foundedin")),
    ("firstrelease", ("initialrelease", "firstreleasedate", "initialreleasedate")),
]
_CANONICAL = {alias: name for name, aliases in _SYNONYMS for alias in aliases}


def _singular(word: str) -> str:
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith("s") and not word.endswith(("ss", "us", "is")) and len(word) > 3:
        return word[:-1]
    return word


def _american(word: str) -> str:
    for pattern, replacement in _SPELLING:
        word = pattern.sub(replacement, word)
    return word


def canonical_relation(name: str) -> str:
    """One form for every way of writing one relation: 'Licences' == 'license' == 'licensing'."""
    words = [w for w in re.split(r"[\s_'-]+", name.lower()) if w]
    if words:
        words[-1] = _singular(words[-1])
    joined = "".join(_american(w) for w in words)
    count = re.match(r"^(?:numberof|countof)(.+)$", joined) or re.match(r"^(.+)count$", joined)
    if count:
        joined = "numberof" + count.group(1)
    return _CANONICAL.get(joined, joined)
