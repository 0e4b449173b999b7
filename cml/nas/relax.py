"""Relaxations: how architecture parameters alpha become the mixing weights of each edge.

- `softmax`: softmax(alpha), the original DARTS.
- `gumbel`: softmax((alpha + g) / tau_t), g Gumbel noise, tau_t annealed linearly from tau0 to
  tau_min (GDAS-style exploration that ends close to one op per edge).
- `sparse`: the small-temperature noisy softmax, softmax((alpha + n) / tau_t) with Gaussian noise n
  and tau_t = tau0 (tau_min / tau0)^(t / T): as tau_t falls the supernet computes nearly the
  discrete cell it will be cut to, which narrows the gap between search and final cell.

`mixing(step, shape)` draws the noise once and returns a function of alpha: every loss a hypergradient
evaluates within one step must see the same sampled relaxation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

RELAXATIONS = ("softmax", "gumbel", "sparse")


@dataclass
class Relaxation:
    name: str = "softmax"
    total_steps: int = 1
    tau0: float = 1.0
    tau_min: float = 0.05
    noise: float = 0.3  # std of the Gaussian noise of `sparse`
    seed: int = 0

    def __post_init__(self) -> None:
        if self.name not in RELAXATIONS:
            raise ValueError(f"unknown relaxation {self.name!r}: use one of {', '.join(RELAXATIONS)}")
        self.generator = torch.Generator().manual_seed(self.seed)

    def temperature(self, step: int) -> float:
        t = min(step / max(self.total_steps - 1, 1), 1.0)
        if self.name == "gumbel":
            return self.tau0 + (self.tau_min - self.tau0) * t
        if self.name == "sparse":
            return self.tau0 * (self.tau_min / self.tau0) ** t
        return 1.0

    def mixing(self, step: int, shape: torch.Size, noisy: bool = True) -> Callable[[torch.Tensor], torch.Tensor]:
        """The weights function of `step`; `noisy=False` gives its noise-free mean-field version
        (what the supernet is validated with)."""
        tau = self.temperature(step)
        if self.name == "softmax" or not noisy:
            return lambda alpha: (alpha / tau).softmax(-1)
        if self.name == "gumbel":
            u = torch.rand(shape, generator=self.generator).clamp(1e-9, 1 - 1e-9)
            noise = -torch.log(-torch.log(u))
        else:
            noise = self.noise * torch.randn(shape, generator=self.generator)
        return lambda alpha: ((alpha + noise.to(alpha.device)) / tau).softmax(-1)
