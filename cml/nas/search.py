"""Head-cell search on frozen encoder features of one task: DARTS with a choice of hypergradient
and relaxation, then the searched cell against the hand-designed heads on that task.

`DartsSearch` follows NASLib's optimiser interface (`step`, `get_final_architecture`); the
supernet (weights, SGD) and the architecture parameters (alpha, Adam) are separate modules with
separate optimisers, and the hypergradient estimator only ever sees pure loss functions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.func import functional_call
from tqdm import tqdm

from cml.nas.cell import DISCRETISATIONS, ArchParameters, discretize, one_hot_mixing
from cml.nas.genotype import Genotype
from cml.nas.hypergrad import ESTIMATORS, Loss, make_estimator
from cml.nas.oneshot import CANDIDATES, SAMPLINGS, OneShot
from cml.nas.relax import ENTROPY_END, RELAXATIONS, Relaxation
from cml.nas.supernet import Batches, Features, SearchModel, accuracy


def _option(default, help: str, **more) -> field:
    """A search option; its metadata (help, allowed values, a flag other than --search-<name>) is
    what a program's command line and config validation read."""
    return field(default=default, metadata={"help": help, **more})


LR_SCHEDULES = ("constant", "cosine", "swap")
METHODS = (*ESTIMATORS, "spos")  # DARTS with a hypergradient, or single-path one-shot (cml/nas/oneshot.py)


