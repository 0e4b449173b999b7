"""Hypergradient estimators of the bilevel problem
`min_alpha L_val(w*(alpha), alpha)`, `w*(alpha) = argmin_w L_train(w, alpha)` (docs/method.md, "Head-cell search").

All share one interface: `estimator(train_loss, val_loss, w, alpha) -> d L_val / d alpha`, where
the losses are pure functions `(w: dict of tensors, alpha: tensor) -> scalar`. They know nothing of
cells or data, so the same code is checked against closed-form problems in the tests and used on
the supernet in the search. Derivatives come from `torch.func` (no model copies).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch.func import grad, vjp

from cml.errors import warn

Params = dict[str, torch.Tensor]
Loss = Callable[[Params, torch.Tensor], torch.Tensor]
Hypergradient = Callable[[Loss, Loss, Params, torch.Tensor], torch.Tensor]


def _combine(a: Params, b: Params, scale: float) -> Params:
    return {k: a[k] + scale * b[k] for k in a}


def _dot(a: Params, b: Params) -> torch.Tensor:
    return sum((a[k] * b[k]).sum() for k in a)


def first_order(train_loss: Loss, val_loss: Loss, w: Params, alpha: torch.Tensor) -> torch.Tensor:
    """grad_alpha L_val(w, alpha): treats w as independent of alpha (DARTS first order)."""
    return grad(val_loss, argnums=1)(w, alpha)


@dataclass
class SecondOrder:
    """DARTS second order: the gradient through one virtual step w' = w - xi grad_w L_train, with
    the Hessian-vector product replaced by a central finite difference of grad_alpha L_train."""

    xi: float

    def __call__(self, train_loss: Loss, val_loss: Loss, w: Params, alpha: torch.Tensor) -> torch.Tensor:
        w_virtual = _combine(w, grad(train_loss)(w, alpha), -self.xi)
        v, g_alpha = grad(val_loss, argnums=(0, 1))(w_virtual, alpha)
        eps = 0.01 / float(torch.sqrt(_dot(v, v)).clamp_min(1e-12))
        g_plus = grad(train_loss, argnums=1)(_combine(w, v, eps), alpha)
        g_minus = grad(train_loss, argnums=1)(_combine(w, v, -eps), alpha)
        return g_alpha - self.xi * (g_plus - g_minus) / (2 * eps)


@dataclass
class Implicit:
    """iDARTS: the implicit-function-theorem hypergradient at w (taken as the inner solution),
    grad_alpha L_val - grad2_{alpha w} L_train H^-1 grad_w L_val, with H^-1 v approximated by the
    Neumann series gamma sum_{k=0..K} (I - gamma H)^k v over exact Hessian-vector products.

    The series converges only for gamma below 1 / lambda_max(H), and it is H^-1 (not a multiple
    of the identity) only where gamma lambda is not small: with gamma lambda << 1 every term is
    about v and the estimate is first-order DARTS scaled by (K + 1) gamma. So every call
    estimates |lambda|_max by power iteration (`power_steps` products, warm-started from the last
    call's vector; `first_power_steps` on the first call) and, with `gamma=None`, sets
    gamma = `safety` / lambda_max; a fixed gamma that breaks the bound is warned about once.
    `last` holds the call's lambda_max and gamma.

    H is symmetric, so a Hessian-vector product is a vector-Jacobian product of grad_w L_train:
    it is linearised once per call and each product is then one backward pass (3-4x faster on a
    CPU than forward-over-reverse `jvp`)."""

    terms: int = 5
    gamma: float | None = None
    power_steps: int = 2
    first_power_steps: int = 20  # from a random start the Rayleigh quotient underestimates lambda_max
    safety: float = 0.9
    last: dict = field(default_factory=dict)
    _vector: Params | None = field(default=None, repr=False)
    _warned: bool = field(default=False, repr=False)

    def largest_eigenvalue(self, hvp: Callable[[Params], Params], like: Params) -> float:
        """lambda_max of H by power iteration, continued from the previous call's vector."""
        steps = self.power_steps
        if self._vector is None:
            steps = self.first_power_steps
            generator = torch.Generator().manual_seed(0)
            self._vector = {
                k: torch.randn(t.shape, generator=generator, dtype=t.dtype).to(t.device) for k, t in like.items()
            }
        v, value = self._vector, 0.0
        for _ in range(steps):
            norm = torch.sqrt(_dot(v, v)).clamp_min(1e-30)
            v = {k: t / norm for k, t in v.items()}
            hv = hvp(v)
            value = float(_dot(v, hv))  # Rayleigh quotient of the unit vector
            v = hv
        self._vector = {k: t.detach() for k, t in v.items()}
        return value

    def step_size(self, hvp: Callable[[Params], Params], like: Params) -> float:
        lam = abs(self.largest_eigenvalue(hvp, like))  # a dominant negative eigenvalue bounds gamma too
        gamma = self.gamma if self.gamma is not None else self.safety / max(lam, 1e-12)
        if self.gamma is not None and gamma * lam >= 1 and not self._warned:
            warn(f"idarts: gamma {gamma:g} x largest Hessian eigenvalue {lam:.3g} >= 1, the Neumann series diverges")
            self._warned = True
        self.last = {"lambda_max": lam, "gamma": gamma}
        return gamma

    def inverse_hvp(self, train_loss: Loss, w: Params, alpha: torch.Tensor, v: Params) -> Params:
        _, linearised = vjp(lambda w_: grad(train_loss)(w_, alpha), w)

        def hvp(u: Params) -> Params:
            return linearised(u)[0]

        gamma = self.step_size(hvp, w)
        term, total = v, v
        for _ in range(self.terms):
            term = _combine(term, hvp(term), -gamma)
            total = _combine(total, term, 1.0)
        return {k: gamma * t for k, t in total.items()}

    def __call__(self, train_loss: Loss, val_loss: Loss, w: Params, alpha: torch.Tensor) -> torch.Tensor:
        v, g_alpha = grad(val_loss, argnums=(0, 1))(w, alpha)
        p = self.inverse_hvp(train_loss, w, alpha, v)
        mixed = grad(lambda a: _dot(grad(train_loss)(w, a), p))(alpha)
        return g_alpha - mixed


ESTIMATORS = ("darts1", "darts2", "idarts")  # first order, second order (finite differences), implicit


def make_estimator(method: str, xi: float, terms: int, gamma: float | None) -> Hypergradient:
    if method == "darts1":
        return first_order
    if method == "darts2":
        return SecondOrder(xi)
    if method == "idarts":
        return Implicit(terms, gamma)
    raise ValueError(f"unknown NAS method {method!r}: use one of {', '.join(ESTIMATORS)}")
