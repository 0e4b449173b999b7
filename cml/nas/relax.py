"""Relaxations: how architecture parameters alpha become the mixing weights of each edge.

- `softmax`: softmax(alpha), the original DARTS.
- `snas`: soft Gumbel-softmax, softmax((alpha + g) / tau_t), g Gumbel noise, tau_t linear from
  1 to 0.05 (SNAS, Xie et al. 2019): a relaxed sample of one op per edge.
- `gdas`: the hard, straight-through Gumbel-softmax of GDAS (Dong & Yang 2019): the forward pass
  is the one-hot op of the sample, the backward pass the gradient of its soft version; tau_t
  linear from 10 to 0.1, GDAS's schedule.
- `sparse`: the small-temperature noisy softmax, softmax((alpha + n_t) / tau_t), tau_t = tau0
  (tau_min / tau0)^(t / T) from 1 to 0.05, with Gaussian noise whose std `noise` x tau_t falls
  with the temperature: on the logits it stays `noise`, so as tau_t falls the supernet computes
  nearly the discrete cell of argmax alpha (an unannealed std of 0.3 would put a std of 6 on the
  logits at tau 0.05 and train a random cell instead).
- `mixed`: mixed-sparsity training, the same noisy softmax with tau_t drawn every step from
  {tau0, tau_min} = {0.01, 0.001}, the smaller with probability t / T (so its share rises to 1).

`tau0` and `tau_min` left at None take the relaxation's published schedule. `mixing(step, shape)`
draws the noise once and returns a function of alpha: every loss a hypergradient evaluates
within one step must see the same sampled relaxation.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import torch

# name -> (tau0, tau_min, how tau goes from one to the other over the search)
SCHEDULES: dict[str, tuple[float, float, str]] = {
    "softmax": (1.0, 1.0, "constant"),
    "snas": (1.0, 0.05, "linear"),
    "gdas": (10.0, 0.1, "linear"),
    "sparse": (1.0, 0.05, "exponential"),
    "mixed": (0.01, 0.001, "drawn"),
}
RELAXATIONS = tuple(SCHEDULES)


@dataclass
class Relaxation:
    name: str = "softmax"
    total_steps: int = 1
    tau0: float | None = None
    tau_min: float | None = None
    noise: float = 0.3  # std of the Gaussian noise of `sparse` on the logits
    seed: int = 0

    def __post_init__(self) -> None:
        if self.name not in RELAXATIONS:
            raise ValueError(f"unknown relaxation {self.name!r}: use one of {', '.join(RELAXATIONS)}")
        tau0, tau_min, self.shape = SCHEDULES[self.name]
        self.tau0 = tau0 if self.tau0 is None else self.tau0
        self.tau_min = tau_min if self.tau_min is None else self.tau_min
        self.generator = torch.Generator().manual_seed(self.seed)

    def temperature(self, step: int) -> float:
        t = min(step / max(self.total_steps - 1, 1), 1.0)
        if self.shape == "linear":
            return self.tau0 + (self.tau_min - self.tau0) * t
        if self.shape == "exponential":
            return self.tau0 * (self.tau_min / self.tau0) ** t
        if self.shape == "drawn":  # the same draw whenever a step's temperature is asked for
            return self.tau_min if random.Random(f"{self.seed}/{step}").random() < t else self.tau0
        return self.tau0

    def mixing(
        self, step: int, shape: torch.Size, noisy: bool = True, generator: torch.Generator | None = None
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """The weights function of `step`, its noise drawn from `generator` (default: the
        search's own stream); `noisy=False` gives the noise-free version, softmax(alpha / tau)."""
        tau = self.temperature(step)
        if self.name == "softmax" or not noisy:
            return lambda alpha: (alpha / tau).softmax(-1)
        generator = self.generator if generator is None else generator
        if self.name in ("sparse", "mixed"):
            noise = self.noise * tau * torch.randn(shape, generator=generator)
            return lambda alpha: ((alpha + noise.to(alpha.device)) / tau).softmax(-1)
        u = torch.rand(shape, generator=generator).clamp(1e-9, 1 - 1e-9)
        gumbel = -torch.log(-torch.log(u))
        if self.name == "snas":
            return lambda alpha: ((alpha + gumbel.to(alpha.device)) / tau).softmax(-1)

        def hard(alpha: torch.Tensor) -> torch.Tensor:
            soft = ((alpha + gumbel.to(alpha.device)) / tau).softmax(-1)
            one_hot = torch.nn.functional.one_hot(soft.argmax(-1), soft.shape[-1]).to(soft.dtype)
            return one_hot - soft.detach() + soft  # forward: one-hot; backward: d soft

        return hard
