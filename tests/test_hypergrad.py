"""Hypergradient estimators against exact computations on problems small enough to solve."""

import itertools

import pytest
import torch
from torch.func import functional_call, grad
from torch.nn.functional import cross_entropy

from cml.nas.hypergrad import Implicit, SecondOrder, first_order
from cml.nas.search import SearchModel


@pytest.fixture(autouse=True, scope="module")
def double_precision():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def ridge_problem(seed=0, n=60, d=5):
    """L_train = mean (Xw - y)^2 + sum exp(alpha) w^2, L_val = mean (Vw - z)^2: w*(alpha) in closed form."""
    g = torch.Generator().manual_seed(seed)
    X, V = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    w_true = torch.randn(d, generator=g)
    y = X @ w_true + 0.3 * torch.randn(n, generator=g)
    z = V @ w_true + 0.3 * torch.randn(n, generator=g)

    def train_loss(w, alpha):
        return ((X @ w["w"] - y) ** 2).mean() + (alpha.exp() * w["w"] ** 2).sum()

    def val_loss(w, alpha):
        return ((V @ w["w"] - z) ** 2).mean()

    def solve(alpha):
        return torch.linalg.solve(X.T @ X / n + torch.diag(alpha.exp()), X.T @ y / n)

    return train_loss, val_loss, solve, X, d


def cosine(a, b):
    return float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))


def unrolled(train_loss, val_loss, w, alpha, xi):
    """Exact gradient of L_val(w - xi grad_w L_train(w, alpha), alpha) by autograd through the step."""

    def after_step(a):
        g = grad(train_loss)(w, a)
        return val_loss({k: w[k] - xi * g[k] for k in w}, a)

    return grad(after_step)(alpha)


def test_second_order_matches_exact_unrolled_hypergradient_on_ridge():
    train_loss, val_loss, _, _, d = ridge_problem()
    alpha = torch.linspace(-1.0, 0.5, d)
    w = {"w": torch.randn(d, generator=torch.Generator().manual_seed(1))}
    xi = 0.1
    exact = unrolled(train_loss, val_loss, w, alpha, xi)
    estimate = SecondOrder(xi)(train_loss, val_loss, w, alpha)
    assert cosine(estimate, exact) > 0.99
    assert torch.allclose(estimate, exact, rtol=1e-3, atol=1e-6)
    # and it is not the first-order estimate in disguise (which ignores the step and is zero here)
    assert torch.count_nonzero(first_order(train_loss, val_loss, w, alpha)) == 0


def test_second_order_matches_exact_unrolled_hypergradient_on_the_supercell():
    torch.manual_seed(0)
    net = SearchModel(6, 3, 4, 2)
    x_t, x_v = torch.randn(16, 6), torch.randn(16, 6)
    y_t, y_v = torch.randint(0, 3, (16,)), torch.randint(0, 3, (16,))

    def loss_on(x, y):
        return lambda w, alpha: cross_entropy(functional_call(net, w, (x, alpha.softmax(-1))), y)

    w = {k: p.detach() for k, p in net.named_parameters()}
    alpha = 0.5 * torch.randn(len(net.cell.edges), len(net.cell.ops))
    exact = unrolled(loss_on(x_t, y_t), loss_on(x_v, y_v), w, alpha, xi=0.05)
    estimate = SecondOrder(0.05)(loss_on(x_t, y_t), loss_on(x_v, y_v), w, alpha)
    assert cosine(estimate, exact) > 0.99


def test_implicit_converges_to_exact_implicit_function_theorem_hypergradient():
    train_loss, val_loss, solve, X, d = ridge_problem(seed=2)
    alpha = torch.linspace(-0.5, 0.5, d)
    exact = grad(lambda a: val_loss({"w": solve(a)}, a))(alpha)  # autograd through the closed-form solution
    w_star = {"w": solve(alpha)}
    hessian = 2 * (X.T @ X / len(X) + torch.diag(alpha.exp()))
    gamma = 0.9 / float(torch.linalg.eigvalsh(hessian).max())
    errors = []
    for terms in (0, 2, 5, 10, 30):
        estimate = Implicit(terms, gamma)(train_loss, val_loss, w_star, alpha)
        errors.append(float((estimate - exact).norm() / exact.norm()))
    assert all(later < earlier for earlier, later in itertools.pairwise(errors)), errors
    assert errors[-1] < 1e-2, errors
    assert errors[0] > 1e-1  # a single term is far off: the test can tell the series apart


def test_implicit_inverse_hvp_matches_a_linear_solve():
    train_loss, _, solve, X, d = ridge_problem(seed=3)
    alpha = torch.zeros(d)
    w = {"w": solve(alpha)}
    v = {"w": torch.randn(d, generator=torch.Generator().manual_seed(4))}
    hessian = 2 * (X.T @ X / len(X) + torch.eye(d))
    gamma = 0.9 / float(torch.linalg.eigvalsh(hessian).max())
    p = Implicit(60, gamma).inverse_hvp(train_loss, w, alpha, v)
    assert torch.allclose(p["w"], torch.linalg.solve(hessian, v["w"]), rtol=1e-4, atol=1e-8)


