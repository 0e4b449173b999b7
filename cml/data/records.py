"""The relation example and the dataset that holds the train/val/test splits."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cml.errors import CMLInputError

Span = tuple[int, int]  # [start, end) token positions
MARKERS = ("[E11]", "[E12]", "[E21]", "[E22]")  # before and after the head, before and after the tail
# Relations that hold in both directions (r(a, b) implies r(b, a)): a sentence of one with its head
# and tail swapped is still that relation. FewRel's are the Wikidata properties with the symmetric
# constraint (Q18647518) among its 80 train relations (spouse, sibling, said to be the same as) and
# two more of the full inventory (shares border with, diplomatic relation); TACRED's and the demo's
# by their names.
SYMMETRIC_RELATIONS = frozenset(
    {"P26", "P3373", "P460", "P47", "P530", "per:spouse", "per:siblings", "per:other_family", "spouse", "sibling_of"}
)


@dataclass(frozen=True)
class RelationExample:
    """One sentence with a marked head and tail entity, labelled with one relation."""

    tokens: tuple[str, ...]
    head: Span
    tail: Span
    relation: str
    head_id: str | None = None
    tail_id: str | None = None
    head_type: str | None = None
    tail_type: str | None = None

    def check(self, source: str | Path, where: str) -> None:
        """Raise a one-line error naming `source` and `where` if a span is empty or out of range."""
        n = len(self.tokens)
        if n == 0:
            raise CMLInputError(f"{where}: sentence has no tokens", source)
        for name, (start, end) in (("head", self.head), ("tail", self.tail)):
            if end <= start:
                raise CMLInputError(f"{where}: {name} entity span [{start}, {end}) is empty", source)
            if start < 0 or end > n:
                raise CMLInputError(
                    f"{where}: {name} entity span [{start}, {end}) is out of range for {n} tokens", source
                )

    @property
    def head_text(self) -> str:
        return " ".join(self.tokens[self.head[0] : self.head[1]])

    @property
    def tail_text(self) -> str:
        return " ".join(self.tokens[self.tail[0] : self.tail[1]])


@dataclass
class RelationDataset:
    """A dataset cut into splits; `relations` fixes the label index used everywhere."""

    name: str
    train: list[RelationExample]
    val: list[RelationExample]
    test: list[RelationExample]
    relations: list[str]
    relation_names: dict[str, str] = field(default_factory=dict)
    task_orders: list[list[list[str]]] | None = None
    source: str = ""

    @property
    def label_of(self) -> dict[str, int]:
        return {r: i for i, r in enumerate(self.relations)}

    @property
    def symmetric(self) -> frozenset[str]:
        """Its relations that hold in both directions (`SYMMETRIC_RELATIONS`)."""
        return SYMMETRIC_RELATIONS & frozenset(self.relations)

    def display_name(self, relation: str) -> str:
        name = self.relation_names.get(relation)
        return f"{relation} {name}" if name and name != relation else relation

    def counts(self) -> tuple[int, int, int]:
        return len(self.train), len(self.val), len(self.test)

    def cap_train(self, max_per_relation: int | None) -> RelationDataset:
        """Keep at most `max_per_relation` training examples per relation (the first ones)."""
        if max_per_relation is None:
            return self
        kept: dict[str, int] = {}
        train = []
        for ex in self.train:
            if kept.get(ex.relation, 0) < max_per_relation:
                kept[ex.relation] = kept.get(ex.relation, 0) + 1
                train.append(ex)
        return RelationDataset(
            self.name, train, self.val, self.test, self.relations, self.relation_names, self.task_orders, self.source
        )
