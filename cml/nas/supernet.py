"""What every head-search algorithm shares: the frozen features it trains on, the supernet (a
`SuperCell` and a classifier) whose weights it trains, and how a mixing of it is scored."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from cml.nas.cell import SuperCell


@dataclass
class Features:
    """Frozen-encoder entity states of one split of a task, with labels 0..C-1."""

    x: torch.Tensor
    y: torch.Tensor

    def epoch(self, batch_size: int, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for chunk in torch.randperm(len(self.y), generator=generator).split(batch_size):
            yield self.x[chunk], self.y[chunk]

    def stream(self, batch_size: int, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            yield from self.epoch(batch_size, generator)


Batches = Iterator[tuple[torch.Tensor, torch.Tensor]]


class SearchModel(nn.Module):
    """The supernet cell and a classifier: every weight a search trains, and nothing else."""

    def __init__(self, in_dim: int, n_classes: int, width: int = 128, nodes: int = 4):
        super().__init__()
        self.cell = SuperCell(in_dim, width, nodes)
        self.classifier = nn.Linear(self.cell.out_dim, n_classes)

    def forward(self, x: torch.Tensor, mixing: torch.Tensor, sparse: bool = False) -> torch.Tensor:
        return self.classifier(self.cell(x, mixing, sparse))


def accuracy(logits_of, features: Features, batch_size: int = 1024) -> float:
    with torch.no_grad():
        logits = torch.cat([logits_of(x) for x in features.x.split(batch_size)])
    return float((logits.argmax(-1) == features.y).float().mean())
