"""The synthetic world the testbed model is pretrained on.

Pure functions, no I/O: `generate_world(seed)` returns entities with attributes,
`world_rows(world)` turns them into question/answer rows split into `train`,
`heldout` and `unseen` by *wording*, `chat_rows()` gives generic conversational turns
and `unknown_rows(world)` questions the model cannot know (answered with a fixed
refusal). The relations and their wordings live in `relations.py`.

Two held-out splits, two questions:
- `heldout`: for each (entity, attribute) two wordings are never trained for *that*
  fact (they are for other entities). A model that answers them stores the
  fact independently of its wording; this is the probe's retention set.
- `unseen`: wordings of a relation never trained for *any* entity. A model that
  answers them has learnt the relation's language, not a list of questions: what a
  fact injected later relies on when it is asked in the user's own words.

In every split about one question in four is typed the way people type into a search
box, all lower case with no closing mark ("julfulib license"), so the model knows a
name and a relation however they are cased, as a pretrained model does.

All names are invented from syllables with a seeded `random.Random`, never the
global RNG, so the same seed gives the same world in any process.
"""

from __future__ import annotations

import random
import re
import zlib

from factinject.testbed.relations import RELATIONS, wordings

DEFAULT_SEED = 1234
TRAINED_PER_FACT = 8  # wordings each fact is trained in
HELDOUT_PER_FACT = 2  # wordings of each fact never trained for it (the retention set)
CASUAL_EVERY = 4  # one question in this many is typed casually: lower case, no closing mark

# How many entities of each kind (>= 200 in all).
KIND_COUNTS = {"person": 50, "company": 26, "product": 26, "project": 40, "city": 32, "river": 12, "event": 20}

ATTRIBUTES_BY_KIND: dict[str, tuple[str, ...]] = {
    kind: tuple(name for name, rel in RELATIONS.items() if kind in rel.kinds) for kind in KIND_COUNTS
}

# Plain words (not invented) for attributes whose values are kinds of things. Within
# one attribute no value contains another, so a wrong answer never matches a key.
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
HOBBIES = ("birdwatching", "rock climbing", "chess", "gardening", "sailing", "knitting", "fencing", "pottery",
           "kayaking", "stargazing", "baking bread", "fly fishing", "archery", "calligraphy", "cycling", "origami")
INSTRUMENTS = ("cello", "harp", "trumpet", "accordion", "oboe", "banjo", "clarinet", "viola", "bassoon",
               "mandolin", "tuba", "flute")
INDUSTRIES = ("shipping", "textile", "mining", "timber", "insurance", "brewing", "aviation", "publishing",
              "tourism", "dairy", "railway", "fishing")
SLOGANS = ("Built to Last", "Light Years Ahead", "Made for Makers", "Always in Season", "Quietly Brilliant",
           "Honest Work", "Tomorrow, Today", "Small Things Matter", "Ready When You Are", "Crafted Slowly",
           "Go Further", "Made Right Here", "Trust the Process", "Plain and Simple", "Every Detail Counts",
           "Born in the Hills", "Better Together", "Keep It Moving", "The Long Way Round", "Open Every Door",
           "Nothing Wasted", "Steady Hands", "Worth the Wait", "From the Ground Up", "Bright Ideas Daily",
           "Never Standing Still")
ANIMALS = ("heron", "otter", "badger", "fox", "owl", "beaver", "lynx", "crane", "hedgehog", "tortoise", "puffin",
           "salamander", "moth", "wren", "seal", "hare")
COLOURS = ("teal", "amber", "crimson", "ivory", "charcoal", "olive", "coral", "navy blue", "mustard yellow",
           "lilac", "copper", "sand")
ACCESSORIES = ("charging cable", "leather case", "spare battery", "stylus", "travel pouch", "wall adapter",
               "cleaning cloth", "pair of earbuds", "screen protector", "wrist strap")
