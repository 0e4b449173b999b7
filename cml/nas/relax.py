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
- `adaptive`: the noisy softmax of `sparse` with tau_t chosen every step from alpha itself: the
  temperature in [tau_min, tau0] = [0.05, 1] at which the edges' mean normalised entropy of
  softmax(alpha / tau_t) is the step's target, falling linearly from 1 to `entropy_end`. Where
  alpha is still flat, tau falls quickly to make the supernet sparse; where alpha has grown
  peaked by itself, tau stays larger and the softmax's gradients stay alive. The small-temperature
  paper (Zhang & Ding 2023) pairs its exponential schedule with an entropy-based adaptive scheme
  whose exact rule is not in our sources; this rule is ours, stated here in full.
- `mixed`: mixed-sparsity training, the same noisy softmax with tau_t drawn every step from
  {tau0, tau_min} = {0.01, 0.001}, the smaller with probability t / T (so its share rises to 1).

`tau0` and `tau_min` left at None take the relaxation's published schedule. `mixing(step, shape)`
draws the noise once and returns a function of alpha: every loss a hypergradient evaluates
within one step must see the same sampled relaxation.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

import torch
from scipy.optimize import brentq

# name -> (tau0, tau_min, how tau goes from one to the other over the search)
SCHEDULES: dict[str, tuple[float, float, str]] = {
    "softmax": (1.0, 1.0, "constant"),
    "snas": (1.0, 0.05, "linear"),
    "gdas": (10.0, 0.1, "linear"),
    "sparse": (1.0, 0.05, "exponential"),
    "adaptive": (1.0, 0.05, "entropy"),
    "mixed": (0.01, 0.001, "drawn"),
}
ENTROPY_END = 0.05  # `adaptive`: the target normalised entropy at the last step, by default
NOISY = ("sparse", "adaptive", "mixed")  # the Gaussian-noise softmax, std `noise` x tau


def normalised_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean over rows of the softmax's entropy divided by log(number of columns): 1 uniform, 0 one-hot."""
    log_p = logits.log_softmax(-1)
    return -(log_p.exp() * log_p).sum(-1).mean() / math.log(logits.shape[-1])


RELAXATIONS = tuple(SCHEDULES)


@dataclass
class Relaxation:
    name: str = "softmax"
    total_steps: int = 1
    tau0: float | None = None
    tau_min: float | None = None
    noise: float = 0.3  # std of the Gaussian noise of `sparse` on the logits
    entropy_end: float = ENTROPY_END
    seed: int = 0

    def __post_init__(self) -> None:
        if self.name not in RELAXATIONS:
            raise ValueError(f"unknown relaxation {self.name!r}: use one of {', '.join(RELAXATIONS)}")
        tau0, tau_min, self.shape = SCHEDULES[self.name]
        self.tau0 = tau0 if self.tau0 is None else self.tau0
        self.tau_min = tau_min if self.tau_min is None else self.tau_min
        self.generator = torch.Generator().manual_seed(self.seed)
        self.adapted: list[float] = []  # `adaptive`: the temperature of each step so far

    def target_entropy(self, step: int) -> float:
        return 1.0 + (self.entropy_end - 1.0) * self._progress(step)

    def _progress(self, step: int) -> float:
        return min(step / max(self.total_steps - 1, 1), 1.0)

    def adapt(self, step: int, alpha: torch.Tensor) -> None:
        """Set `step`'s temperature from alpha (`adaptive`; the others' schedules need nothing):
        a root of the entropy's excess over the target in log tau, which it rises with."""
        if self.shape != "entropy":
            return
        if step > len(self.adapted):
            raise ValueError(f"step {step} adapted before step {len(self.adapted)}: adapt the steps in order")
        target, logits = self.target_entropy(step), alpha.detach().double()

        def excess(log_tau: float) -> float:
            return float(normalised_entropy(logits / math.exp(log_tau))) - target

        lo, hi = math.log(self.tau_min), math.log(self.tau0)
        if excess(hi) <= 0:  # peaked enough even at tau0
            log_tau = hi
        elif excess(lo) >= 0:  # too flat even at tau_min
            log_tau = lo
        else:
            log_tau = brentq(excess, lo, hi, xtol=1e-12)
        self.adapted[step:] = [math.exp(log_tau)]

    def temperature(self, step: int) -> float:
        if self.shape == "entropy":  # the last adapted step's, before the first: tau0
            return self.adapted[min(step, len(self.adapted) - 1)] if self.adapted else self.tau0
        t = self._progress(step)
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
        if self.name in NOISY:
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
