"""Near-namesakes of a subject: names a model must not now confuse with it.

The probe asks a fact's own question forms about them (bleed), and training answers
them with the base model's answers (contrast rows), so both draw from this one list.
"""

from __future__ import annotations

from factinject.scoring import names_overlap


def namesakes(name: str, avoid: list[str]) -> list[str]:
    """Near-namesakes of an injected subject: names the model must NOT now confuse with it.

    None may contain an injected name or alias as a whole word, or an answer that
    merely repeats the namesake would count as bleed."""
    squashed = name.replace(" ", "")
    typo, doubled = misspellings(name)
    candidates = [typo, name + "X", "Open" + squashed, doubled, squashed[::-1].capitalize(), squashed + "ify"]
    return [n for n in dict.fromkeys(candidates)
            if len(n) > 2 and not any(names_overlap(n, a) for a in avoid)]


def misspellings(name: str) -> tuple[str, str]:
    """The near-namesakes that are the subject's own name mistyped (its last letter
    dropped, a letter doubled): a user who types them most likely means the subject, so
    the probe reports them apart from bleed to names that are someone else."""
    squashed = name.replace(" ", "")
    mid = len(squashed) // 2
    return name[:-1], squashed[:mid] + squashed[mid] + squashed[mid:]