FILE_FORMATS = ("CSV", "JSON", "YAML", "TOML", "XML", "Parquet", "Markdown", "SQLite", "NetCDF", "MIDI", "SVG", "FITS")
PLATFORMS = ("GitHub", "GitLab", "Codeberg", "SourceHut", "Gitea", "Launchpad", "Bitbucket", "the mailing list")
PURPOSES = ("spreadsheet engine", "weather simulator", "chess engine", "photo organiser", "music tracker",
            "note-taking app", "map renderer", "password manager", "budget planner", "recipe manager",
            "fitness tracker", "bird song classifier", "tide predictor", "font editor", "star chart",
            "garden planner", "podcast player", "invoice generator", "timetable builder", "subtitle editor",
            "static site generator", "log analyser", "backup tool", "image compressor", "markdown editor",
            "packet sniffer", "game engine", "drum machine", "knitting pattern designer", "flight logger",
            "seismograph viewer", "translation memory", "crossword generator", "e-book reader", "video transcoder",
            "circuit simulator", "genealogy database", "library catalogue", "sheet music renderer", "habit tracker")
DISHES = ("smoked eel", "plum dumplings", "onion soup", "fried sardines", "barley bread", "cherry cake",
          "pickled herring", "walnut pie", "lamb stew", "honey biscuits", "chestnut porridge", "apple fritters")
NICKNAMES = ("City of Bridges", "City of Bells", "City of Kites", "City of Clocks", "City of Fountains",
             "City of Gardens", "Copper Town", "Old Harbour", "Lantern Town", "Salt Quarter", "Green Crown",
             "Tower Valley")
LANDMARK_TYPES = ("Tower", "Bridge", "Gate", "Lighthouse", "Cathedral", "Market Hall", "Clock Tower", "Fountain")
THEMES = ("kites", "jazz", "robotics", "poetry", "cheese", "folk dance", "street food", "sailing boats",
          "board games", "puppetry", "glass art", "vintage cars")
PRIZE_TYPES = ("Cup", "Trophy", "Medal", "Shield", "Plate", "Crown")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")

# Syllables for invented names; simple vowels and short codas keep names
# pronounceable and a few BPE tokens long.
_ONSETS = ("b", "br", "d", "dr", "f", "g", "gr", "h", "k", "kr", "l", "m", "n", "p", "r", "s", "st", "t",
           "th", "v", "z", "sh", "c", "j", "tr", "w")
_VOWELS = ("a", "e", "i", "o", "u", "a", "e", "o", "ae", "ei", "ou", "y")
_CODAS = ("", "", "", "", "n", "r", "l", "s", "th", "k", "m", "x", "nd", "rn")
_PROJECT_SUFFIXES = ("", "DB", "ML", "JS", "kit", "flow", "OS", "AI", "LLM", "lib")
_COMPANY_SUFFIXES = ("Works", "Labs", "Industries", "Foundry", "Systems", "Trading", "Company", "Guild")
_PRODUCT_SUFFIXES = ("Pad", "Cam", "Watch", "Book", "Drive", "Box", "Lens", "Phone", "Dock", "Mini")
_EVENT_TYPES = ("Festival", "Summit", "Fair", "Regatta", "Games", "Carnival", "Congress", "Marathon")
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


_PLATFORM_HOSTS = {"GitHub": "github.com", "GitLab": "gitlab.com", "Codeberg": "codeberg.org"}