def test_power_iteration_estimates_the_largest_hessian_eigenvalue_and_sets_gamma_from_it():
    train_loss, val_loss, solve, X, d = ridge_problem(seed=2)
    alpha = torch.linspace(-0.5, 0.5, d)
    w = {"w": solve(alpha)}
    top = float(torch.linalg.eigvalsh(2 * (X.T @ X / len(X) + torch.diag(alpha.exp()))).max())
    estimator = Implicit()
    estimates = []
    for _ in range(20):
        estimator(train_loss, val_loss, w, alpha)
        estimates.append(estimator.last["lambda_max"])
    assert all(e <= top * (1 + 1e-9) for e in estimates)  # a Rayleigh quotient never overshoots
    assert abs(estimates[0] - top) / top < 0.1 and abs(estimates[-1] - top) / top < 1e-3, (estimates, top)
    assert estimator.last["gamma"] == pytest.approx(0.9 / estimates[-1])


def test_at_the_shipped_defaults_implicit_is_the_implicit_hypergradient_not_a_scaled_first_order_one():
    """Ridge regression, where first order is exactly zero: the old defaults (gamma 0.01, far below
    1 / lambda_max = 0.2) gave (K + 1) gamma times the mixed term, 77% off; gamma from the power
    iteration gets within 0.1%."""
    train_loss, val_loss, solve, _, d = ridge_problem(seed=2)
    alpha = torch.linspace(-0.5, 0.5, d)
    exact = grad(lambda a: val_loss({"w": solve(a)}, a))(alpha)
    w_star = {"w": solve(alpha)}

    def error(estimator):
        return float((estimator(train_loss, val_loss, w_star, alpha) - exact).norm() / exact.norm())

    assert error(Implicit()) < 1e-2
    assert error(Implicit(5, 0.01)) > 0.5
    assert torch.count_nonzero(first_order(train_loss, val_loss, w_star, alpha)) == 0


def test_implicit_on_the_supercell_is_the_neumann_sum_of_the_dense_hessian():
    """An 800-weight supernet: the estimate at the defaults against the Neumann sum and mixed
    derivative built from dense matrices (reverse-over-reverse `jacrev`; torch.func.hessian's
    forward-over-reverse gets the layer norm's weight rows wrong in torch 2.13, its matrix is not
    symmetric), with the gamma it chose; there it is far from the first-order gradient."""
    from torch.func import jacrev

    torch.manual_seed(0)
    net = SearchModel(6, 3, 4, 2)
    x_t, x_v = torch.randn(16, 6), torch.randn(16, 6)
    y_t, y_v = torch.randint(0, 3, (16,)), torch.randint(0, 3, (16,))
    names = [k for k, _ in net.named_parameters()]
    shapes = [p.shape for _, p in net.named_parameters()]
    sizes = [p.numel() for _, p in net.named_parameters()]

    def unflatten(flat):
        return {k: t.reshape(s) for k, t, s in zip(names, flat.split(sizes), shapes)}

    def loss_on(x, y):
        return lambda w, alpha: cross_entropy(functional_call(net, w, (x, alpha.softmax(-1))), y)

    train_loss, val_loss = loss_on(x_t, y_t), loss_on(x_v, y_v)
    w = {k: p.detach() for k, p in net.named_parameters()}
    flat = torch.cat([w[k].reshape(-1) for k in names])
    alpha = 0.5 * torch.randn(len(net.cell.edges), len(net.cell.ops))
    estimator = Implicit()
    estimate = estimator(train_loss, val_loss, w, alpha)
    gamma = estimator.last["gamma"]

    H = jacrev(grad(lambda f: train_loss(unflatten(f), alpha)))(flat)
    assert torch.allclose(H, H.T, atol=1e-10)
    v = grad(lambda f: val_loss(unflatten(f), alpha))(flat)
    term, total = v, v.clone()
    for _ in range(estimator.terms):
        term = term - gamma * H @ term
        total = total + term
    mixed = jacrev(lambda a: grad(lambda f: train_loss(unflatten(f), a))(flat))(alpha)  # [n_w, *alpha]
    expected = grad(val_loss, argnums=1)(w, alpha) - gamma * torch.einsum("w...,w->...", mixed, total)
    assert torch.allclose(estimate, expected, rtol=1e-6, atol=1e-9)
    assert gamma * float(torch.linalg.eigvalsh(H).abs().max()) < 1.0
    assert cosine(estimate, first_order(train_loss, val_loss, w, alpha)) < 0.9
    assert (
        cosine(Implicit(5, 0.01)(train_loss, val_loss, w, alpha), first_order(train_loss, val_loss, w, alpha)) > 0.999
    )


def test_zero_neumann_terms_take_h_inverse_as_gamma_times_the_identity():
    """K = 0 on ridge regression by hand: grad_w L_train = 2 X^T (Xw - y) / n + 2 e^alpha w, so
    d/d alpha <grad_w L_train, v> = 2 e^alpha w v; grad_alpha L_val = 0."""
    train_loss, val_loss, _, _, d = ridge_problem(seed=3)
    g = torch.Generator().manual_seed(5)
    alpha, w = torch.randn(d, generator=g), {"w": torch.randn(d, generator=g)}
    v = grad(val_loss)(w, alpha)["w"]
    assert torch.allclose(Implicit(0, 0.05)(train_loss, val_loss, w, alpha), -0.05 * 2 * alpha.exp() * w["w"] * v)


def test_a_fixed_gamma_beyond_the_bound_is_warned_about_once(capsys):
    train_loss, val_loss, solve, _, d = ridge_problem(seed=2)
    alpha = torch.zeros(d)
    w = {"w": solve(alpha)}
    estimator = Implicit(5, 1.0)  # lambda_max is about 5
    for _ in range(3):
        estimator(train_loss, val_loss, w, alpha)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "Neumann series diverges" in lines[0] and "gamma 1 " in lines[0]
    Implicit(5, 0.1)(train_loss, val_loss, w, alpha)
    assert capsys.readouterr().err == ""
