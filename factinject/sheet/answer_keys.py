"""Which answer keys can prove recall: the rule shared by fact sheets and exam files.

A key proves a fact was recalled only if an answer that does not know the fact would
rarely contain it. "the", "is" or a lone "no" appear in almost every answer, so a fact
keyed on them would score as recalled before any training; a key that normalises to
nothing (only punctuation) would never score at all. Both are refused up front.
"""

from __future__ import annotations

from factinject.scoring import normalise

# Words that nearly every English answer contains: articles, pronouns, auxiliaries,
# prepositions, conjunctions and a few fillers. A key made only of these proves nothing.
_COMMON = """
a an the this that these those there here it its it's they them their theirs he him his she her hers we us our
ours you your yours i me my mine one ones
is are was were be been being am has have had having do does did done will would shall should can could may
might must
of in on at to for from by with without about into onto over under as than then so if or and but nor not no yes
also too very just only all any some each every both either neither such what which who whom whose when where why
how
"""
COMMON_WORDS = frozenset(_COMMON.split())


def key_problem(key: str, *, allow: tuple[str, ...] = ()) -> tuple[str, str] | None:
    """(what is wrong, how to fix it) for a key that cannot prove recall, else None.

    `allow`: whole keys that are fine here although common: "no" for a "does not" fact,
    which is asked as a yes/no question (the framing makes the word informative).
    """
    words = normalise(key).split()
    if not words:
        what = f"the key {key!r} has no letters, digits or symbols to match, so no answer could ever contain it"
        return what, ("use words of the statement as the key (emoji and symbols such as '+' or '#' count; "
                      "dashes, dots and quotes alone do not)")
    if " ".join(words) in allow:
        return None
    if all(w in COMMON_WORDS for w in words):
        what = (f"the key {key!r} is only common words that almost any answer contains, so it cannot prove "
                "the fact was recalled")
        return what, ("mark the specific words that answer the question, e.g. '**MIT**' rather than '**the**' "
                      "(a 'does not' fact needs no key: it is asked as a yes/no question)")
    return None
