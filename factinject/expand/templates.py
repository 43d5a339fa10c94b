"""Question families and answer phrasings.

A *family* is one way of asking (a direct wh-question, an imperative, a question with
context before it, a terse search-box query...). Splits are made by family, so a
held-out question is asked in a form the model never saw for that fact: that is what
makes `recall_heldout` a measure of generalisation (Allen-Zhu & Li 2023, "Physics of
Language Models 3.1": knowledge seen in one phrasing is barely extractable in others).

Placeholders: {S} subject (or an alias), {s} the subject as typed in a search box
(lower case), {R} the relation noun, {W} who/what, {be} is/are, {its} its/their,
{it} it/they, {K} the answer key. Negative facts use {Q}, the polar question core
("does TinyLLM need a cloud account").
"""

from __future__ import annotations

from dataclasses import dataclass

from factinject.expand.lexicon import all_templates

# Generic families: they work for any relation that is a noun phrase ("license",
# "release year", "home page"). Each family has 3+ templates so that every split
# still holds several questions.
NOUN_FAMILIES: dict[str, tuple[str, ...]] = {
    "wh-direct": (
        "{W_cap} {be} the {R} of {S}?",
        "{W_cap} {be} {S}'s {R}?",
        "Do you know {W} the {R} of {S} {be}?",
    ),
    "imperative": (
        "Tell me the {R} of {S}.",
        "Name the {R} of {S}.",
        "Please state {S}'s {R}.",
    ),
    "indirect": (
        "Could you tell me {W} {S}'s {R} {be}?",
        "I'd like to know the {R} of {S}.",
        "Can you remind me {W} the {R} of {S} {be}?",
    ),
    "context": (
        "I'm reading up on {S}. {W_cap} {be} {its} {R}?",
        "Quick question about {S}: {W} {be} {its} {R}?",
        "A colleague mentioned {S} this morning. Do you happen to know {its} {R}?",
    ),
    "terse": (
        "{S} {R}?",
        "{R} of {S}?",
        "{s} {R}",
    ),
    "completion": (
        "Complete the sentence: the {R} of {S} {be}",
        "Fill in the blank: {S}'s {R} {be} ____.",
        "Finish this: when it comes to {S}, the {R} {be}",
    ),
}

# Relations that read better with verbs get families of their own on top of (or, with
# `noun_frames=False`, instead of) the generic ones. Keys are the relation names a
# person is likely to write; `noun` is how the relation reads inside a noun frame.
@dataclass(frozen=True)
class RelationSpec:
    noun: str | None = None  # None: use the relation text itself
    who: bool = False  # answers are people: "who", not "what"
    noun_frames: bool = True
    families: tuple[tuple[str, tuple[str, ...]], ...] = ()


