"""Questions from a fact's own verb phrase.

"TinyLLM is maintained by Jason Cox." is asked "Who maintains TinyLLM?";
"Marrow Press ships with 112 fonts." is asked "How many fonts does Marrow Press ship
with?". The statement already says how its relation is worded, so these questions use
the user's own verb, not a frame around the relation's name.

A small, conservative parser: the statement is split into subject, verb phrase, the
answer key and what follows it, and only the shapes below are turned into questions.
Anything else gives no questions (the other families still cover the fact) rather
than an ungrammatical one. Active questions from a passive ("Who maintains X?") need
the verb's forms, so they are made only for verbs in `VERBS`; the passive question
("By whom is X maintained?") works for any verb.

Pure functions, no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# past participle -> (base form, third person singular, simple past)
VERBS: dict[str, tuple[str, str, str]] = {}
_REGULAR = ("maintain", "develop", "host", "found", "establish", "design", "own", "fund", "sponsor", "publish",
            "support", "start", "launch", "invent", "power", "back", "direct", "paint", "discover", "edit", "print",
            "record", "test", "review", "fork", "document", "mentor", "steward")
_REGULAR_E = ("create", "release", "license", "locate", "use", "distribute", "manage", "operate", "organise",
              "organize", "produce", "manufacture", "translate", "illustrate", "compose", "name", "curate",
              "package", "base", "serve", "store", "continue", "fine-tune", "prototype", "coordinate")
_DOUBLED = {"ship": "shipped", "plan": "planned", "drop": "dropped", "star": "starred"}
_IRREGULAR = {  # participle: (base, past)
    "written": ("write", "wrote"), "made": ("make", "made"), "built": ("build", "built"), "run": ("run", "ran"),
    "led": ("lead", "led"), "sold": ("sell", "sold"), "held": ("hold", "held"), "kept": ("keep", "kept"),
    "begun": ("begin", "began"), "drawn": ("draw", "drew"), "taught": ("teach", "taught"),
    "brought": ("bring", "brought"), "bought": ("buy", "bought"), "given": ("give", "gave"), "sent": ("send", "sent"),
    "shown": ("show", "showed"), "told": ("tell", "told"), "chosen": ("choose", "chose"), "grown": ("grow", "grew"),
    "known": ("know", "knew"), "spoken": ("speak", "spoke"), "taken": ("take", "took"), "driven": ("drive", "drove"),
}


def _third(base: str) -> str:
    if base.endswith(("s", "sh", "ch", "x", "z", "o")):
        return base + "es"
    if base.endswith("y") and base[-2:-1] not in "aeiou":
        return base[:-1] + "ies"
    return base + "s"


for _b in _REGULAR:
    VERBS[_b + "ed"] = (_b, _third(_b), _b + "ed")
for _b in _REGULAR_E:
    VERBS[_b + "d"] = (_b, _third(_b), _b + "d")
for _b, _p in _DOUBLED.items():
    VERBS[_p] = (_b, _third(_b), _p)
for _p, (_b, _past) in _IRREGULAR.items():
    VERBS[_p] = (_b, _third(_b), _past)

_AUX = r"(is|are|was|were|has been|have been)"
_ADV = r"(?:(first|originally|also|now|still|currently|mainly|mostly|officially|primarily)\s+)?"
_PREPS = ("by", "in", "at", "on", "under", "from", "with", "to", "for", "into", "through", "as", "up to")
_PREP = r"(" + "|".join(p.replace(" ", r"\s+") for p in _PREPS) + r")"
_DET = r"(?:(?:the|a|an)\b\s*)?"
_MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
           "november", "december")
_NUMBER_RE = re.compile(r"^(?:about |around |over |nearly )?[\d][\d,.]*(?: (?:thousand|million|billion))?$", re.IGNORECASE)
_URL_RE = re.compile(r"^(?:https?://|www\.)\S+$", re.IGNORECASE)
_NOT_NOUNS = {"and", "or", "but", "in", "on", "at", "by", "for", "to", "of", "with", "from", "per", "as", "so",
              "that", "which", "who", "using", "via", "since", "because", "when", "while", "if", "its", "their"}


@dataclass(frozen=True)
class Parts:
    """A statement cut at its subject and answer key."""

    subject: str  # as written in the statement ("TinyLLM", "the Lumen Transit team")
    middle: str  # between subject and key ("is maintained by")
    key: str  # the answer key as it appears in the statement
    tail: str  # after the key, without the final full stop ("license", "fonts")


def split_statement(statement: str, names: list[str], key: str) -> Parts | None:
    """Cut the statement around its subject (a name, or "The <name> <noun>") and its key."""
    text = statement.strip().rstrip(".").strip()
    pos = text.lower().find(key.lower())
    if pos < 0 or not key.strip():
        return None
    head, tail = text[:pos], text[pos + len(key):]
    for name in sorted(names, key=len, reverse=True):
        m = re.match(rf"(the\s+{re.escape(name)}\s+[a-z]+|{re.escape(name)})\s+(.*)$", head, re.IGNORECASE)
        if m and not name.lower().startswith("the "):
            subject = m.group(1)
            if subject.lower().startswith("the "):
                subject = "the " + subject[4:]
            return Parts(subject, m.group(2).strip(), text[pos:pos + len(key)], tail.strip(" ,;"))
        if m:
            return Parts(m.group(1), m.group(2).strip(), text[pos:pos + len(key)], tail.strip(" ,;"))
    return None


def key_shape(key: str) -> str:
    """person | url | date | year | number | name | thing: decides the question word."""
    k = key.strip()
    if _URL_RE.match(k):
        return "url"
    if re.fullmatch(r"1[5-9]\d\d|20\d\d", k):
        return "year"
    if any(m in k.lower().split() for m in _MONTHS) and re.search(r"\d", k):
        return "date"
    if _NUMBER_RE.match(k):
        return "number"
    words = k.replace(",", " ").split()
    if words and all(w[:1].isupper() or w in ("and", "de", "van", "von", "da", "le", "la") for w in words) \
            and any(w[:1].isupper() for w in words) and not any(c.isdigit() for c in k):
        return "name"
    return "thing"


def _head_noun(tail: str) -> str | None:
    """The noun right after the key ("license" in "MIT license"), if the tail starts with one."""
    m = re.match(r"([a-z][a-z-]+)\b", tail)
    if not m or m.group(1) in _NOT_NOUNS:
        return None
    return m.group(1)


def _rest_after_noun(tail: str, noun: str) -> str:
    rest = tail[len(noun):].strip(" ,")
    # Keep a short trailing phrase ("per node"), drop long explanations.
    return rest if rest and len(rest.split()) <= 3 and not rest.startswith(("and", "which", "who", "so")) else ""


# Participles that place their subject: "based in Ghent" asks "where", "written in Kotlin" asks "what".
PLACE_VERBS = ("based", "located", "headquartered", "situated", "housed", "hosted", "found")


def _wh_for(shape: str, prep: str, participle: str) -> str:
    if shape == "url":
        return "where"
    if shape in ("date", "year"):
        return "when"
    if shape == "name" and prep == "by":
        return "who"
    if shape == "name" and prep in ("in", "at") and participle in PLACE_VERBS:
        return "where"
    return "what"


def _clean(q: str) -> str:
    q = re.sub(r"\s+", " ", q).strip()
    q = re.sub(r"\s+([?.,])", r"\1", q)
    return q[:1].upper() + q[1:]


def statement_questions(statement: str, names: list[str], key: str) -> dict[str, list[str]]:
    """Families of questions built from the statement's verb phrase, one list per family:
    `stmt-wh` (the direct question with the statement's verb) and `stmt-echo` (the
    statement turned into a question in place: "TinyLLM is maintained by whom?")."""
    parts = split_statement(statement, names, key)
    got = None
    if parts is None:
        got = _second_person(statement, names)
    else:
        for builder in (_passive, _active, _modal, _relative):
            got = builder(parts, statement, names)
            if got:
                break
    if not got:
        return {}
    return {f: list(dict.fromkeys(_clean(q) for q in qs)) for f, qs in got.items() if qs}


def _passive(p: Parts, statement: str, names: list[str]) -> dict[str, list[str]] | None:
    """'X is maintained by KEY', 'X was first released on KEY', 'X is released under the KEY license'."""
    m = re.fullmatch(rf"{_AUX}\s+{_ADV}([a-z-]+(?:ed|en|t|wn|un|ld|de))\s+{_PREP}\s*{_DET}", p.middle, re.IGNORECASE)
    if not m:
        return None
    aux, adv, part, prep = m.group(1).lower(), (m.group(2) or "").lower(), m.group(3).lower(), m.group(4).lower()
    prep = re.sub(r"\s+", " ", prep)
    aux_q = aux.split()[0]  # "has been" -> "has"
    rest_aux = " ".join(aux.split()[1:])  # "been"
    verb = f"{adv} {rest_aux} {part}".strip()
    S = p.subject
    shape = key_shape(p.key)
    noun = _head_noun(p.tail) if shape in ("thing", "name", "number") else None
    wh, echo = [], []
    if noun and shape == "number" and noun.endswith("s"):
        rest = _rest_after_noun(p.tail, noun)
        wh.append(f"How many {noun} {aux_q} {S} {verb} {prep} {rest}?")
        echo.append(f"{S} {aux} {verb.removeprefix(rest_aux).strip()} {prep} how many {noun}?")
    elif noun:
        rest = _rest_after_noun(p.tail, noun)
        wh.append(f"{prep.capitalize()} which {noun} {aux_q} {S} {verb} {rest}?")
        wh.append(f"Which {noun} {aux_q} {S} {verb} {prep} {rest}?")
        echo.append(f"{S} {aux} {verb.removeprefix(rest_aux).strip()} {prep} which {noun}?")
    else:
        who = _wh_for(shape, prep, part)
        if who == "who":
            wh.append(f"By whom {aux_q} {S} {verb}?")
            wh.append(f"Who {aux_q} {S} {verb} by?")
            forms = VERBS.get(part)
            if forms and not rest_aux:
                _, third, past = forms
                active = third if aux in ("is", "are") else past
                wh.append(f"Who {adv} {active} {S}?" if adv in ("", "originally", "first") else f"Who {active} {S}?")
            echo.append(f"{S} {aux} {verb.removeprefix(rest_aux).strip()} by whom?")
        elif who == "when":
            wh.append(f"When {aux_q} {S} {verb}?")
            what = "date" if shape == "date" else "year"
            wh.append(f"On what {what} {aux_q} {S} {verb}?" if prep == "on" else f"In what {what} {aux_q} {S} {verb}?")
            echo.append(f"{S} {aux} {verb.removeprefix(rest_aux).strip()} when?")
        elif who == "where":
            wh.append(f"Where {aux_q} {S} {verb}?")
            if shape == "url":
                wh.append(f"At what address {aux_q} {S} {verb}?")
            else:
                wh.append(f"In which place {aux_q} {S} {verb}?" if prep == "in" else f"Where exactly {aux_q} {S} {verb}?")
            echo.append(f"{S} {aux} {verb.removeprefix(rest_aux).strip()} where?")
        else:
            wh.append(f"What {aux_q} {S} {verb} {prep}?")
            echo.append(f"{S} {aux} {verb.removeprefix(rest_aux).strip()} {prep} what?")
    return {"stmt-wh": wh, "stmt-echo": echo}


def _base_of(verb_s: str) -> str | None:
    """'ships' -> 'ship', 'watches' -> 'watch', 'carries' -> 'carry', 'has' -> 'have'."""
    v = verb_s.lower()
    if v in ("has",):
        return "have"
    if v in ("is", "was", "does", "goes", "'s") or not v.endswith("s") or v.endswith("ss") or len(v) < 3:
        return {"does": "do", "goes": "go"}.get(v)
    if v.endswith("ies") and len(v) > 4:
        return v[:-3] + "y"
    if v.endswith(("ches", "shes", "sses", "xes", "zes", "oes")):
        return v[:-2]
    return v[:-1]


def _verb_object_prep(middle: str) -> tuple[str, str, str] | None:
    """'reads timetables in the' -> ('reads', 'timetables', 'in'); 'ships with' -> ('ships', '', 'with')."""
    words = middle.split()
    if words and words[-1].lower() in ("the", "a", "an"):
        words = words[:-1]
    if not words:
        return None
    prep = ""
    if len(words) >= 3 and " ".join(words[-2:]).lower() == "up to":
        prep, words = "up to", words[:-2]
    elif len(words) >= 2 and words[-1].lower() in _PREPS:
        prep, words = words[-1].lower(), words[:-1]
    if len(words) > 4 or not all(re.fullmatch(r"[a-z][a-z-]*", w) for w in words):
        return None
    return words[0], " ".join(words[1:]), prep


def _active(p: Parts, statement: str, names: list[str]) -> dict[str, list[str]] | None:
    """'X ships with KEY fonts', 'X runs in KEY cities', 'X reads timetables in the KEY format', 'X has KEY contributors'."""
    vop = _verb_object_prep(p.middle)
    if vop is None:
        return None
    verb_s, obj, prep = vop
    base = _base_of(verb_s)
    if base is None or obj.lower() in _NOT_NOUNS:
        return None
    S = p.subject
    shape = key_shape(p.key)
    noun = _head_noun(p.tail) if shape in ("thing", "name", "number") else None
    wh, echo = [], []
    core = f"{base} {obj}".strip()
    shown_prep = "" if prep == "up to" else prep
    if noun and shape == "number" and noun.endswith("s"):
        rest = _rest_after_noun(p.tail, noun)
        wh.append(f"How many {noun} does {S} {core} {shown_prep} {rest}?")
        if shown_prep:
            wh.append(f"{shown_prep.capitalize()} how many {noun} does {S} {core} {rest}?")
        echo.append(f"{S} {verb_s} {obj} {prep} how many {noun}?")
    elif noun:
        rest = _rest_after_noun(p.tail, noun)
        wh.append(f"Which {noun} does {S} {core} {shown_prep} {rest}?")
        if shown_prep:
            wh.append(f"{shown_prep.capitalize()} which {noun} does {S} {core} {rest}?")
        echo.append(f"{S} {verb_s} {obj} {prep} which {noun}?")
    elif shape == "url" and prep in ("at", "on", "from", "in"):
        wh.append(f"Where does {S} {core}?")
        echo.append(f"{S} {verb_s} {obj} where?")
    elif shape in ("date", "year"):
        wh.append(f"When does {S} {core}?")
        echo.append(f"{S} {verb_s} {obj} when?")
    else:
        if base == "have" and not prep:
            return None  # "X has a Y": the noun frames ask this better than "What does X have?"
        wh.append(f"What does {S} {core} {shown_prep}?")
        echo.append(f"{S} {verb_s} {obj} {prep} what?")
    return {"stmt-wh": wh, "stmt-echo": echo}


def _modal(p: Parts, statement: str, names: list[str]) -> dict[str, list[str]] | None:
    """'X can store up to KEY series per node' -> 'How many series can X store per node?'."""
    words = p.middle.split()
    if len(words) < 2 or words[0].lower() not in ("can", "will", "should", "may", "must"):
        return None
    vop = _verb_object_prep(" ".join(words[1:]))
    if vop is None or vop[0].lower() in ("be", "not", "never"):
        return None
    modal, (verb, obj, prep) = words[0].lower(), vop
    shown_prep = "" if prep == "up to" else prep
    S = p.subject
    noun = _head_noun(p.tail)
    if key_shape(p.key) == "number" and noun and noun.endswith("s"):
        rest = _rest_after_noun(p.tail, noun)
        return {"stmt-wh": [f"How many {noun} {modal} {S} {verb} {obj} {shown_prep} {rest}?"],
                "stmt-echo": [f"{S} {modal} {verb} {obj} {prep} how many {noun}?"]}
    return {"stmt-wh": [f"What {modal} {S} {verb} {obj} {shown_prep}?"],
            "stmt-echo": [f"{S} {modal} {verb} {obj} {prep} what?"]}


def _relative(p: Parts, statement: str, names: list[str]) -> dict[str, list[str]] | None:
    """'X is an open-source project that helps you run a KEY ...' -> 'What does X help you run?'."""
    m = re.fullmatch(r"(is|are)\s+(?:an?|the)\s+([a-z -]+?)\s+(?:that|which)\s+([a-z]+s)\s+(.*?)\s*", p.middle, re.IGNORECASE)
    if not m:
        return None
    base = _base_of(m.group(3))
    if base is None:
        return None
    head = m.group(2).split()[-1]
    rest = re.sub(r"\s*\b(?:the|a|an)$", "", m.group(4).strip(), flags=re.IGNORECASE)
    S = p.subject
    wh = [f"What does {S} {base} {rest}?", f"{S}: what does this {head} {base} {rest}?"]
    echo = [f"{S} {m.group(3)} {rest} what?"]
    return {"stmt-wh": wh, "stmt-echo": echo}


def _second_person(statement: str, names: list[str]) -> dict[str, list[str]] | None:
    """'You can contribute to X by ... on KEY' -> 'How can I contribute to X?', 'Where can I contribute to X?'."""
    text = statement.strip().rstrip(".")
    for name in sorted(names, key=len, reverse=True):
        m = re.match(rf"you can ([a-z]+)\s+(?:(to|with|on|for)\s+)?({re.escape(name)})(?!\w)", text, re.IGNORECASE)
        if m:
            verb, prep = m.group(1).lower(), (m.group(2) or "").lower()
            target = f"{prep} {m.group(3)}".strip()
            return {"stmt-wh": [f"How can I {verb} {target}?", f"Where can I {verb} {target}?"],
                    "stmt-echo": [f"Where do I go to {verb} {target}?"]}
    return None
