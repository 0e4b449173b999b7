"""Hypergradient estimators against exact computations on problems small enough to solve."""

import itertools

import pytest
import torch
from torch.func import functional_call, grad
from torch.nn.functional import cross_entropy

from cml.config import SearchConfig
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
    net = SearchModel(6, 3, SearchConfig(width=4, nodes=2))
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