_MAINTAIN = (
    ("verb-who", ("Who maintains {S}?", "Who is in charge of maintaining {S}?", "Who keeps {S} maintained these days?")),
    ("verb-passive", ("{S} is maintained by whom?", "By whom is {S} maintained?", "Which person maintains {S}?")),
)
_CREATE = (
    ("verb-who", ("Who created {S}?", "Who made {S}?", "Who is the person behind {S}?")),
    ("verb-passive", ("{S} was created by whom?", "By whom was {S} created?", "Which person started {S}?")),
)
_WHERE = (
    ("verb-where", ("Where can I find {S}?", "Where does {S} live online?", "Where is {S} hosted?")),
    ("verb-link", ("Give me the link to {S}.", "Send me a link for {S}.", "What link should I open to get {S}?")),
)
_CONTRIBUTE = (
    ("verb-how", ("How can I contribute to {S}?", "How do I contribute to {S}?", "What is the way to contribute to {S}?")),
    ("verb-want", ("I want to help with {S}. How do I contribute?", "I'd like to contribute to {S}; where do I start?",
                   "Someone wants to improve {S}. How can they contribute?")),
    ("verb-polite", ("Could you explain how to contribute to {S}?", "Can you tell me how contributions to {S} work?",
                     "Please tell me how to get involved in {S}.")),
    ("verb-terse", ("{S} contributing?", "contribute to {s}", "{s} how to contribute")),
    ("verb-where", ("Where do contributions to {S} go?", "Where can I send a bug report or a patch for {S}?",
                    "Where should I submit a feature request for {S}?")),
    ("verb-help", ("How can I help {S}?", "What can I do to support {S}?", "I have some free time. How could I help out with {S}?")),
    ("verb-report", ("How do I report a bug in {S}?", "I found a problem in {S}. How do I let the developers know?",
                     "How would I send a code change to {S}?")),
    ("verb-join", ("How do I get involved with {S}?", "What is the process for contributing to {S}?",
                   "Can anyone work on {S}, and how?")),
)
_PURPOSE = (
    ("verb-what", ("What is {S}?", "What does {S} do?", "What is {S} for?")),
    ("verb-describe", ("Describe {S} in one sentence.", "Give me a short description of {S}.", "Explain what {S} is.")),
    ("verb-context", ("I keep hearing about {S}. What is it?", "Someone recommended {S} to me. What does it do?",
                      "Before I try {S}: what is it about?")),
    ("verb-terse", ("{S}?", "what is {s}", "{s} purpose")),
    ("verb-indirect", ("Can you tell me what {S} is?", "Do you know what {S} does?", "Could you explain the purpose of {S}?")),
    ("verb-about", ("What is {S} about?", "Tell me about {S}.", "What's the idea behind {S}?")),
    ("verb-use", ("What would I use {S} for?", "Why would someone use {S}?", "What problem does {S} solve?")),
    ("purpose-noun", ("What is the purpose of {S}?", "Tell me the purpose of {S}.", "What is the main goal of {S}?")),
    ("verb-summary", ("Summarize {S} for me.", "Give me an overview of {S}.", "In a nutshell, what is {S}?")),
)
_WHEN_RELEASED = (
    ("verb-when", ("When was {S} first released?", "When did {S} first come out?", "When was the first release of {S}?")),
    ("verb-since", ("Since when has {S} been available?", "How long ago was {S} first released?", "On what date did {S} first ship?")),
)
_WHEN_FOUNDED = (
    ("verb-when", ("When was {S} founded?", "When did {S} start?", "In what year did {S} begin?")),
    ("verb-since", ("Since when has {S} existed?", "How old is {S}: when was it started?", "What year was {S} founded in?")),
)
_LANGUAGE = (
    ("verb-written", ("What language is {S} written in?", "In which programming language is {S} written?",
                      "What is {S} programmed in?")),
    ("verb-code", ("What language would I read if I opened the source of {S}?", "What do I need to know to read {S}'s code?",
                   "Which language is the code of {S} in?")),
)
_LOCATED = (
    ("verb-where", ("Where is {S} based?", "Where is {S} located?", "In which city is {S} based?")),
    ("verb-from", ("Where does {S} come from?", "What city is {S} from?", "Which city is home to {S}?")),
)

RELATIONS: dict[str, RelationSpec] = {
    "maintainer": RelationSpec(who=True, families=_MAINTAIN),
    "maintainers": RelationSpec(who=True, families=_MAINTAIN),
    "creator": RelationSpec(who=True, families=_CREATE),
    "author": RelationSpec(who=True, families=_CREATE),
    "founder": RelationSpec(who=True, families=_CREATE),
    "url": RelationSpec(noun="URL", families=_WHERE),
    "repository": RelationSpec(noun="repository", families=_WHERE),
    "repo": RelationSpec(noun="repository", families=_WHERE),
    "homepage": RelationSpec(noun="home page", families=_WHERE),
    "home page": RelationSpec(noun="home page", families=_WHERE),
    "website": RelationSpec(noun="website", families=_WHERE),
    "documentation": RelationSpec(noun="documentation link"),
    "contributing": RelationSpec(noun_frames=False, families=_CONTRIBUTE),
    "contributions": RelationSpec(noun_frames=False, families=_CONTRIBUTE),
    "purpose": RelationSpec(noun_frames=False, families=_PURPOSE),
    "description": RelationSpec(noun_frames=False, families=_PURPOSE),
    "first release": RelationSpec(noun="first release date", families=_WHEN_RELEASED),
    "release date": RelationSpec(noun="release date", families=_WHEN_RELEASED),
    "founded": RelationSpec(noun="founding year", families=_WHEN_FOUNDED),
    "founding year": RelationSpec(families=_WHEN_FOUNDED),
    "language": RelationSpec(noun="programming language", families=_LANGUAGE),
    "programming language": RelationSpec(families=_LANGUAGE),
    "location": RelationSpec(families=_LOCATED),
    "home city": RelationSpec(families=_LOCATED),
    "headquarters": RelationSpec(families=_LOCATED),
}

