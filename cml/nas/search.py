"""Head-cell search on frozen encoder features of one task: DARTS with a choice of hypergradient
and relaxation, then the searched cell against the hand-designed heads on that task.

`DartsSearch` follows NASLib's optimiser interface (`step`, `get_final_architecture`); the
supernet (weights, SGD) and the architecture parameters (alpha, Adam) are separate modules with
separate optimisers, and the hypergradient estimator only ever sees pure loss functions.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.func import functional_call
from tqdm import tqdm

from cml.nas.cell import DISCRETISATIONS, ArchParameters, SuperCell, discretize, one_hot_mixing
from cml.nas.genotype import Genotype
from cml.nas.hypergrad import ESTIMATORS, Loss, make_estimator
from cml.nas.relax import RELAXATIONS, Relaxation


def _option(default, help: str, **more) -> field:
    """A search option; its metadata (help, allowed values, a flag other than --search-<name>) is
    what a program's command line and config validation read."""
    return field(default=default, metadata={"help": help, **more})


LR_SCHEDULES = ("constant", "cosine", "swap")


@dataclass
class SearchConfig:
    """The search's options (docs/method.md, "Head-cell search")."""

    method: str = _option(
        "darts2",
        "hypergradient: darts1 (first order), darts2 (second order) or idarts (implicit)",
        choices=ESTIMATORS,
        flag="--nas-method",
    )
    relaxation: str = _option("softmax", "relaxation of the mixing weights", choices=RELAXATIONS, flag="--relaxation")
    task: int = _option(0, "which task of order 0 the search uses", domain="[0, inf)")
    nodes: int = _option(4, "intermediate nodes of the cell", domain="[1, inf)")
    width: int = _option(128, "width of every node", domain="[1, inf)")
    steps: int = _option(300, "architecture steps", domain="[1, inf)")
    batch_size: int = _option(64, "batch size of the search", domain="[1, inf)")
    w_lr: float = _option(
        0.05, "SGD (momentum 0.9) on the supernet weights; also the virtual step xi", domain="(0, inf)"
    )
    alpha_lr: float = _option(3e-3, "Adam on the architecture parameters", domain="(0, inf)")
    neumann_terms: int = _option(5, "K of the implicit estimator (0: H^-1 taken as gamma I)", domain="[0, inf)")
    neumann_gamma: float | None = _option(
        None,
        "Neumann step of idarts (default: 0.9 / the largest Hessian eigenvalue, by power iteration "
        "every step; a fixed value that breaks gamma lambda_max < 1 is warned about)",
        domain="(0, inf)",
    )
    inner_steps: int | None = _option(
        None,
        "weight steps per architecture step (default: 5 for idarts, whose hypergradient assumes "
        "weights near their optimum, as iDARTS's code; 1 for darts1 and darts2)",
        domain="[1, inf)",
    )
    tau0: float | None = _option(
        None, "start temperature (default: the relaxation's, 10 for gdas, 1 otherwise)", domain="(0, inf)"
    )
    tau_min: float | None = _option(
        None, "end temperature (default: the relaxation's, 0.1 for gdas, 0.05 for snas and sparse)", domain="(0, inf)"
    )
    lr_schedule: str = _option(
        "constant",
        "learning rates over the search: constant; cosine (the weights' rate falls to 0 by a cosine, "
        "alpha's stays, as DARTS); swap (alpha's falls, the weights' stays)",
        choices=LR_SCHEDULES,
    )
    warmup: int = _option(0, "weight-only steps, alpha fixed, before the architecture steps", domain="[0, inf)")
    discretise: str = _option(
        "edges",
        "how the cell is cut: edges (each node's strongest edges, DARTS), pairs (its strongest "
        "edge-op pairs) or nodewise (one softmax over a node's edge-op pairs without none)",
        choices=DISCRETISATIONS,
    )
    keep: int = _option(2, "inputs kept per intermediate node", domain="[1, 3]")
    skip_limit: int | None = _option(
        None,
        "stop the search once the discretised cell keeps this many skip edges",
        flag="--skip-limit",
        domain="[0, inf)",
    )
    eval_every: int = _option(20, "steps between validation checks", domain="[1, inf)")
    head_epochs: int = _option(30, "epochs of the from-scratch training that compares the heads", domain="[1, inf)")


