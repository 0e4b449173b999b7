"""The built-in synthetic dataset: deterministic, offline, typed.

Twenty relations over nine entity types. Several relations share their domain and range types
(born_in / died_in / lives_in are all person -> city), so they are confusable in the way real
relations are, and the type-based relation similarity of the curriculum has something to find.
Each relation has its own templates plus one template shared by every relation of its type
signature, which puts a little irreducible ambiguity in the data.
"""

from __future__ import annotations

import random

from cml.data.records import RelationDataset, RelationExample

FIRST = [
    "anna",
    "ben",
    "carla",
    "david",
    "elena",
    "felix",
    "grace",
    "hugo",
    "irene",
    "jonas",
    "karen",
    "leo",
    "maria",
    "nils",
    "olga",
    "paul",
    "rosa",
    "sven",
    "tara",
    "victor",
]
LAST = [
    "adler",
    "berg",
    "costa",
    "dahl",
    "evans",
    "fischer",
    "garcia",
    "hansen",
    "ito",
    "jansen",
    "kowalski",
    "larsen",
    "moreau",
    "novak",
    "olsen",
    "petrov",
    "quinn",
    "rossi",
    "silva",
    "weber",
]
CITIES = [
    "oslo", "lyon", "porto", "turin", "graz", "bergen", "leeds", "ghent", "utrecht", "malmo",
    "krakow", "seville", "bremen", "lille", "aarhus", "brno", "split", "cork", "basel", "tampere",
]  # fmt: skip
ENTITIES: dict[str, list[str]] = {
    "person": [f"{f} {l}" for f in FIRST for l in LAST],
    "city": CITIES,
    "country": [
        "norway",
        "france",
        "portugal",
        "italy",
        "austria",
        "england",
        "belgium",
        "netherlands",
        "sweden",
        "poland",
        "spain",
        "germany",
        "denmark",
        "czechia",
        "croatia",
        "ireland",
        "switzerland",
        "finland",
    ],
    "company": [
        f"{a} {b}"
        for a in ["nordic", "atlas", "vertex", "orion", "delta", "summit", "apex", "lumen"]
        for b in ["systems", "motors", "labs", "foods", "energy", "media"]
    ],
    "university": [f"university of {c}" for c in CITIES[:12]],
    "work": [
        f"the {a} {b}"
        for a in ["silent", "hidden", "last", "broken", "golden", "distant", "quiet", "winter"]
        for b in ["river", "garden", "letter", "harbour", "mirror", "road"]
    ],
    "date": [str(y) for y in range(1901, 2021)],
    "language": [
        "norwegian",
        "french",
        "portuguese",
        "italian",
        "german",
        "english",
        "dutch",
        "swedish",
        "polish",
        "spanish",
        "danish",
        "czech",
        "croatian",
        "irish",
        "finnish",
    ],
    "team": [
        f"{c} {s}"
        for c in ["oslo", "lyon", "porto", "turin", "graz", "bergen", "leeds", "ghent"]
        for s in ["united", "rovers", "athletic"]
    ],
}
# relation: (head type, tail type, own templates)
RELATIONS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "born_in": (
        "person",
        "city",
        ("{h} was born in {t} .", "{h} , a native of {t} , grew up there .", "born in {t} , {h} moved abroad later ."),
    ),
    "died_in": (
        "person",
        "city",
        ("{h} died in {t} .", "{h} passed away at home in {t} .", "in {t} , {h} spent the final days before death ."),
    ),
    "lives_in": (
        "person",
        "city",
        ("{h} lives in {t} .", "{h} currently resides in {t} .", "these days {h} makes a home in {t} ."),
    ),
    "citizen_of": (
        "person",
        "country",
        ("{h} is a citizen of {t} .", "{h} holds a passport from {t} .", "{h} became a national of {t} ."),
    ),
    "spouse": (
        "person",
        "person",
        ("{h} is married to {t} .", "{h} wed {t} in a small ceremony .", "{h} and husband or wife {t} attended ."),
    ),
    "parent_of": (
        "person",
        "person",
        (
            "{h} is the mother or father of {t} .",
            "{h} raised a child named {t} .",
            "{t} , son or daughter of {h} , spoke .",
        ),
    ),
    "sibling_of": (
        "person",
        "person",
        (
            "{h} is the brother or sister of {t} .",
            "{h} grew up with sibling {t} .",
            "{h} and {t} share the same parents .",
        ),
    ),
    "works_for": (
        "person",
        "company",
        ("{h} works for {t} .", "{h} is employed at {t} .", "{h} joined {t} as an engineer ."),
    ),
    "founded": (
        "person",
        "company",
        ("{h} founded {t} .", "{t} was started by {h} .", "{h} established {t} from a garage ."),
    ),
    "educated_at": (
        "person",
        "university",
        ("{h} studied at {t} .", "{h} graduated from {t} .", "{h} earned a degree at {t} ."),
    ),
    "headquartered_in": (
        "company",
        "city",
        ("{h} is headquartered in {t} .", "{h} has its main office in {t} .", "the head office of {h} is in {t} ."),
    ),
    "capital_of": (
        "city",
        "country",
        (
            "{h} is the capital of {t} .",
            "{h} , seat of the government of {t} , grew .",
            "the capital city of {t} is {h} .",
        ),
    ),
    "located_in": (
        "city",
        "country",
        ("{h} is a city in {t} .", "{h} lies in the north of {t} .", "{h} is one of the towns of {t} ."),
    ),
    "author_of": ("person", "work", ("{h} wrote {t} .", "{t} is a novel by {h} .", "{h} is the author of {t} .")),
    "published_in": (
        "work",
        "date",
        ("{h} was published in {t} .", "{h} first appeared in print in {t} .", "in {t} the book {h} came out ."),
    ),
    "born_on": (
        "person",
        "date",
        ("{h} was born in the year {t} .", "{h} ( born {t} ) is known .", "{h} came into the world in {t} ."),
    ),
    "founded_in": (
        "company",
        "date",
        ("{h} was founded in {t} .", "{h} has been in business since {t} .", "{h} opened its doors in {t} ."),
    ),
    "speaks": ("person", "language", ("{h} speaks {t} .", "{h} is fluent in {t} .", "{h} talks to friends in {t} .")),
    "official_language": (
        "country",
        "language",
        (
            "the official language of {h} is {t} .",
            "{t} is spoken officially in {h} .",
            "in {h} the state language is {t} .",
        ),
    ),
    "plays_for": (
        "person",
        "team",
        ("{h} plays for {t} .", "{h} signed a contract with {t} .", "{h} scored a goal for {t} ."),
    ),
}
PREFIXES = (
    "",
    "",
    "",
    "according to the report , ",
    "as noted earlier , ",
    "in an interview last year it emerged that ",
    "historians agree that ",
)
SUFFIXES = ("", "", "", " , the newspaper said", " , according to local sources", " , which surprised few observers")