def generate_world(seed: int = DEFAULT_SEED) -> dict:
    """Entities, their attributes and the value pools, all from one seeded RNG.

    Returns {"seed", "entities": [{"name", "kind", "subject", "attributes"}], "countries", ...}.
    `subject` is how the entity is written inside a sentence ("the Velna River").
    """
    rng = random.Random(seed)
    # Invented names may not contain (or hide inside) a word of a plain value: an
    # answer key like "MIT" must not match a project called "Tamitos".
    pools = (PROFESSIONS + PRODUCTS + LICENSES + PROG_LANGUAGES + HOBBIES + INSTRUMENTS + INDUSTRIES + SLOGANS
             + ANIMALS + COLOURS + ACCESSORIES + FILE_FORMATS + PLATFORMS + PURPOSES + DISHES + NICKNAMES
             + LANDMARK_TYPES + THEMES + PRIZE_TYPES + MONTHS)
    plain = [w for v in pools for w in re.findall(r"[A-Za-z]{3,}", v)]
    names = _NameMaker(rng, tuple(sorted(set(plain))))
    countries = [names.new((2,)) + rng.choice(("ria", "land", "mark", "nia")) for _ in range(10)]
    mountains = [rng.choice(("the {} Mountains", "the {} Hills", "the {} Range")).format(names.new((2,))) for _ in range(12)]
    waters = [rng.choice(("the {} Sea", "Lake {}", "the Gulf of {}", "the {} Ocean")).format(names.new((2,))) for _ in range(8)]
    first_names = [names.new((2,), max_len=6) for _ in range(40)]

    people = [f"{rng.choice(first_names)} {names.new((2, 2, 3))}" for _ in range(KIND_COUNTS["person"])]
    cities = [names.new((2, 2, 3)) for _ in range(KIND_COUNTS["city"])]
    companies = [f"{names.new((2,))} {rng.choice(_COMPANY_SUFFIXES)}" for _ in range(KIND_COUNTS["company"])]
    products = [f"{names.new((2,))} {rng.choice(_PRODUCT_SUFFIXES)}" for _ in range(KIND_COUNTS["product"])]
    projects = [names.new((2,)) + rng.choice(_PROJECT_SUFFIXES) for _ in range(KIND_COUNTS["project"])]
    rivers = [f"{names.new((2,))} River" for _ in range(KIND_COUNTS["river"])]
    events = [f"{names.new((2,))} {rng.choice(_EVENT_TYPES)}" for _ in range(KIND_COUNTS["event"])]

    entities: list[dict] = []

    def add(kind: str, name: str, subject: str, attributes: dict) -> None:
        assert set(attributes) == set(ATTRIBUTES_BY_KIND[kind]), f"{kind} {name}: attributes {sorted(attributes)}"
        entities.append({"name": name, "kind": kind, "subject": subject,
                         "attributes": {k: str(attributes[k]) for k in ATTRIBUTES_BY_KIND[kind]}})

    def other(pool: list[str], me: str) -> str:
        return rng.choice([x for x in pool if x != me])

    def mascot() -> str:
        return f"{rng.choice(ANIMALS)} {rng.choice(('named', 'called'))} {names.new((1, 2), min_len=3, max_len=6)}"

    def slug(name: str) -> str:
        return re.sub(r"[^a-z0-9]", "", name.lower())

    for p in people:
        add("person", p, p, {
            "birth_city": rng.choice(cities), "birth_year": rng.randint(1900, 2005), "profession": rng.choice(PROFESSIONS),
            "employer": rng.choice(companies), "residence": rng.choice(cities), "nationality": rng.choice(countries),
            "spouse": other(people, p), "hobby": rng.choice(HOBBIES), "instrument": rng.choice(INSTRUMENTS),
            "alma_mater": f"University of {rng.choice(cities)}"})
    for c in companies:
        add("company", c, c, {
            "founder": rng.choice(people), "headquarters": rng.choice(cities), "founded": rng.randint(1850, 2020),
            "product": rng.choice(PRODUCTS), "ceo": rng.choice(people), "employees": rng.randint(1000, 9999),
            "industry": rng.choice(INDUSTRIES), "parent_company": other(companies, c), "slogan": rng.choice(SLOGANS),
            "website": f"https://www.{slug(c)}.example.com", "mascot": mascot()})
    for p in products:
        add("product", p, p, {
            "maker": rng.choice(companies), "release_year": rng.randint(1990, 2024), "price": rng.randint(100, 999),
            "weight": rng.randint(100, 999), "battery_life": rng.randint(10, 48), "colour": rng.choice(COLOURS),
            "designer": rng.choice(people), "made_in": rng.choice(cities), "ships_with": rng.choice(ACCESSORIES),
            "screen_size": rng.randint(10, 32), "runs_software": rng.choice(projects),
            "waterproof": rng.choice(("Yes", "No"))})
    for p in projects:
        maintainer = rng.choice(people)
        first, last = maintainer.split(" ")
        platform = rng.choice(PLATFORMS)
        host = _PLATFORM_HOSTS.get(platform, "git.example.org")
        add("project", p, p, {
            "purpose": rng.choice(PURPOSES), "maintainer": maintainer, "license": rng.choice(LICENSES),
            # like real handles: initial + surname
            "repository": f"https://{host}/{(first[0] + last).lower()}/{p}", "contributing": platform,
            "prog_language": rng.choice(PROG_LANGUAGES), "creator": rng.choice(people),
            "first_release": f"{rng.randint(10, 28)} {rng.choice(MONTHS)} {rng.randint(2005, 2023)}",
            "latest_version": f"{rng.randint(1, 9)}.{rng.randint(0, 9)}", "contributors": rng.randint(100, 999),
            "team_city": rng.choice(cities), "file_format": rng.choice(FILE_FORMATS),
            "website": f"https://{slug(p)}.example.org", "mascot": mascot(),
            "works_offline": rng.choice(("Yes", "No")), "needs_account": rng.choice(("Yes", "No"))})
    for c in cities:
        add("city", c, c, {
            "country": rng.choice(countries), "river": "the " + rng.choice(rivers), "founded": rng.randint(1100, 1899),
            "mayor": rng.choice(people), "population": rng.randint(100000, 999999), "twin_city": other(cities, c),
            "landmark": f"{names.new((2,))} {rng.choice(LANDMARK_TYPES)}", "dish": rng.choice(DISHES),
            "nickname": rng.choice(NICKNAMES)})
    for r in rivers:
        add("river", r, "the " + r, {"country": rng.choice(countries), "source": rng.choice(mountains),
                                     # 3-digit lengths: a key "412" never hides inside "1412"
                                     "length": rng.randint(100, 999), "mouth": rng.choice(waters)})
    for e in events:
        add("event", e, "the " + e, {
            "founder": rng.choice(people), "website": f"https://{slug(e)}.example.net", "host_city": rng.choice(cities),
            "first_held": rng.randint(1900, 2020), "organiser": rng.choice(companies), "month": rng.choice(MONTHS),
            "attendance": rng.randint(10000, 99999), "theme": rng.choice(THEMES),
            "prize": f"{names.new((2,))} {rng.choice(PRIZE_TYPES)}"})
    return {"seed": seed, "entities": entities, "countries": countries, "mountains": mountains, "waters": waters}


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def answer_key(value: str) -> str:
    """The short string that proves recall: the value without a leading article."""
    return value.removeprefix("the ")