@dataclass
class SearchConfig:
    """The search's options (docs/method.md, "Head-cell search")."""

    method: str = _option(
        "darts2",
        "darts1 (first order), darts2 (second order) or idarts (implicit hypergradient), or spos (single-path "
        "one-shot: one child cell a step, then the best of --search-candidates cells by inherited weights)",
        choices=METHODS,
        flag="--nas-method",
    )
    relaxation: str = _option(
        "softmax", "relaxation of the mixing weights (DARTS methods)", choices=RELAXATIONS, flag="--relaxation"
    )
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
        None,
        "end temperature (default: the relaxation's, 0.1 for gdas, 0.05 for snas, sparse and adaptive)",
        domain="(0, inf)",
    )
    entropy_end: float | None = _option(
        None,
        f"adaptive: the target mean normalised entropy of the edges at the last step (default {ENTROPY_END})",
        domain="(0, 1)",
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
    stop_patience: int | None = _option(
        None,
        "selective stop (DARTS methods): an edge whose strongest op by output magnitude has led for this many "
        "checks in a row stops updating its alpha, and the search ends once every edge has stopped",
        domain="[1, inf)",
    )
    sampling: str = _option(
        "uniform",
        "spos: how children are drawn: uniform, or gradual (one edge's source or op changed per step)",
        choices=SAMPLINGS,
    )
    alignment: float = _option(
        0.0, "spos: weight of the loss pulling children's node states to the uniform supernet's", domain="[0, inf)"
    )
    candidates: int | None = _option(
        None, f"spos: random cells scored by inherited weights at every check (default {CANDIDATES})", domain="[1, inf)"
    )
    eval_every: int = _option(20, "steps between validation checks", domain="[1, inf)")
    head_epochs: int = _option(30, "epochs of the from-scratch training that compares the heads", domain="[1, inf)")

    def problem(self) -> str | None:
        """An option set for a method or relaxation that does not use it, or None."""
        default = SearchConfig()
        applies = {  # who uses them -> (whether this config is one of them, the options)
            "spos": (self.method == "spos", ("sampling", "alignment", "candidates")),
            "the DARTS methods": (
                self.method != "spos",
                ("relaxation", "alpha_lr", "tau0", "tau_min", "inner_steps", "lr_schedule", "warmup")
                + ("discretise", "stop_patience"),
            ),
            "idarts": (self.method == "idarts", ("neumann_terms", "neumann_gamma")),
            "the adaptive relaxation": (self.relaxation == "adaptive", ("entropy_end",)),
        }
        for users, (used, names) in applies.items():
            wrong = [name for name in names if getattr(self, name) != getattr(default, name)]
            if wrong and not used:
                return f"search.{wrong[0]} is {getattr(self, wrong[0])!r}, but it applies to {users} only"
        return None


@dataclass
class SelectiveStop:
    """Per-edge stop from the ops' output magnitudes, logged at every check: an edge stops once
    its strongest op (by the magnitude of what it adds to its node) has led for `patience` checks
    in a row after the check where it took the lead. Its alpha row is held from then on, and the
    search ends when every edge has stopped. The learning-rate-swap / selective-stop paper stops
    by per-op magnitudes; this is our rule for it, stated in full."""

    patience: int

    def __post_init__(self) -> None:
        self.leader: torch.Tensor | None = None  # [n_edges], the strongest op at the last check
        self.runs: torch.Tensor | None = None  # checks in a row it has led since
        self.stopped: torch.Tensor | None = None  # [n_edges] bool

    def update(self, magnitudes: torch.Tensor) -> None:
        leader = magnitudes.argmax(-1)
        if self.leader is None:
            self.runs, self.stopped = torch.zeros_like(leader), torch.zeros_like(leader, dtype=torch.bool)
        else:
            self.runs = torch.where(leader == self.leader, self.runs + 1, 0)
        self.leader = leader
        self.stopped |= self.runs >= self.patience

    def hold(self, alpha: torch.Tensor, before: torch.Tensor) -> None:
        """Put the stopped edges' rows of alpha back to what they were before the step."""
        if self.stopped is not None:
            with torch.no_grad():
                alpha[self.stopped] = before[self.stopped]

    @property
    def finished(self) -> bool:
        return self.stopped is not None and bool(self.stopped.all())


INNER_STEPS = {"idarts": 5}  # weight steps per architecture step where `inner_steps` is None; else 1


class DartsSearch:
    def __init__(self, model: SearchModel, config: SearchConfig, seed: int = 0):
        self.model, self.config = model, config
        cell = model.cell
        self.arch = ArchParameters(len(cell.edges), len(cell.ops), seed)
        self.estimator = make_estimator(config.method, config.w_lr, config.neumann_terms, config.neumann_gamma)
        self.inner_steps = config.inner_steps or INNER_STEPS.get(config.method, 1)
        self.relaxation = Relaxation(
            config.relaxation,
            config.steps,
            config.tau0,
            config.tau_min,
            entropy_end=config.entropy_end or ENTROPY_END,
            seed=seed,
        )
        self.stop = SelectiveStop(config.stop_patience) if config.stop_patience else None
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
        self.relaxation.adapt(self.t, alpha)
        mix = self.relaxation.mixing(self.t, alpha.shape)
        batch, val = next(train), next(val)
        weights = {n: p.detach() for n, p in self.model.named_parameters()}
        self.model.train()
        before = alpha.detach().clone()
        alpha.grad = self.estimator(self.loss(*batch, mix), self.loss(*val, mix), weights, before)
        self.alpha_optimizer.step()
        if self.stop is not None:
            self.stop.hold(alpha, before)
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

    def magnitudes(self, features: Features, examples: int = 512) -> torch.Tensor:
        """[n_edges, n_ops]: the root mean square of each op's output on an edge, weighted by its
        noise-free mixing, over the first `examples` of `features`."""
        self.model.eval()
        out = torch.zeros(len(self.model.cell.edges), len(self.model.cell.ops))
        with torch.no_grad():
            self.model.cell(features.x[:examples], self.probabilities(), magnitudes=out)
        return out

    def check(self, features: Features) -> dict:
        """What the history records at a check; it also moves the selective stop."""
        scores = self.val_accuracy(features)
        magnitudes = self.magnitudes(features)
        if self.stop is not None:
            self.stop.update(magnitudes)
        return {
            "val_accuracy": scores["as_trained"],
            "val_accuracy_noise_free": scores["noise_free"],
            "val_accuracy_discretised": scores["discretised"],
            "temperature": self.relaxation.temperature(self.trained_step),
            **getattr(self.estimator, "last", {}),
            "op_magnitude": magnitudes.tolist(),
            **({"stopped_edges": int(self.stop.stopped.sum())} if self.stop is not None else {}),
        }

    @property
    def finished(self) -> bool:
        """Whether the selective stop has stopped every edge."""
        return self.stop is not None and self.stop.finished


@dataclass
class SearchResult:
    genotype: Genotype
    probabilities: torch.Tensor  # [n_edges, n_ops]: what `table` says
    table: str  # what `probabilities` holds
    edges: list[tuple[int, int]]
    ops: tuple[str, ...]
    history: list[dict]  # validation accuracies, loss and the method's own figures every `eval_every` steps
    stopped_early: bool
    seconds: float

    @property
    def discretisation_gap(self) -> float:
        """The supernet as trained minus the cell it is cut to (same weights), at the end."""
        return self.history[-1]["val_accuracy"] - self.history[-1]["val_accuracy_discretised"]


Searcher = DartsSearch | OneShot
TABLES = {
    DartsSearch: "softmax(alpha / tau) per edge at the end of the search",
    OneShot: "share of the steps each op trained on each edge",
}


def make_searcher(model: SearchModel, config: SearchConfig, val: Features, seed: int = 0) -> Searcher:
    if config.method == "spos":
        return OneShot(
            model,
            config.keep,
            config.sampling,
            config.alignment,
            config.w_lr,
            seed,
            config.candidates or CANDIDATES,
            val,
        )
    return DartsSearch(model, config, seed)


def _rounded(value):
    if isinstance(value, float):
        return round(value, 6)
    return [_rounded(v) for v in value] if isinstance(value, list) else value


def search(data: dict[str, Features], config: SearchConfig, seed: int = 0, progress: bool = True) -> SearchResult:
    """Run the search on `data["train"]` (weights) and `data["val"]` (architecture)."""
    torch.manual_seed(seed)
    n_classes = int(data["train"].y.max()) + 1
    model = SearchModel(data["train"].x.shape[1], n_classes, config.width, config.nodes)
    searcher = make_searcher(model, config, data["val"], seed)
    generator = torch.Generator().manual_seed(seed)
    train, val = data["train"].stream(config.batch_size, generator), data["val"].stream(config.batch_size, generator)
    history, stopped_early = [], False
    began = time.perf_counter()
    for _ in tqdm(
        range(config.warmup), desc="search warm-up (weights only)", disable=not progress or not config.warmup
    ):
        searcher.weight_step(next(train))
    how = config.sampling if config.method == "spos" else config.relaxation
    bar = tqdm(range(config.steps), desc=f"search ({config.method}, {how})", disable=not progress)
    for t in bar:
        loss = searcher.step(train, val)
        if (t + 1) % config.eval_every and t + 1 != config.steps:
            continue
        skips = searcher.get_final_architecture().histogram().get("skip", 0)
        entry = {"step": t + 1, "train_loss": loss, **searcher.check(data["val"]), "skip_edges": skips}
        history.append({key: _rounded(value) for key, value in entry.items()})
        bar.set_postfix(val=f"{history[-1]['val_accuracy']:.3f}", skip=skips, refresh=False)
        if (config.skip_limit is not None and skips >= config.skip_limit) or searcher.finished:
            stopped_early = True
            break
    cell = searcher.model.cell
    return SearchResult(
        searcher.get_final_architecture(),
        searcher.probabilities(),
        TABLES[type(searcher)],
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
