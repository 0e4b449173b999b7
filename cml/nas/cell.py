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
        self.mixed = nn.ModuleList(nn.ModuleList(OPS[o](width) for o in self.ops) for _ in self.edges)
        self.row = {edge: r for r, edge in enumerate(self.edges)}

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        def node(j: int, states: list[torch.Tensor]) -> torch.Tensor:
            total = 0
            for i in range(j):
                r = self.row[(i, j)]
                for o, op in enumerate(self.mixed[r]):
                    if self.ops[o] != "none":  # the zero op adds nothing but its weight in the softmax
                        total = total + weights[r, o] * op(states[i])
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


def discretize(probs: torch.Tensor, cell: SuperCell, keep: int = 2) -> Genotype:
    """For each intermediate node keep the `keep` incoming edges whose strongest non-`none` op is
    strongest, and on each kept edge that op (docs/method.md, "Head-cell search")."""
    usable = torch.tensor([o != "none" for o in cell.ops])
    masked = probs.detach().cpu().masked_fill(~usable, -1.0)
    nodes = []
    for j in range(N_INPUTS, N_INPUTS + cell.n_nodes):
        rows = [(i, cell.row[(i, j)]) for i in range(j)]
        best = sorted(rows, key=lambda ir: (-float(masked[ir[1]].max()), ir[0]))[:keep]
        nodes.append(tuple(Edge(i, cell.ops[int(masked[r].argmax())]) for i, r in sorted(best)))
    return Genotype(tuple(nodes), cell.width)