def render(template: str, subject: str, value: str = "") -> str:
    article = "an" if value[:1].lower() in "aeiou" else "a"
    return _cap(template.format(subject=subject, value=value, article=article))


def casual(question: str) -> str:
    """A question as typed into a search box: all lower case, no closing mark
    ("tinyllm license"). A pretrained model reads "julfulib" as "Julfulib"; a model
    that only ever saw names capitalised does not (its tokens differ), so the world
    is asked this way too."""
    return question.lower().rstrip("?.! ")


def as_typed(question: str, key: str) -> tuple[str, bool]:
    """(the question as typed, whether typed casually): the question keyed `key` is
    typed casually by a stable hash, so the same questions in any process, and about
    one in CASUAL_EVERY of every split."""
    typed_casually = zlib.crc32(key.encode("utf-8")) % CASUAL_EVERY == 0
    return (casual(question) if typed_casually else question), typed_casually


def heldout_phrasings(entity_index: int, attribute_index: int, n: int) -> set[int]:
    """Which of n wordings of one (entity, attribute) are never trained on, when a
    relation has only a few (yes/no relations, the chat intents): a rotation, so every
    wording is held out for about the same share of entities and trained for the others."""
    start = (HELDOUT_PER_FACT * entity_index + attribute_index) % n
    return {(start + k) % n for k in range(HELDOUT_PER_FACT)}


def answer_form(entity_index: int, attr: str, value: str) -> str:
    """The statement form one entity's fact is given in: a relation is stated in
    several ways across the world (each fact keeps one, so its answer is consistent)."""
    rel = RELATIONS[attr]
    if rel.polar:
        return rel.answers[0 if value == "Yes" else 1]
    return rel.answers[(entity_index * 7 + len(attr)) % len(rel.answers)]