def _shared_template(head_type: str, tail_type: str) -> str:
    return f"the {head_type} {{h}} is linked to the {tail_type} {{t}} ."


def _sentence(
    rng: random.Random, template: str, head: str, tail: str, relation: str, head_type: str, tail_type: str
) -> RelationExample:
    text = rng.choice(PREFIXES) + template.removesuffix(" .") + rng.choice(SUFFIXES) + " ."
    tokens: list[str] = []
    spans = {}
    for word in text.split():
        if word in ("{h}", "{t}"):
            mention = (head if word == "{h}" else tail).split()
            spans[word] = (len(tokens), len(tokens) + len(mention))
            tokens += mention
        else:
            tokens.append(word)
    return RelationExample(
        tuple(tokens),
        spans["{h}"],
        spans["{t}"],
        relation,
        head_id=f"demo:{head_type}:{head}",
        tail_id=f"demo:{tail_type}:{tail}",
        head_type=head_type,
        tail_type=tail_type,
    )


def make_demo(n_train: int = 40, n_val: int = 10, n_test: int = 20, seed: int = 0) -> RelationDataset:
    """Generate the demo dataset; the same arguments always give the same examples."""
    rng = random.Random(seed)
    splits: tuple[list, list, list] = ([], [], [])
    for relation, (head_type, tail_type, own) in RELATIONS.items():
        templates = own + (_shared_template(head_type, tail_type),)
        for split, n in zip(splits, (n_train, n_val, n_test)):
            for _ in range(n):
                head = rng.choice(ENTITIES[head_type])
                tail = rng.choice([e for e in ENTITIES[tail_type] if e != head])
                split.append(_sentence(rng, rng.choice(templates), head, tail, relation, head_type, tail_type))
    return RelationDataset("demo", *splits, relations=list(RELATIONS), source="built-in")