# "number of contributors" reads as "How many contributors does X have?"
COUNT_FAMILIES: dict[str, tuple[str, ...]] = {
    "count-how-many": ("How many {N} does {S} have?", "How many {N} has {S} got?", "Do you know how many {N} {S} has?"),
    "count-context": ("I'm curious about {S}. How many {N} does it have?", "Quick question about {S}: how many {N} are there?",
                      "Roughly speaking, how many {N} does {S} have?"),
}

# Negative facts ("TinyLLM does not need a cloud account") are asked as polar
# questions whose right answer is "No". {Q} is the polar core without the '?'.
# There is no terse family here: "does x need a cloud account" is the direct
# question in lower case, a near-duplicate that the splitter would drop anyway.
NEGATIVE_FAMILIES: dict[str, tuple[str, ...]] = {
    "polar-direct": ("{Q_cap}?", "So, {Q}?", "{Q_cap}, as far as you know?"),
    "polar-yesno": ("Yes or no: {Q}?", "Answer with yes or no. {Q_cap}?", "Is the answer yes or no: {Q}?"),
    "polar-check": ("Quick check before I start: {Q}?", "Just to confirm something about {S}: {Q_it}?",
                    "Can you double-check this for me: {Q}?"),
}

# Polar questions whose verb is a synonym of the statement's ("does X require ..." for
# "X does not need ..."), filled by the lexicon's swaps.
POLAR_SYNONYM: tuple[str, ...] = ("{Q_cap}?", "Tell me, {Q}?", "{Q_cap}, do you know?")

# The context families depend on what the subject is: one sets up software, not a
# person. For people {Q_it} repeats the name ("can Mira Tal drive"), because "does
# they" is wrong and we do not guess anyone's pronouns.
NEGATIVE_CONTEXT: dict[str, dict[str, tuple[str, ...]]] = {
    "software": {
        "polar-context": ("I'm setting up {S} on a new machine today. {Q_it_cap}?",
                          "I'm new to {S} and reading the docs. {Q_it_cap}?",
                          "My team is thinking about adopting {S}. {Q_it_cap}?"),
        "polar-scenario": ("Suppose I install {S} tomorrow. {Q_it_cap}?", "Imagine a fresh project built on {S}. {Q_it_cap}?",
                           "Picture a first-time user of {S}. {Q_it_cap}, in their case?"),
    },
    "other": {
        "polar-context": ("I'm reading about {S} today. {Q_it_cap}?", "A friend asked me about {S}. {Q_it_cap}?",
                          "I'm writing a short profile of {S}. {Q_it_cap}?"),
        "polar-scenario": ("Someone at work brought up {S}. {Q_it_cap}?",
                           "Imagine you had to brief a newcomer on {S}. {Q_it_cap}?",
                           "Picture a reporter researching {S}. {Q_it_cap}?"),
    },
}

# Answer phrasings: every one contains the key by construction (the statement does,
# and the others embed {K}); a test checks it for every generated row.
# Every positive phrasing *starts* with the fact's own statement. Measured on the
# testbed (docs/benchmarks.md): answers that open differently ("The license of X
# is ...", "In short: MIT. ...") make the model pick an opening before it has
# decided which fact is asked, and the small model then completes the wrong one
# ("The mayor of TinyLLM is ..."); held-out recall went from 68 % to 96 % when the
# statement came first. Variety stays in the questions, where it drives recall.
POSITIVE_ANSWERS: tuple[str, ...] = (
    "{statement}", "{statement} In short: {K}.", "{statement} The short answer is {K}.",
)
# Train rows cycle through the phrasings: this many with the first (the statement),
# then one with each of the others.
STATEMENT_ROWS_PER_VARIANT = 4
NEGATIVE_ANSWERS: tuple[str, ...] = ("No. {statement}", "No, {it} {neg_aux}. {statement}", "The answer is no: {statement}")


def all_question_templates() -> list[str]:
    """Every question template string, for checks (e.g. the testbed must not reuse them)."""
    out: list[str] = []

    for fams in (NOUN_FAMILIES, COUNT_FAMILIES, NEGATIVE_FAMILIES, *NEGATIVE_CONTEXT.values()):
        for templates in fams.values():
            out.extend(templates)
    for spec in RELATIONS.values():
        for _, templates in spec.families:
            out.extend(templates)
    out += list(POLAR_SYNONYM) + all_templates()
    return sorted(set(out))


QUESTION_TEMPLATES: tuple[str, ...] = tuple(all_question_templates())