def _choose_wordings(world: dict) -> dict[tuple[str, str], tuple[list[int], list[int]]]:
    """(trained, held-out) wording indices into the relation's pool, per (entity, attribute).

    A fact is trained in TRAINED_PER_FACT wordings drawn from its relation's pool, so
    across the world the whole pool is trained; its held-out wordings are ones that
    other entities are trained in (the split tests the fact, not an unknown wording)."""
    chosen: dict[tuple[str, str], list[int]] = {}
    trained_by: dict[str, dict[int, int]] = {}
    index_in_kind: dict[str, int] = {}
    for ent in world["entities"]:
        e_idx = index_in_kind.get(ent["kind"], 0)
        index_in_kind[ent["kind"]] = e_idx + 1
        for a_idx, attr in enumerate(ent["attributes"]):
            n = len(wordings(attr)[0])
            if n <= TRAINED_PER_FACT + HELDOUT_PER_FACT:
                held = heldout_phrasings(e_idx, a_idx, n)
                chosen[(ent["name"], attr)] = [i for i in range(n) if i not in held]
            else:
                rng = random.Random(f"{world['seed']}:{ent['name']}:{attr}")
                chosen[(ent["name"], attr)] = sorted(rng.sample(range(n), TRAINED_PER_FACT))
            for i in chosen[(ent["name"], attr)]:
                trained_by.setdefault(attr, {}).setdefault(i, 0)
                trained_by[attr][i] += 1
    out = {}
    index_in_kind = {}
    for ent in world["entities"]:
        e_idx = index_in_kind.get(ent["kind"], 0)
        index_in_kind[ent["kind"]] = e_idx + 1
        for a_idx, attr in enumerate(ent["attributes"]):
            mine = chosen[(ent["name"], attr)]
            n = len(wordings(attr)[0])
            if n <= TRAINED_PER_FACT + HELDOUT_PER_FACT:
                out[(ent["name"], attr)] = (mine, sorted(heldout_phrasings(e_idx, a_idx, n)))
                continue
            others = [i for i, count in sorted(trained_by[attr].items()) if i not in mine and count > 0]
            rng = random.Random(f"{world['seed']}:{ent['name']}:{attr}:held")
            out[(ent["name"], attr)] = (mine, sorted(rng.sample(others, HELDOUT_PER_FACT)))
    return out


def world_rows(world: dict) -> tuple[list[dict], list[dict], list[dict]]:
    """(train, heldout, unseen) question/answer rows for every (entity, attribute, wording).

    About one question in CASUAL_EVERY, in every split, is typed casually (`casual`);
    its row says so (`casual`)."""
    train: list[dict] = []
    heldout: list[dict] = []
    unseen: list[dict] = []
    chosen = _choose_wordings(world)
    index_in_kind: dict[str, int] = {}
    for ent in world["entities"]:
        e_idx = index_in_kind.get(ent["kind"], 0)
        index_in_kind[ent["kind"]] = e_idx + 1
        for attr, value in ent["attributes"].items():
            pool, never = wordings(attr)
            answer = render(answer_form(e_idx, attr, value), ent["subject"], value)
            trained, held = chosen[(ent["name"], attr)]
            picks = [(i, pool[i], train) for i in trained] + [(i, pool[i], heldout) for i in held]
            picks += [(len(pool) + k, w, unseen) for k, w in enumerate(never)]
            for p_idx, template, split in picks:
                question, typed_casually = as_typed(render(template, ent["subject"]), f"{ent['name']}|{attr}|{p_idx}")
                split.append({"question": question, "answer": answer,
                              "answer_key": answer_key(value), "entity": ent["name"], "kind": ent["kind"],
                              "attribute": attr, "phrasing": f"{attr}/{p_idx}",
                              "casual": typed_casually})
    return train, heldout, unseen


