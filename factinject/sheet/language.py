"""Fact sheets must be written in English: the expander's questions and answers are English.

A German sheet would otherwise expand into "What is the gründungsjahr of die
Bäckerei?" and train on it without a word of warning. Names and answer keys may be in
any language and script ("Tromsø", "سميرة حداد"); what is checked is the rest of each
statement, against small lists of function words (words every sentence of a language
uses, and that no name explains away).
"""

from __future__ import annotations

import re
import unicodedata

from factinject.sheet.answer_keys import COMMON_WORDS as ENGLISH_FUNCTION_WORDS

# Function words of the languages a sheet is most often written in instead (German,
# French, Spanish, Italian, Portuguese, Dutch), without any that are English words too.
_FOREIGN_TEXT = """
der das und ist nicht ein eine einen einem des von für wurde wird sind auf bei zum zur auch oder sich kein keine
über unter nach haben werden seit sein seine
le la les est et une sur avec pour dans sont été par qui pas aux ce cette leur à en depuis sous
el los las es para una está fue que muy desde su sus
il gli della di è sono che anche
dos não pelo pela
het een van niet zijn voor werd heeft ook
"""
_FOREIGN = frozenset(_FOREIGN_TEXT.split()) - ENGLISH_FUNCTION_WORDS
_WORD_RE = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")


def _is_latin(word: str) -> bool:
    return all("LATIN" in unicodedata.name(ch, "") for ch in word)


def language_problem(statement: str, names: list[str], key: str) -> str | None:
    """Why this statement does not read as English, or None when it does.

    The subject's names and the key are taken out first: they may be in any language."""
    text = statement
    for part in sorted([*names, key], key=len, reverse=True):
        if part:
            text = re.sub(re.escape(part), " ", text, flags=re.IGNORECASE)
    words = [w.lower() for w in _WORD_RE.findall(text)]
    english = sum(w in ENGLISH_FUNCTION_WORDS for w in words)
    foreign = [w for w in words if w in _FOREIGN]
    other_script = [w for w in words if not _is_latin(w)]
    unknown = foreign + other_script
    mostly_other_script = 2 * len(other_script) >= len(words) > 0
    if (english == 0 and (foreign or mostly_other_script)) or (len(foreign) >= 2 and len(foreign) > english):
        sample = ", ".join(repr(w) for w in dict.fromkeys(unknown))
        return f"the statement does not read as English ({sample})"
    return None
