"""Candidate operations of a head cell (docs/method.md, "Head-cell search"): each maps width -> width.

`none` is the zero op: in the relaxed supernet it lets an edge fade out; the discretised cell
never keeps it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class Zero(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


class GatedLinear(nn.Module):
    """GLU: a linear value gated by a sigmoid of a second linear map."""

    def __init__(self, width: int):
        super().__init__()
        self.proj = nn.Linear(width, 2 * width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.glu(self.proj(x), dim=-1)


OPS: dict[str, Callable[[int], nn.Module]] = {
    "none": lambda w: Zero(),
    "skip": lambda w: nn.Identity(),
    "linear": lambda w: nn.Linear(w, w),
    "linear_relu": lambda w: nn.Sequential(nn.Linear(w, w), nn.ReLU()),
    "linear_tanh": lambda w: nn.Sequential(nn.Linear(w, w), nn.Tanh()),
    "linear_gelu": lambda w: nn.Sequential(nn.Linear(w, w), nn.GELU()),
    "glu": GatedLinear,
    "layernorm_linear": lambda w: nn.Sequential(nn.LayerNorm(w), nn.Linear(w, w)),
}
OP_NAMES: tuple[str, ...] = tuple(OPS)
