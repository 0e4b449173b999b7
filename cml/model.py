"""Encoder + head + classifier over every relation of the dataset, masked to the relations seen.

Masking the logits of relations not yet seen is the class-incremental classifier that grows as
relations arrive: an unseen relation gets probability zero and so no gradient, exactly as if its
row did not exist, while parameter shapes stay fixed for checkpoints and meta steps.
"""

from __future__ import annotations

import torch
from torch import nn

from cml.config import CHOICES
from cml.encoder import RelationEncoder
from cml.errors import CMLInputError


def make_head(kind: str, in_dim: int, out_dim: int) -> nn.Module:
    if kind == "linear":
        return nn.Linear(in_dim, out_dim)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Dropout(0.1), nn.Linear(out_dim, out_dim))
    raise CMLInputError(f"unknown head {kind!r}: use one of {', '.join(CHOICES['head'])}")


class RelationModel(nn.Module):
    def __init__(self, encoder: RelationEncoder, n_relations: int, head: str = "linear"):
        super().__init__()
        self.encoder = encoder
        width = encoder.backbone.config.hidden_size
        self.head = make_head(head, encoder.out_dim, width)
        self.classifier = nn.Linear(width, n_relations)

    def features(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The relation representation the memory is selected on."""
        return self.head(self.encoder(**batch))

    def forward(self, batch: dict[str, torch.Tensor], seen: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(self.features(batch))
        return logits.masked_fill(~seen, torch.finfo(logits.dtype).min)
