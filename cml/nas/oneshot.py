"""Single-path one-shot training of the supernet (SPOS, Guo et al. 2020): every step trains one
child cell with the shared weights, and a cell is then scored by its validation accuracy with
the weights it inherits. Two mitigations of the interference between children (Xu et al. 2022,
"Analyzing and mitigating interference in neural architecture search"):

- gradual modification: each child differs from the previous one in one edge (its source or
  its op), so that consecutive steps pull the shared weights in similar directions;
- alignment: a loss pulling the child's node states towards those of a shared teacher, here the
  supernet itself under the uniform mixing of every real op, detached.

Children are cells of the discretised space (`keep` inputs per node, no `none`), the same space
`discretize` cuts the DARTS supernet to, so the scores of both rank the same cells. As a search
(`--nas-method spos`), it follows `DartsSearch`'s interface; its final architecture is the best
of a fixed pool of random cells by validation accuracy with inherited weights (SPOS proper runs
an evolutionary search over that score; a fixed random pool keeps every check comparable).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from cml.nas.cell import SuperCell, one_hot_mixing
from cml.nas.genotype import N_INPUTS, Edge, Genotype
from cml.nas.supernet import Batches, Features, SearchModel, accuracy

SAMPLINGS = ("uniform", "gradual")
CANDIDATES = 100  # the pool the final architecture is chosen from, by default


def _pick(n: int, generator: torch.Generator) -> int:
    return int(torch.randint(n, (1,), generator=generator))


def random_cell(cell: SuperCell, keep: int, generator: torch.Generator) -> Genotype:
    """Uniform over the discretised space: each node's `keep` sources (distinct, or all of them
    where it has fewer) and one real op on each."""
    ops = cell.real_ops
    nodes = []
    for j in range(N_INPUTS, N_INPUTS + cell.n_nodes):
        sources = sorted(torch.randperm(j, generator=generator)[:keep].tolist())
        nodes.append(tuple(Edge(i, ops[_pick(len(ops), generator)]) for i in sources))
    return Genotype(tuple(nodes), cell.width)


def neighbour(genotype: Genotype, cell: SuperCell, generator: torch.Generator) -> Genotype:
    """`genotype` with one kept edge drawn again: a new op on it, or (where the node has a free
    earlier node) a new source with any op; never the same cell."""
    ops = cell.real_ops
    k = _pick(len(genotype.nodes), generator)
    node, e = list(genotype.nodes[k]), _pick(len(genotype.nodes[k]), generator)
    free = sorted(set(range(k + N_INPUTS)) - {edge.source for edge in node})
    if free and _pick(2, generator):
        node[e] = Edge(free[_pick(len(free), generator)], ops[_pick(len(ops), generator)])
    else:
        node[e] = Edge(node[e].source, [o for o in ops if o != node[e].op][_pick(len(ops) - 1, generator)])
    nodes = list(genotype.nodes)
    nodes[k] = tuple(sorted(node, key=lambda edge: edge.source))
    return Genotype(tuple(nodes), genotype.width)


def differing_ops(a: Genotype, b: Genotype) -> int:
    """How many (node, source, op) choices of `a` that `b` lacks: the distance between two
    children that the interference diagnostic plots against."""

    def choices(g: Genotype) -> set[tuple[int, int, str]]:
        return {(k, e.source, e.op) for k, node in enumerate(g.nodes) for e in node}

    return len(choices(a) - choices(b))


@dataclass
class OneShot:
    """Trains `model`'s supernet one child at a time (SGD as the DARTS search's weights) and
    scores cells with the weights they inherit."""

    model: SearchModel
    keep: int = 2
    sampling: str = "uniform"
    alignment: float = 0.0  # weight of the node-state alignment loss
    lr: float = 0.05
    seed: int = 0
    candidates: int = CANDIDATES
    val: Features | None = None  # what the pool is scored on

    def __post_init__(self) -> None:
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"unknown sampling {self.sampling!r}: use one of {', '.join(SAMPLINGS)}")
        self.generator = torch.Generator().manual_seed(self.seed)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=self.lr, momentum=0.9, weight_decay=3e-4)
        cell = self.model.cell
        real = torch.tensor([o in cell.real_ops for o in cell.ops], dtype=torch.float)
        self.uniform = (real / real.sum()).expand(len(cell.edges), -1)  # the teacher's mixing
        self.current: Genotype | None = None
        pool_draws = torch.Generator().manual_seed(self.seed + 1)  # apart from the children's
        self.pool = [random_cell(cell, self.keep, pool_draws) for _ in range(self.candidates)]
        self.trained = torch.zeros(len(cell.edges), len(cell.ops))  # steps each op trained on each edge
        self.t, self._best = 0, None

    def next_child(self) -> Genotype:
        cell = self.model.cell
        if self.current is None or self.sampling == "uniform":
            self.current = random_cell(cell, self.keep, self.generator)
        else:
            self.current = neighbour(self.current, cell, self.generator)
        return self.current

    def step(self, train: Batches, val: Batches | None = None) -> float:
        """One weight step on the next child; returns its loss (cross-entropy plus alignment).
        `val` is unused: the weights are all a one-shot search trains."""
        return self.weight_step(next(train))

    def weight_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> float:
        x, y = batch
        child = one_hot_mixing(self.next_child(), self.model.cell)
        self.trained += child.cpu()
        self.t += 1
        self.model.train()
        states = self.model.cell(x, child, sparse=True)
        loss = nn.functional.cross_entropy(self.model.classifier(states), y)
        if self.alignment:
            with torch.no_grad():
                teacher = self.model.cell(x, self.uniform.to(x.device))
            loss = loss + self.alignment * nn.functional.mse_loss(states, teacher)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
        self.optimizer.step()
        return float(loss.detach())

    def score(self, genotype: Genotype, features: Features) -> float:
        """Validation accuracy of `genotype`'s cell with the supernet's weights."""
        self.model.eval()
        mixing = one_hot_mixing(genotype, self.model.cell)
        return accuracy(lambda x: self.model(x, mixing, sparse=True), features)

    def get_final_architecture(self) -> Genotype:
        """The pool's best cell on `val` with the weights as they are now (the first, on ties)."""
        if self.val is None:
            raise ValueError("OneShot needs `val` features to choose its final architecture")
        if self._best is None or self._best[0] != self.t:
            scores = [self.score(c, self.val) for c in self.pool]
            self._best = (self.t, self.pool[scores.index(max(scores))])
        return self._best[1]

    def check(self, features: Features) -> dict[str, float]:
        """What the history records: the supernet as trained, which is a uniformly drawn child, in
        expectation (the pool's mean accuracy), and the cell it is cut to now."""
        scores = [self.score(c, features) for c in self.pool]
        return {
            "val_accuracy": sum(scores) / len(scores),
            "val_accuracy_discretised": self.score(self.get_final_architecture(), features),
        }

    finished = False  # a one-shot search runs all its steps

    def probabilities(self) -> torch.Tensor:
        """The share of the steps each op trained on each edge, [n_edges, n_ops]."""
        return self.trained / max(self.t, 1)
