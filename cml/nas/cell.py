"""Head cells on the encoder's entity states: the relaxed supernet searched by DARTS and the
discrete cell built from a genotype. Both share one node structure (`Cell`), so a genotype trains
exactly the sub-graph the search scored.

The supernet holds only weights: the architecture parameters live in `ArchParameters`, and the
supernet is told the mixing weights of each edge at call time (NNI's one-shot split), so weights
and architecture get separate parameter groups and optimisers.
"""

from __future__ import annotations

import torch
from torch import nn

from cml.nas.genotype import N_INPUTS, Edge, Genotype
from cml.nas.ops import OP_NAMES, OPS


def cell_edges(n_nodes: int) -> list[tuple[int, int]]:
    """Every edge (i -> j) of a cell with `n_nodes` intermediate nodes, i < j, ordered by j then i."""
    return [(i, j) for j in range(N_INPUTS, N_INPUTS + n_nodes) for i in range(j)]


class Cell(nn.Module):
    """Projects the two entity states (the halves of the encoder output) to `width`; each
    intermediate node sums what its incoming edges give; the output concatenates the intermediate
    nodes."""

    def __init__(self, in_dim: int, width: int, n_nodes: int):
        super().__init__()
        self.inputs = nn.ModuleList([nn.Linear(in_dim // 2, width) for _ in range(N_INPUTS)])
        self.width, self.n_nodes = width, n_nodes
        self.out_dim = n_nodes * width

    def run(self, x: torch.Tensor, node) -> torch.Tensor:
        half = x.shape[-1] // 2
        states = [self.inputs[0](x[..., :half]), self.inputs[1](x[..., half:])]
        for j in range(N_INPUTS, N_INPUTS + self.n_nodes):
            states.append(node(j, states))
        return torch.cat(states[N_INPUTS:], dim=-1)


class SuperCell(Cell):
    """Every edge carries every candidate op; `forward(x, weights)` mixes them with `weights`
    ([n_edges, n_ops], rows in `cell_edges` order), e.g. a softmax of the architecture parameters."""

    def __init__(self, in_dim: int, width: int = 128, n_nodes: int = 4, ops: tuple[str, ...] = OP_NAMES):
        super().__init__(in_dim, width, n_nodes)
        self.ops, self.edges = tuple(ops), cell_edges(n_nodes)
        self.real_ops = tuple(o for o in self.ops if o != "none")  # what a discrete cell may keep
        self.mixed = nn.ModuleList(nn.ModuleList(OPS[o](width) for o in self.ops) for _ in self.edges)
        self.row = {edge: r for r, edge in enumerate(self.edges)}

    def forward(
        self, x: torch.Tensor, weights: torch.Tensor, sparse: bool = False, magnitudes: torch.Tensor | None = None
    ) -> torch.Tensor:
        """`sparse`: `weights` is a constant with zeros (a child cell's one-hot mixing), and the
        ops it zeroes are not run at all (a single path costs one op per kept edge).
        `magnitudes` ([n_edges, n_ops]) is filled with the root mean square of each op's weighted
        output: how much the op adds to its node, which the selective stop watches."""
        active = (weights != 0).tolist() if sparse else None

        def node(j: int, states: list[torch.Tensor]) -> torch.Tensor:
            total = 0
            for i in range(j):
                r = self.row[(i, j)]
                for o, op in enumerate(self.mixed[r]):
                    if self.ops[o] == "none" or (active is not None and not active[r][o]):
                        continue  # the zero op adds nothing but its weight in the softmax
                    out = weights[r, o] * op(states[i])
                    if magnitudes is not None:
                        magnitudes[r, o] = out.detach().pow(2).mean().sqrt()
                    total = total + out
            return total

        return self.run(x, node)


class DiscreteCell(Cell):
    """The cell a genotype names, trained from scratch as the continual learner's head."""

    def __init__(self, genotype: Genotype, in_dim: int):
        super().__init__(in_dim, genotype.width, len(genotype.nodes))
        self.genotype = genotype
        self.node_ops = nn.ModuleList(nn.ModuleList(OPS[e.op](genotype.width) for e in node) for node in genotype.nodes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        def node(j: int, states: list[torch.Tensor]) -> torch.Tensor:
            k = j - N_INPUTS
            return sum(op(states[e.source]) for e, op in zip(self.genotype.nodes[k], self.node_ops[k]))

        return self.run(x, node)


class ArchParameters(nn.Module):
    """alpha: one row of op logits per edge, kept apart from the supernet's weights."""

    def __init__(self, n_edges: int, n_ops: int, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.alpha = nn.Parameter(1e-3 * torch.randn(n_edges, n_ops, generator=generator))


DISCRETISATIONS = ("edges", "pairs", "nodewise")


def discretize(logits: torch.Tensor, cell: SuperCell, keep: int = 2, policy: str = "edges") -> Genotype:
    """The discrete cell of architecture logits (alpha / tau), `keep` inputs per intermediate node
    (fewer where a node has fewer incoming edges), after a policy of the LHD benchmark's
    (docs/method.md, "Head-cell search"); `none` is never kept:

    - `edges`: the `keep` incoming edges whose strongest op is strongest under the edge's own
      softmax, each with that op (DARTS);
    - `pairs`: the `keep` strongest (edge, op) pairs under each edge's softmax, so one edge may
      keep two ops;
    - `nodewise`: one softmax over all of a node's incoming (edge, op) pairs without `none`, then
      the `keep` edges with the strongest pair, each with its op: edges are ranked by their
      logits, not by how peaked their own softmax is.
    """
    usable = torch.tensor([o in cell.real_ops for o in cell.ops])
    logits = logits.detach().cpu()
    if policy == "nodewise":
        score = logits.masked_fill(~usable, float("-inf"))
    else:
        score = logits.softmax(-1).masked_fill(~usable, -1.0)
    nodes = []
    for j in range(N_INPUTS, N_INPUTS + cell.n_nodes):
        if policy == "pairs":
            pairs = [(i, o) for i in range(j) for o in range(len(cell.ops)) if usable[o]]
            best = sorted(pairs, key=lambda io: (-float(score[cell.row[(io[0], j)], io[1]]), io))[:keep]
            nodes.append(tuple(Edge(i, cell.ops[o]) for i, o in sorted(best)))
            continue
        rows = [(i, cell.row[(i, j)]) for i in range(j)]
        best = sorted(rows, key=lambda ir: (-float(score[ir[1]].max()), ir[0]))[:keep]
        nodes.append(tuple(Edge(i, cell.ops[int(score[r].argmax())]) for i, r in sorted(best)))
    return Genotype(tuple(nodes), cell.width)


def one_hot_mixing(genotype: Genotype, cell: SuperCell) -> torch.Tensor:
    """The mixing under which the supernet computes `genotype`'s cell with the supernet's own
    weights: 1 on each kept edge's op, 0 elsewhere."""
    mixing = torch.zeros(len(cell.edges), len(cell.ops), device=cell.inputs[0].weight.device)
    for k, node in enumerate(genotype.nodes):
        for edge in node:
            mixing[cell.row[(edge.source, k + N_INPUTS)], cell.ops.index(edge.op)] = 1.0
    return mixing
