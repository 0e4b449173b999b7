"""Encoder + head + classifier over every relation of the dataset, masked to the relations seen.

Masking the logits of relations not yet seen is the class-incremental classifier that grows as
relations arrive: an unseen relation gets probability zero and so no gradient, exactly as if its
row did not exist, while parameter shapes stay fixed for checkpoints and meta steps.
"""

from __future__ import annotations

import torch
from torch import nn

from cml.encoder import RelationEncoder


def make_head(kind: str, in_dim: int, width: int) -> nn.Module:
    """The head on the entity states: `linear`, `mlp`, or the cell of a genotype file from the
    head search. Every head says its output size in `out_dim`."""
    if kind == "linear":
        head = nn.Linear(in_dim, width)
    elif kind == "mlp":
        head = nn.Sequential(nn.Linear(in_dim, width), nn.GELU(), nn.Dropout(0.1), nn.Linear(width, width))
    else:
        from cml.nas.cell import DiscreteCell
        from cml.nas.genotype import Genotype

        return DiscreteCell(Genotype.load(kind), in_dim)
    head.out_dim = width
    return head


class RelationModel(nn.Module):
    def __init__(self, encoder: RelationEncoder, n_relations: int, head: str = "linear"):
        super().__init__()
        self.encoder = encoder
        self.head = make_head(head, encoder.out_dim, encoder.backbone.config.hidden_size)
        self.classifier = nn.Linear(self.head.out_dim, n_relations)

    def features(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The relation representation the memory is selected on."""
        return self.head(self.encoder(**batch))

    def forward(self, batch: dict[str, torch.Tensor], seen: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(self.features(batch))
        return logits.masked_fill(~seen, torch.finfo(logits.dtype).min)
