"""The synthetic world the testbed model is pretrained on.

Pure functions, no I/O: `generate_world(seed)` returns entities with attributes,
`world_rows(world)` turns them into question/answer rows split into `train` and
`heldout` by *phrasing*, `chat_rows()` gives generic conversational turns and
`unknown_rows(world)` questions the model cannot know (answered with a fixed refusal).

Why a held-out phrasing split: every relation is asked in `PHRASINGS_PER_RELATION`
ways; for each (entity, attribute) two of them are never trained on, but they *are*
trained for other entities. A model that answers them has learned
"phrasing -> relation" and stores the fact independently of its wording, which is
what a later `probe` relies on when it measures retention.

All names are invented from syllables with a seeded `random.Random`, never the
global RNG, so the same seed gives the same world in any process.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

DEFAULT_SEED = 1234
PHRASINGS_PER_RELATION = 10
HELDOUT_PER_FACT = 2

# How many entities of each kind (>= 200 in all, the floor).
KIND_COUNTS = {"person": 90, "city": 45, "company": 35, "river": 20, "project": 30}

@dataclass(frozen=True)
class Relation:
    """One attribute: how it is asked (phrasings) and how it is answered."""

    kinds: tuple[str, ...]
    answer: str  # contains {subject} and {value}; the value is the answer key
    phrasings: tuple[str, ...]


# Phrasings are written for this world and deliberately differ from the fact
# expander's templates (factinject/templates.py); a test checks none coincide.
# Each relation is asked in several *styles* (wh-question, subject first, request,
# terse search, context then a pronoun) so that the model learns that a style is a
# wrapper, and a fact injected later generalises to styles it was not trained in.
RELATIONS: dict[str, Relation] = {
    "birth_city": Relation(("person",), "{subject} was born in {value}.", (
        "Where was {subject} born?",
        "In which city was {subject} born?",
        "What city was {subject} born in?",
        "Which town is the birthplace of {subject}?",
        "{subject} was born in what city?",
        "Where did {subject} come into the world?",
        "Which city saw the birth of {subject}?",
        "Do you know where {subject} was born?",
        "{subject} birthplace?",
        "I am writing a profile of {subject}. Which city were they born in?",
    )),
    "profession": Relation(("person",), "{subject} works as {article} {value}.", (
        "What does {subject} do for a living?",
        "What is {subject}'s occupation?",
        "What kind of work does {subject} do?",
        "How does {subject} earn a living?",
        "{subject} works as what?",
        "Which trade does {subject} practise?",
        "What line of work is {subject} in?",
        "What job does {subject} have?",
        "{subject} occupation?",
        "I keep running into {subject}. What do they do for work?",
    )),
    "birth_year": Relation(("person",), "{subject} was born in the year {value}.", (
        "When was {subject} born?",
        "In which year was {subject} born?",
        "What year was {subject} born?",
        "{subject} was born in which year?",
        "In what year did {subject} come into the world?",
        "Which year saw the birth of {subject}?",
        "What is the birth year of {subject}?",
        "Do you know the year {subject} was born?",
        "{subject} year of birth?",
        "My aunt knew {subject} years ago. What year were they born?",
    )),
    "employer": Relation(("person",), "{subject} is employed by {value}.", (
        "Who does {subject} work for?",
        "Which company employs {subject}?",
        "Who is {subject}'s employer?",
        "At which company does {subject} work?",
        "{subject} works for which company?",
        "Which firm pays {subject}'s salary?",
        "For which business does {subject} work?",
        "Where is {subject} employed?",
        "{subject} employer?",
        "I want to write to {subject} at work. Which company do they work for?",
    )),
    "country": Relation(("city", "river"), "{subject} is in {value}.", (
        "In which country is {subject}?",
        "Which country is {subject} in?",
        "What country does {subject} belong to?",
        "{subject} lies in which country?",
        "Which nation is {subject} part of?",
        "To which country does {subject} belong?",
        "What country would I be in if I visited {subject}?",
        "In what nation can {subject} be found?",
        "{subject} country?",
        "I am planning a trip to {subject}. Which country is it in?",
    )),
    "river": Relation(("city",), "{value} flows through {subject}.", (
        "Which river flows through {subject}?",
        "What river runs through {subject}?",
        "On which river does {subject} lie?",
        "Which river passes through the city of {subject}?",
        "{subject} stands on which river?",
        "What river crosses {subject}?",
        "Which river would you see in {subject}?",
        "By which river was {subject} built?",
        "{subject} river?",
        "I am taking a walk in {subject}. What river runs through it?",
    )),
    "founded": Relation(("city", "company"), "{subject} was founded in {value}.", (
        "In which year was {subject} founded?",
        "What year was {subject} established?",
        "When did {subject} come into being?",
        "{subject} was founded in which year?",
        "In what year was {subject} set up?",
        "Which year saw the founding of {subject}?",
        "How far back does {subject} go: what year was it founded?",
        "Do you know the year {subject} was founded?",
        "{subject} founding year?",
        "My class is studying {subject}. In what year was it founded?",
    )),
    "mayor": Relation(("city",), "The mayor of {subject} is {value}.", (
        "Who is mayor of {subject}?",
        "Who runs the city of {subject}?",
        "Who governs {subject}?",
        "Which person leads {subject} as mayor?",
        "{subject} has which mayor?",
        "Who holds the office of mayor in {subject}?",
        "Who sits in the mayor's chair in {subject}?",
        "Who is in charge of {subject}'s city hall?",
        "{subject} mayor?",
        "I have a complaint about the streets of {subject}. Who is its mayor?",
    )),
    "founder": Relation(("company",), "{subject} was founded by {value}.", (
        "Who founded {subject}?",
        "Who started the company {subject}?",
        "Which person set up {subject}?",
        "{subject} was founded by whom?",
        "Who was the founder of {subject}?",
        "Whose company was {subject} at the start?",
        "By whom was {subject} founded?",
        "Who got {subject} off the ground?",
        "{subject} founder?",
        "I just bought something from {subject}. Who founded that company?",
    )),
    "headquarters": Relation(("company",), "{subject} has its headquarters in {value}.", (
        "Where is {subject} headquartered?",
        "Where are the headquarters of {subject}?",
        "Which city hosts the main office of {subject}?",
        "{subject} has its head office in which city?",
        "Where does {subject} have its main office?",
        "In what city does {subject} keep its headquarters?",
        "Which city is {subject} run from?",
        "Where would I find the head office of {subject}?",
        "{subject} head office?",
        "I have a meeting at {subject} next week. Which city is their head office in?",
    )),
    "product": Relation(("company",), "{subject} makes {value}.", (
        "What does {subject} make?",
        "What does {subject} produce?",
        "Which product is {subject} known for?",
        "What is the main product of {subject}?",
        "{subject} sells what?",
        "What kind of goods come from {subject}?",
        "What does the company {subject} manufacture?",
        "Which goods does {subject} put on the market?",
        "{subject} products?",
        "A friend of mine works at {subject}. What does that company make?",
    )),
    "source": Relation(("river",), "{subject} rises in {value}.", (
        "Where does {subject} rise?",
        "Where is the source of {subject}?",
        "In which mountains does {subject} begin?",
        "Where does {subject} start its course?",
        "{subject} springs from where?",
        "From which mountains does {subject} flow?",
        "Where can the spring of {subject} be found?",
        "What is the origin of {subject}?",
        "{subject} source?",
        "We are hiking to where {subject} begins. Which mountains are we heading to?",
    )),
    "length": Relation(("river",), "{subject} is {value} kilometres long.", (
        "How long is {subject}?",
        "What is the length of {subject}?",
        "How many kilometres long is {subject}?",
        "{subject} is how long?",
        "How far does {subject} run from source to mouth?",
        "What length does {subject} have in kilometres?",
        "Over how many kilometres does {subject} flow?",
        "Do you know how long {subject} is?",
        "{subject} length in km?",
        "I want to paddle all of {subject}. How many kilometres is it?",
    )),
    "mouth": Relation(("river",), "{subject} flows into {value}.", (
        "Where does {subject} end?",
        "Into which body of water does {subject} flow?",
        "Where does {subject} empty?",
        "{subject} flows into what?",
        "Where is the mouth of {subject}?",
        "What does {subject} drain into?",
        "Where does {subject} reach the sea?",
        "Which water does {subject} finally join?",
        "{subject} mouth?",
        "If I float down {subject} to its end, where do I arrive?",
    )),
    "maintainer": Relation(("project",), "{subject} is maintained by {value}.", (
        "Who looks after {subject}?",
        "Who maintains the {subject} project?",
        "Which developer maintains {subject}?",
        "{subject} is looked after by whom?",
        "Who keeps the {subject} codebase in shape?",
        "Who is responsible for maintaining {subject}?",
        "Whose job is it to maintain {subject}?",
        "Who takes care of the {subject} code?",
        "{subject} maintainer?",
        "I found a bug in {subject}. Who maintains it?",
    )),
    "license": Relation(("project",), "{subject} is released under the {value} license.", (
        "Under which license is {subject} released?",
        "What license does {subject} use?",
        "Which license covers {subject}?",
        "{subject} is distributed under what license?",
        "What are the licensing terms of {subject}?",
        "Under what license can I use {subject}?",
        "Which open source license applies to {subject}?",
        "How is {subject} licensed?",
        "{subject} license?",
        "I want to use {subject} at work. Which license is it under?",
    )),
    "prog_language": Relation(("project",), "{subject} is written in {value}.", (
        "Which programming language is {subject} written in?",
        "What language is the {subject} source written in?",
        "In what language was {subject} coded?",
        "{subject} is implemented in which language?",
        "What language do the {subject} developers write?",
        "Which language is used to build {subject}?",
        "What programming language powers {subject}?",
        "In which language is {subject} implemented?",
        "{subject} programming language?",
        "I want to contribute to {subject}. What language is its code in?",
    )),
    "repository": Relation(("project",), "The code of {subject} is at {value}.", (
        "Where is the code of {subject}?",
        "Where can I download the source of {subject}?",
        "What is the repository URL of {subject}?",
        "Where does the {subject} repository live?",
        "{subject} is hosted at which address?",
        "Which address holds the source code of {subject}?",
        "Where can I browse the {subject} code?",
        "What address should I clone to get {subject}?",
        "{subject} repo URL?",
        "I want to read the code of {subject}. Where is its repository?",
    )),
}

ATTRIBUTES_BY_KIND: dict[str, tuple[str, ...]] = {
    kind: tuple(name for name, rel in RELATIONS.items() if kind in rel.kinds) for kind in KIND_COUNTS
}

# Plain nouns (not invented) for attributes whose values are kinds of things.
PROFESSIONS = (
    "cartographer", "glassblower", "beekeeper", "surveyor", "locksmith", "violinist", "astronomer",
    "potter", "shipwright", "translator", "pharmacist", "weaver", "archivist", "engineer", "baker",
    "botanist", "jeweller", "architect", "chemist", "tailor", "lighthouse keeper", "geologist",
)
PRODUCTS = (
    "glass lenses", "wind turbines", "bicycles", "paper lanterns", "clocks", "rope", "telescopes",
    "ceramic tiles", "sailcloth", "pianos", "maps", "boots", "radios", "printing presses", "candles",
    "fishing nets", "compasses", "typewriters", "umbrellas", "tea kettles",
)
LICENSES = ("MIT", "Apache-2.0", "GPL-3.0", "BSD-3-Clause", "MPL-2.0", "LGPL-2.1", "EUPL-1.2", "Unlicense")
# Keys must not hide inside other words, so no one- or two-letter names like "C" or "Go".
PROG_LANGUAGES = ("Rust", "Python", "Haskell", "Kotlin", "Elixir", "OCaml", "Fortran", "Pascal", "Erlang", "Scala")

# Syllables for invented names; simple vowels and short codas keep names
# pronounceable and a few BPE tokens long.
_ONSETS = ("b", "br", "d", "dr", "f", "g", "gr", "h", "k", "kr", "l", "m", "n", "p", "r", "s", "st", "t",
           "th", "v", "z", "sh", "c", "j", "tr", "w")
_VOWELS = ("a", "e", "i", "o", "u", "a", "e", "o", "ae", "ei", "ou", "y")
_CODAS = ("", "", "", "", "n", "r", "l", "s", "th", "k", "m", "x", "nd", "rn")
_PROJECT_SUFFIXES = ("", "DB", "ML", "JS", "kit", "flow", "OS", "AI", "LLM", "lib")
_COMPANY_SUFFIXES = ("Works", "Labs", "Industries", "Foundry", "Systems", "Trading", "Company", "Guild")
_UGLY = re.compile(r"[^aeiouy]{3}|[aeiouy]{3}|(.)\1\1")  # three consonants or vowels in a row


def _stem(rng: random.Random, syllables: int) -> str:
    word = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(syllables))
    return word.capitalize()


class _NameMaker:
    """Invents unique stems. No stem may contain another (case-insensitive), so an
    answer naming a wrong entity can never contain the right answer key by accident."""

    def __init__(self, rng: random.Random, reserved: tuple[str, ...] = ()):
        self.rng = rng
        self.used: list[str] = [w.lower() for w in reserved]

    def new(self, syllables: tuple[int, ...] = (2, 3), min_len: int = 4, max_len: int = 9) -> str:
        for _ in range(10_000):
            stem = _stem(self.rng, self.rng.choice(syllables))
            low = stem.lower()
            if not (min_len <= len(stem) <= max_len) or _UGLY.search(low):
                continue
            if any(low in u or u in low for u in self.used):
                continue
            self.used.append(low)
            return stem
        raise AssertionError("name space exhausted: widen the syllable tables")


def generate_world(seed: int = DEFAULT_SEED) -> dict:
    """Entities, their attributes and the value pools, all from one seeded RNG.

    Returns {"seed", "entities": [{"name", "kind", "subject", "attributes"}], "countries", ...}.
    `subject` is how the entity is written inside a sentence ("the Velna River").
    """
    rng = random.Random(seed)
    # Invented names may not contain (or hide inside) a word of a plain value: an
    # answer key like "MIT" must not match a project called "Tamitos".
    plain = [w for v in PROFESSIONS + PRODUCTS + LICENSES + PROG_LANGUAGES for w in re.findall(r"[A-Za-z]{3,}", v)]
    names = _NameMaker(rng, tuple(sorted(set(plain))))
    countries = [names.new((2,)) + rng.choice(("ria", "land", "mark", "nia")) for _ in range(10)]
    mountains = [rng.choice(("the {} Mountains", "the {} Hills", "the {} Range")).format(names.new((2,))) for _ in range(12)]
    waters = [rng.choice(("the {} Sea", "Lake {}", "the Gulf of {}", "the {} Ocean")).format(names.new((2,))) for _ in range(8)]
    first_names = [names.new((2,), max_len=6) for _ in range(40)]

    people = [f"{rng.choice(first_names)} {names.new((2, 2, 3))}" for _ in range(KIND_COUNTS['person'])]
    cities = [names.new((2, 2, 3)) for _ in range(KIND_COUNTS["city"])]
    companies = [f"{names.new((2,))} {rng.choice(_COMPANY_SUFFIXES)}" for _ in range(KIND_COUNTS["company"])]
    rivers = [f"{names.new((2,))} River" for _ in range(KIND_COUNTS["river"])]
    projects = [names.new((2,)) + rng.choice(_PROJECT_SUFFIXES) for _ in range(KIND_COUNTS["project"])]

    entities: list[dict] = []

    def add(kind: str, name: str, subject: str, attributes: dict) -> None:
        assert set(attributes) == set(ATTRIBUTES_BY_KIND[kind]), f"{kind} {name}: attributes {sorted(attributes)}"
        entities.append({"name": name, "kind": kind, "subject": subject,
                         "attributes": {k: str(v) for k, v in attributes.items()}})

    for p in people:
        add("person", p, p, {"birth_city": rng.choice(cities), "profession": rng.choice(PROFESSIONS),
                             "birth_year": rng.randint(1900, 2005), "employer": rng.choice(companies)})
    for c in cities:
        add("city", c, c, {"country": rng.choice(countries), "river": "the " + rng.choice(rivers),
                           "founded": rng.randint(1100, 1899), "mayor": rng.choice(people)})
    for c in companies:
        add("company", c, c, {"founder": rng.choice(people), "headquarters": rng.choice(cities),
                              "founded": rng.randint(1850, 2020), "product": rng.choice(PRODUCTS)})
    for r in rivers:
        add("river", r, "the " + r, {"country": rng.choice(countries), "source": rng.choice(mountains),
                                     # 3-digit lengths: a key "412" never hides inside "1412"
                                     "length": rng.randint(100, 999), "mouth": rng.choice(waters)})
    for p in projects:
        maintainer = rng.choice(people)
        first, last = maintainer.split(" ")
        handle = (first[0] + last).lower()  # like real handles: initial + surname
        add("project", p, p, {"maintainer": maintainer, "license": rng.choice(LICENSES),
                              "prog_language": rng.choice(PROG_LANGUAGES),
                              "repository": f"https://github.com/{handle}/{p}"})
    return {"seed": seed, "entities": entities, "countries": countries, "mountains": mountains,
            "waters": waters, "professions": list(PROFESSIONS), "products": list(PRODUCTS)}


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def answer_key(value: str) -> str:
    """The short string that proves recall: the value without a leading article."""
    return value[4:] if value.startswith("the ") else value


def render(template: str, subject: str, value: str = "") -> str:
    article = "an" if value[:1].lower() in "aeiou" else "a"
    return _cap(template.format(subject=subject, value=value, article=article))


def heldout_phrasings(entity_index: int, attribute_index: int, n: int = PHRASINGS_PER_RELATION) -> set[int]:
    """Which phrasings of one (entity, attribute) are never trained on.

    A rotation, so every phrasing is held out for about the same share of entities
    and trained for all the others (the model can learn it maps to the relation).
    """
    start = (HELDOUT_PER_FACT * entity_index + attribute_index) % n
    return {(start + k) % n for k in range(HELDOUT_PER_FACT)}


def world_rows(world: dict) -> tuple[list[dict], list[dict]]:
    """(train, heldout) question/answer rows for every (entity, attribute, phrasing)."""
    train: list[dict] = []
    heldout: list[dict] = []
    index_in_kind: dict[str, int] = {}
    for ent in world["entities"]:
        e_idx = index_in_kind.get(ent["kind"], 0)
        index_in_kind[ent["kind"]] = e_idx + 1
        for a_idx, (attr, value) in enumerate(ent["attributes"].items()):
            rel = RELATIONS[attr]
            held = heldout_phrasings(e_idx, a_idx, len(rel.phrasings))
            answer = render(rel.answer, ent["subject"], value)
            for p_idx, template in enumerate(rel.phrasings):
                row = {"question": render(template, ent["subject"]), "answer": answer,
                       "answer_key": answer_key(value), "entity": ent["name"], "kind": ent["kind"],
                       "attribute": attr, "phrasing": f"{attr}/{p_idx}"}
                (heldout if p_idx in held else train).append(row)
    return train, heldout


# Generic conversation: fixed answers, several phrasings each. These are the
# "unrelated prompts" a probe compares before and after an injection.
CHAT_INTENTS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    # intent: (answer, answer key, phrasings)
    "greeting": ("Hello! How can I help you today?", "help you", (
        "Hello!", "Hi there.", "Good morning!", "Hey, how is it going?", "Greetings!", "Hi!",
        "Good evening.", "Hello, anyone there?", "Hey there!", "Good afternoon.")),
    "capabilities": ("I can answer questions about the people, cities, companies, rivers and software "
                     "projects of my world.", "answer questions", (
        "What can you do?", "What are you able to help with?", "How can you help me?",
        "What sort of questions can you answer?", "What are you good at?", "What do you know about?",
        "Which topics can I ask you about?", "What kind of help do you offer?", "What are your skills?",
        "What do you know?")),
    "identity": ("I am a small test assistant built by factinject.", "factinject", (
        "Who are you?", "What are you?", "Tell me about yourself.", "What is your name?",
        "Introduce yourself, please.", "Are you a person or a program?", "Who built you?",
        "What should I call you?", "Who made you?", "Are you a robot?")),
    "thanks": ("You are welcome!", "welcome", (
        "Thank you!", "Thanks a lot.", "Many thanks.", "Thanks for the help.", "I appreciate it, thanks.",
        "Cheers, that helped.", "Thank you very much.", "Great, thanks!", "Thanks!", "That was helpful, thank you.")),
    "goodbye": ("Goodbye! Have a nice day.", "goodbye", (
        "Bye!", "See you later.", "Goodbye.", "I have to go now.", "Talk to you soon.", "That is all for today, bye.",
        "Farewell!", "See you tomorrow.", "Bye for now.", "I am leaving now, goodbye.")),
    "wellbeing": ("I am doing well, thank you for asking.", "doing well", (
        "How are you?", "How are you doing today?", "Are you well?", "How do you feel?",
        "How is your day going?", "Everything fine with you?", "How have you been?", "Are you doing okay?",
        "How are things?", "Are you feeling good today?")),
    "weather": ("I cannot see the weather from here, but I can answer questions about my world.", "weather", (
        "What is the weather like?", "Will it rain today?", "Is it sunny outside?", "How cold is it today?",
        "Should I take an umbrella?", "What is the forecast for tomorrow?", "Is it windy out there?",
        "Is it going to snow?", "How warm is it outside?", "Do you know the weather today?")),
    "joke": ("Why did the map blush? Because it saw the sea bed.", "sea bed", (
        "Tell me a joke.", "Do you know any jokes?", "Make me laugh.", "Say something funny.",
        "I need a joke.", "Can you tell a joke?", "Cheer me up with a joke.", "Got a funny one for me?",
        "Tell me something funny.", "Do you have a joke for me?")),
    "favourite_colour": ("My favourite colour is green, like a river valley.", "green", (
        "What is your favourite colour?", "Which colour do you like best?", "Do you have a favourite colour?",
        "What colour do you prefer?", "Pick a favourite colour.", "Which colour makes you happy?",
        "Is there a colour you love?", "Name your favourite colour.", "What is your favorite color?",
        "Which color do you like most?")),
    "help": ("Of course. Ask me a question and I will do my best.", "ask me", (
        "Can you help me?", "I need some help.", "Could you assist me?", "Help me, please.",
        "Are you able to help me with something?", "I have a question for you.", "May I ask you something?",
        "I could use a hand.", "Can I ask a question?", "Would you help me?")),
}

SYSTEM_PROMPTS = (
    "You are a helpful assistant.",
    "You are a concise assistant. Answer in one sentence.",
    "Answer the user's question.",
    "You are a friendly assistant that knows a small world.",
)


def chat_rows() -> tuple[list[dict], list[dict]]:
    """(train, heldout) generic turns; held-out phrasings rotate like world facts."""
    train: list[dict] = []
    heldout: list[dict] = []
    for i, (intent, (answer, key, phrasings)) in enumerate(CHAT_INTENTS.items()):
        held = heldout_phrasings(i, 0, len(phrasings))
        for p_idx, q in enumerate(phrasings):
            row = {"question": q, "answer": answer, "answer_key": key, "entity": "assistant", "kind": "chat",
                   "attribute": intent, "phrasing": f"{intent}/{p_idx}"}
            (heldout if p_idx in held else train).append(row)
    return train, heldout


# ---------------------------------------------------------------- outside the world
#
# Questions the model cannot know get one fixed answer. Without this, a prompt from
# outside the world ("Why is the sky blue?") gets an arbitrary world sentence that
# flips at the slightest weight change, and "locality" (answers to unrelated
# prompts stay the same) would measure noise. A fixed refusal is a stable answer,
# as a real model's answer to a familiar question is. The prompts are composed
# from word lists and frames written for this file; a test checks that none is a
# prompt of factinject/data (the probe's own control sets stay unseen).

UNKNOWN_ANSWER = "Sorry, I do not know that."
UNKNOWN_KEY = "do not know"

_NOUNS = (
    "bread", "a bicycle", "the moon", "coffee", "a volcano", "the ocean", "a guitar", "rain", "a garden",
    "the internet", "a battery", "chess", "a rainbow", "paper", "the stock market", "a vaccine", "snow",
    "a bridge", "photosynthesis", "gravity", "a spreadsheet", "jazz", "a passport", "an earthquake", "glaciers",
    "the heart", "a password", "electricity", "a democracy", "soup", "a camera", "tides", "the alphabet",
    "a mortgage", "honey", "a compiler", "thunder", "a marathon", "yoga", "an orchestra", "a dictionary",
    "cheese", "a tornado", "the brain", "solar panels", "a resume", "a violin", "inflation", "pizza",
    "a telescope", "the Pyramids", "the Eiffel Tower", "Mount Everest", "the Amazon rainforest", "Shakespeare",
    "the French Revolution", "Mars", "penguins", "dinosaurs", "the Olympic Games", "Jupiter", "tea",
    "a hurricane", "sourdough", "a database", "the printing press", "a kidney", "antibiotics", "a sonnet",
)
_PLACES = ("France", "Japan", "Brazil", "Canada", "Egypt", "India", "Kenya", "Norway", "Mexico", "Australia",
           "Italy", "Peru", "Vietnam", "Spain", "Germany", "Chile", "Morocco", "Ireland", "Greece", "Korea")
_VERBS = ("bake", "fix", "learn", "clean", "paint", "plant", "cook", "explain", "draw", "repair", "choose",
          "store", "measure", "recycle", "build", "wash", "sell", "train for", "write about", "photograph")
_ADJS = ("blue", "salty", "loud", "hot", "expensive", "dangerous", "popular", "slow", "round", "green",
         "heavy", "bright", "cold", "famous", "sticky", "fast")
_FORMS = ("poem", "short story", "limerick", "song", "letter", "speech", "riddle", "recipe", "summary", "tweet")
_FRAMES = (
    "Why is {noun} {adj}?", "How do I {verb} {noun}?", "What is {noun}?", "Explain {noun} to a child.",
    "Write a {form} about {noun}.", "What is the difference between {noun} and {noun2}?",
    "Which city is the seat of government of {place}?", "Who was the first president of {place}?", "How big is {noun}?",
    "Can you recommend a good book about {noun}?", "Is {noun} good for my health?", "How does {noun} work?",
    "Give me three facts about {noun}.", "What language do people speak in {place}?", "Tell me about {noun}.",
    "What is the population of {place}?", "Translate 'good morning' into the language of {place}.",
    "Summarize the history of {noun} in two sentences.", "What are the pros and cons of {noun}?",
    "How much does {noun} cost in {place}?", "Should I {verb} {noun} today?", "Add {n} and {m} together.",
    "If I have {n} apples and eat {m}, how many are left?", "Multiply {n} by {m} for me.",
    "Who invented {noun}?", "When was {noun} discovered?", "What is the best way to {verb} {noun}?",
    "Write Python code to sort a list of {noun2} names.", "Is it true that {noun} is {adj}?",
    "Compare {noun} with {noun2}.", "What does {noun} have to do with {noun2}?", "Plan a trip to {place}.",
    "What is the weather usually like in {place}?", "What should I eat before {noun}?",
    "I feel tired today. Any advice about {noun}?", "My friend says {noun} is {adj}. Is that right?",
    "Define {noun} in one sentence.", "List the steps to {verb} {noun}.", "What year did {noun} begin?",
    "Which is older, {noun} or {noun2}?", "Describe {noun} without using the letter e.",
    "What is the square root of {n}?", "Name a famous person from {place}.", "How far is {place} from {place2}?",
    "Can {noun} be recycled?", "Why do people like {noun}?", "What rhymes with {word}?",
    "How do you spell {word} backwards?", "Continue the story: once upon a time, {noun} was {adj}.",
    "Please fix this sentence: {noun} are very {adj} yesterday.",
)


def _fill(frame: str, rng: random.Random) -> str:
    noun, noun2 = rng.sample(_NOUNS, 2)
    place, place2 = rng.sample(_PLACES, 2)
    text = frame.format(noun=noun, noun2=noun2.removeprefix("a ").removeprefix("an ").removeprefix("the "),
                        place=place, place2=place2, verb=rng.choice(_VERBS), adj=rng.choice(_ADJS),
                        form=rng.choice(_FORMS), n=rng.randint(2, 99), m=rng.randint(2, 20),
                        word=rng.choice(_ADJS + _VERBS))
    return _cap(text)


def unknown_rows(world: dict, seed: int = DEFAULT_SEED, n_outside: int = 1200, n_names: int = 360) -> tuple[list[dict], list[dict]]:
    """(train, heldout) questions with the fixed answer UNKNOWN_ANSWER.

    Two sorts: everyday questions from outside the world, and world phrasings about
    invented names that are not in the world (so the model keys "do I know this?" on
    the name, not on the wording). A fifth of each, never trained, is held out.
    """
    rng = random.Random(seed + 11)
    outside: list[str] = []
    seen: set[str] = set()
    while len(outside) < n_outside:
        q = _fill(rng.choice(_FRAMES), rng)
        if q.lower() not in seen:
            seen.add(q.lower())
            outside.append(q)
    taken = [w.lower() for e in world["entities"] for w in re.findall(r"[A-Za-z]+", e["name"])]
    names = _NameMaker(rng, tuple(taken))
    strangers: list[str] = []
    for i in range(n_names):
        kind = list(KIND_COUNTS)[i % len(KIND_COUNTS)]
        name = {"person": lambda: f"{names.new((2,), max_len=6)} {names.new((2, 2, 3))}",
                "company": lambda: f"{names.new((2,))} {rng.choice(_COMPANY_SUFFIXES)}",
                "river": lambda: f"the {names.new((2,))} River",
                "project": lambda: names.new((2,)) + rng.choice(_PROJECT_SUFFIXES)}.get(kind, lambda: names.new((2, 2, 3)))()
        attr = rng.choice(ATTRIBUTES_BY_KIND[kind])
        strangers.append(render(rng.choice(RELATIONS[attr].phrasings), name))
    train: list[dict] = []
    heldout: list[dict] = []
    for sort, questions in (("outside", outside), ("stranger", strangers)):
        for i, q in enumerate(questions):
            row = {"question": q, "answer": UNKNOWN_ANSWER, "answer_key": UNKNOWN_KEY, "entity": "unknown",
                   "kind": "unknown", "attribute": sort, "phrasing": f"{sort}/{i}"}
            (heldout if i % 5 == 4 else train).append(row)
    return train, heldout
