"""Encoder -> relation representation h -> linear classifier, and h -> contrastive projection z.

    entity states [E11; E21] (2H) --head--> h (H) --classifier--> logits over every relation
                                            h --projection--> z (64, unit length)

h is what memory is selected on and what the prototypes of the linear-space methods live in; z
is what the contrastive losses (CRL, CEAR) and the nearest-prototype part of the ensemble use.

The classifier has a row for every relation of the dataset, masked to the relations seen so far:
an unseen relation gets probability zero and so no gradient, exactly as if its row did not exist,
while parameter shapes stay fixed for checkpoints and meta steps. It has no bias, as in CEAR and
RP-CRE, so nothing but the features favours the newest relations.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from cml.encoder import RelationEncoder

Z_DIM = 64  # width of the contrastive projection (CRL, CEAR)


def make_head(kind: str, in_dim: int, width: int) -> nn.Module:
    """The head from the entity states to h: `projection` (Linear-GELU-LayerNorm, the CRE default
    of CEAR and RP-CRE), `linear`, `mlp`, or the cell of a genotype file from the head search.
    Every head says its output size in `out_dim`."""
    if kind == "projection":
        head = nn.Sequential(nn.Linear(in_dim, width), nn.GELU(), nn.LayerNorm(width))
    elif kind == "linear":
        head = nn.Linear(in_dim, width)
    elif kind == "mlp":
        head = nn.Sequential(nn.Linear(in_dim, width), nn.GELU(), nn.Dropout(0.1), nn.Linear(width, width))
    else:
        from cml.nas.cell import DiscreteCell
        from cml.nas.genotype import Genotype

        return DiscreteCell(Genotype.load(kind), in_dim)
    head.out_dim = width
    return head


class Output(NamedTuple):
    h: torch.Tensor  # [B, H] relation representation
    z: torch.Tensor  # [B, Z_DIM] contrastive projection, unit length
    logits: torch.Tensor  # [B, R] linear classifier; relations not yet seen are masked to the dtype's minimum


class RelationModel(nn.Module):
    def __init__(self, encoder: RelationEncoder, n_relations: int, head: str = "projection"):
        super().__init__()
        self.encoder = encoder
        self.head = make_head(head, encoder.out_dim, encoder.backbone.config.hidden_size)
        width = self.head.out_dim
        self.projection = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, Z_DIM))
        self.classifier = nn.Linear(width, n_relations, bias=False)

    def reset_new_layers(self, seed: int) -> None:
        """Draw the layers the pretrained encoder lacks (head, projection, classifier) afresh from
        `seed`, consuming random numbers in construction order: a model built under
        `torch.manual_seed(seed)` gets the same weights. A run's seeds differ here and in training."""
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            for part in (self.head, self.projection, self.classifier):
                for module in part.modules():
                    if hasattr(module, "reset_parameters"):
                        module.reset_parameters()

    def features(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """h, the relation representation the classifier and the prototypes read."""
        return self.head(self.encoder(**batch))

    def forward(self, batch: dict[str, torch.Tensor], seen: torch.Tensor) -> Output:
        h = self.features(batch)
        z = nn.functional.normalize(self.projection(h).float(), dim=-1)
        logits = self.classifier(h)
        return Output(h, z, logits.masked_fill(~seen, torch.finfo(logits.dtype).min))

    def reset_classifier(self, generator: torch.Generator) -> None:
        """New random rows for every relation (CEAR re-creates its linear head every task)."""
        bound = 1 / self.classifier.in_features**0.5
        with torch.no_grad():
            weight = torch.empty(self.classifier.weight.shape).uniform_(-bound, bound, generator=generator)
            self.classifier.weight.copy_(weight)