@dataclass
class Features:
    """Frozen-encoder entity states of one split of a task, with labels 0..C-1."""

    x: torch.Tensor
    y: torch.Tensor

    def epoch(self, batch_size: int, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for chunk in torch.randperm(len(self.y), generator=generator).split(batch_size):
            yield self.x[chunk], self.y[chunk]

    def stream(self, batch_size: int, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            yield from self.epoch(batch_size, generator)


Batches = Iterator[tuple[torch.Tensor, torch.Tensor]]


class SearchModel(nn.Module):
    """The supernet cell and a classifier: every weight the search trains, and nothing else."""

    def __init__(self, in_dim: int, n_classes: int, config: SearchConfig):
        super().__init__()
        self.cell = SuperCell(in_dim, config.width, config.nodes)
        self.classifier = nn.Linear(self.cell.out_dim, n_classes)

    def forward(self, x: torch.Tensor, mixing: torch.Tensor, sparse: bool = False) -> torch.Tensor:
        return self.classifier(self.cell(x, mixing, sparse))


def accuracy(logits_of, features: Features, batch_size: int = 1024) -> float:
    with torch.no_grad():
        logits = torch.cat([logits_of(x) for x in features.x.split(batch_size)])
    return float((logits.argmax(-1) == features.y).float().mean())


INNER_STEPS = {"idarts": 5}  # weight steps per architecture step where `inner_steps` is None; else 1


class DartsSearch:
    def __init__(self, model: SearchModel, config: SearchConfig, seed: int = 0):
        self.model, self.config = model, config
        cell = model.cell
        self.arch = ArchParameters(len(cell.edges), len(cell.ops), seed)
        self.estimator = make_estimator(config.method, config.w_lr, config.neumann_terms, config.neumann_gamma)
        self.inner_steps = config.inner_steps or INNER_STEPS.get(config.method, 1)
        self.relaxation = Relaxation(config.relaxation, config.steps, config.tau0, config.tau_min, seed=seed)
        self.eval_noise = torch.Generator().manual_seed(seed + 1)  # validation draws, apart from training's
        self.w_optimizer = torch.optim.SGD(model.parameters(), lr=config.w_lr, momentum=0.9, weight_decay=3e-4)
        self.alpha_optimizer = torch.optim.Adam(
            self.arch.parameters(), lr=config.alpha_lr, betas=(0.5, 0.999), weight_decay=1e-3
        )
        falls = {"cosine": self.w_optimizer, "swap": self.alpha_optimizer}.get(config.lr_schedule)
        self.schedule = torch.optim.lr_scheduler.CosineAnnealingLR(falls, config.steps) if falls else None
        self.t = 0

    def loss(self, x: torch.Tensor, y: torch.Tensor, mix) -> Loss:
        return lambda w, alpha: nn.functional.cross_entropy(functional_call(self.model, w, (x, mix(alpha))), y)

    def step(self, train: Batches, val: Batches) -> float:
        """One architecture step (the chosen hypergradient, on the next batch of each stream), then
        `inner_steps` weight steps, the first on that same training batch; returns its loss."""
        alpha = self.arch.alpha
        mix = self.relaxation.mixing(self.t, alpha.shape)
        batch, val = next(train), next(val)
        weights = {n: p.detach() for n, p in self.model.named_parameters()}
        self.model.train()
        alpha.grad = self.estimator(self.loss(*batch, mix), self.loss(*val, mix), weights, alpha.detach())
        self.alpha_optimizer.step()
        losses = [self.weight_step(batch if k == 0 else next(train), mix) for k in range(self.inner_steps)]
        if self.schedule is not None:
            self.schedule.step()
        self.t += 1
        return losses[0]

    def weight_step(self, batch: tuple[torch.Tensor, torch.Tensor], mix=None) -> float:
        """One SGD step of the supernet's weights under `mix` (default: the relaxation before the
        first architecture step, for the warm-up)."""
        self.model.train()
        mix = mix if mix is not None else self.relaxation.mixing(0, self.arch.alpha.shape)
        loss = self.loss(*batch, mix)(dict(self.model.named_parameters()), self.arch.alpha.detach())
        self.w_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
        self.w_optimizer.step()
        return float(loss.detach())

    @property
    def trained_step(self) -> int:
        """The step whose temperature the weights last trained at."""
        return max(self.t - 1, 0)

    def logits(self) -> torch.Tensor:
        """alpha / tau at the temperature the supernet trained at last: what the cell is read from."""
        return self.arch.alpha.detach() / self.relaxation.temperature(self.trained_step)

    def probabilities(self) -> torch.Tensor:
        """softmax(alpha / tau): the noise-free mixing the supernet trained at last."""
        return self.logits().softmax(-1)

    def get_final_architecture(self) -> Genotype:
        return discretize(self.logits(), self.model.cell, self.config.keep, self.config.discretise)

    def val_accuracy(self, features: Features) -> dict[str, float]:
        """The supernet on `features`: as trained (the relaxation's noise drawn afresh for every
        batch, from a stream of its own), noise-free (softmax(alpha / tau)), and cut to the
        genotype it would give now, with the weights it has (the discretisation gap)."""
        self.model.eval()
        alpha, shape = self.arch.alpha.detach(), self.arch.alpha.shape
        relaxation, step = self.relaxation, self.trained_step

        def under(mixing_of, sparse: bool = False) -> float:
            return accuracy(lambda x: self.model(x, mixing_of(), sparse), features)

        noise_free = self.probabilities()
        cut = one_hot_mixing(self.get_final_architecture(), self.model.cell)
        out = {"noise_free": under(lambda: noise_free), "discretised": under(lambda: cut, sparse=True)}
        if relaxation.name == "softmax":
            out["as_trained"] = out["noise_free"]
        else:
            out["as_trained"] = under(lambda: relaxation.mixing(step, shape, generator=self.eval_noise)(alpha))
        return out


@dataclass
class SearchResult:
    genotype: Genotype
    probabilities: torch.Tensor  # softmax(alpha / tau) at the final temperature, [n_edges, n_ops]
    edges: list[tuple[int, int]]
    ops: tuple[str, ...]
    history: list[dict]  # validation accuracies, loss, temperature and skip edges every `eval_every` steps
    stopped_early: bool
    seconds: float

    @property
    def discretisation_gap(self) -> float:
        """The supernet as trained minus the cell it is cut to (same weights), at the end."""
        return self.history[-1]["val_accuracy"] - self.history[-1]["val_accuracy_discretised"]


def search(data: dict[str, Features], config: SearchConfig, seed: int = 0, progress: bool = True) -> SearchResult:
    """Run the search on `data["train"]` (weights) and `data["val"]` (architecture)."""
    torch.manual_seed(seed)
    n_classes = int(data["train"].y.max()) + 1
    searcher = DartsSearch(SearchModel(data["train"].x.shape[1], n_classes, config), config, seed)
    generator = torch.Generator().manual_seed(seed)
    train, val = data["train"].stream(config.batch_size, generator), data["val"].stream(config.batch_size, generator)
    history, stopped_early = [], False
    began = time.perf_counter()
    for _ in tqdm(
        range(config.warmup), desc="search warm-up (weights only)", disable=not progress or not config.warmup
    ):
        searcher.weight_step(next(train))
    bar = tqdm(range(config.steps), desc=f"search ({config.method}, {config.relaxation})", disable=not progress)
    for t in bar:
        loss = searcher.step(train, val)
        if (t + 1) % config.eval_every and t + 1 != config.steps:
            continue
        skips = searcher.get_final_architecture().histogram().get("skip", 0)
        scores = searcher.val_accuracy(data["val"])
        history.append(
            {
                "step": t + 1,
                "train_loss": round(loss, 5),
                "val_accuracy": round(scores["as_trained"], 5),
                "val_accuracy_noise_free": round(scores["noise_free"], 5),
                "val_accuracy_discretised": round(scores["discretised"], 5),
                "temperature": round(searcher.relaxation.temperature(t), 5),
                "skip_edges": skips,
                **{k: round(v, 6) for k, v in getattr(searcher.estimator, "last", {}).items()},
            }
        )
        bar.set_postfix(val=f"{history[-1]['val_accuracy']:.3f}", skip=skips, refresh=False)
        if config.skip_limit is not None and skips >= config.skip_limit:
            stopped_early = True
            break
    cell = searcher.model.cell
    return SearchResult(
        searcher.get_final_architecture(),
        searcher.probabilities(),
        cell.edges,
        cell.ops,
        history,
        stopped_early,
        time.perf_counter() - began,
    )


def train_head(head: nn.Module, data: dict[str, Features], epochs: int, seed: int = 0, lr: float = 1e-3) -> dict:
    """A head and a fresh classifier trained from scratch on the task's training features."""
    torch.manual_seed(seed)
    n_classes = int(data["train"].y.max()) + 1
    model = nn.Sequential(head, nn.Linear(head.out_dim, n_classes))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        for x, y in data["train"].epoch(64, generator):
            loss = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    model.eval()
    return {
        "val_accuracy": round(accuracy(model, data["val"]), 5),
        "test_accuracy": round(accuracy(model, data["test"]), 5),
        "parameters": sum(p.numel() for p in head.parameters()),
    }