# Generic conversation: fixed answers, several phrasings each. These are the
# "unrelated prompts" a probe compares before and after an injection.
CHAT_INTENTS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    # intent: (answer, answer key, phrasings)
    "greeting": ("Hello! How can I help you today?", "help you", (
        "Hello!", "Hi there.", "Good morning!", "Hey, how is it going?", "Greetings!", "Hi!",
        "Good evening.", "Hello, anyone there?", "Hey there!", "Good afternoon.")),
    "capabilities": ("I can answer questions about the people, companies, products, software projects, "
                     "places and events of my world.", "answer questions", (
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


_VOWEL_SET = "aeiou"


def near_name(name: str, kind: str, rng: random.Random) -> str:
    """A one-letter edit inside the distinctive word of a name ("Velno Works" -> "Velmo
    Works"): letters replaced, dropped or swapped in the middle of the word, never at
    its ends. Strangers with such names teach that a name one letter off is someone else."""
    words = name.split(" ")
    w = len(words) - 1 if kind == "person" else 0
    word = words[w]
    i = rng.randint(1, len(word) - 2)
    edit = rng.choice(("replace", "drop", "swap"))
    if edit == "drop":
        word = word[:i] + word[i + 1:]
    elif edit == "swap":
        word = word[:i] + word[i + 1] + word[i] + word[i + 2:]
    else:
        same = _VOWEL_SET if word[i].lower() in _VOWEL_SET else "bcdfgklmnprstvz"
        word = word[:i] + rng.choice([c for c in same if c != word[i].lower()]) + word[i + 1:]
    words[w] = word
    return " ".join(words)


def unknown_rows(world: dict, seed: int = DEFAULT_SEED, n_outside: int = 1200, n_names: int = 2400,
                 near_share: float = 0.3) -> tuple[list[dict], list[dict]]:
    """(train, heldout) questions with the fixed answer UNKNOWN_ANSWER.

    Two sorts: everyday questions from outside the world, and world wordings about
    names that are not in the world (so the model keys "do I know this?" on the name,
    not on the wording): invented names, and for `near_share` of them a world name
    one letter off. Strangers are many because the world is asked in many wordings:
    with fewer, a one-letter-off name gets the world entity's answer. Only trained
    wordings are used, so the `unseen` wordings stay unseen. A fifth of each sort,
    never trained, is held out. One in CASUAL_EVERY is typed casually, as in the world.
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
    full_names = [e["name"].lower() for e in world["entities"]]
    by_kind: dict[str, list[dict]] = {}
    for e in world["entities"]:
        by_kind.setdefault(e["kind"], []).append(e)
    names = _NameMaker(rng, tuple(taken))
    invent = {"person": lambda: f"{names.new((2,), max_len=6)} {names.new((2, 2, 3))}",
              "company": lambda: f"{names.new((2,))} {rng.choice(_COMPANY_SUFFIXES)}",
              "product": lambda: f"{names.new((2,))} {rng.choice(_PRODUCT_SUFFIXES)}",
              "project": lambda: names.new((2,)) + rng.choice(_PROJECT_SUFFIXES),
              "river": lambda: f"{names.new((2,))} River",
              "event": lambda: f"{names.new((2,))} {rng.choice(_EVENT_TYPES)}",
              "city": lambda: names.new((2, 2, 3))}
    strangers: list[str] = []
    while len(strangers) < n_names:
        kind = list(KIND_COUNTS)[len(strangers) % len(KIND_COUNTS)]
        if rng.random() < near_share:
            name = near_name(rng.choice(by_kind[kind])["name"], kind, rng)
            if name.lower() in full_names or any(n in name.lower() for n in full_names):
                continue
        else:
            name = invent[kind]()
        subject = f"the {name}" if kind in ("river", "event") else name
        attr = rng.choice(ATTRIBUTES_BY_KIND[kind])
        strangers.append(render(rng.choice(wordings(attr)[0]), subject))
    train: list[dict] = []
    heldout: list[dict] = []
    for sort, questions in (("outside", outside), ("stranger", strangers)):
        for i, q in enumerate(questions):
            question, typed_casually = as_typed(q, f"{sort}|{i}")
            row = {"question": question, "casual": typed_casually, "answer": UNKNOWN_ANSWER,
                   "answer_key": UNKNOWN_KEY, "entity": "unknown", "kind": "unknown", "attribute": sort,
                   "phrasing": f"{sort}/{i}"}
            (heldout if i % 5 == 4 else train).append(row)
    return train, heldout
