"""Run configuration: dataclasses, loaded from YAML and overridden by command-line flags.

A config file mirrors these sections (`data:`, `encoder:`, `train:`, `cml:`, `loss:`, `search:`) plus the top-level run
fields; an unknown key is an error that names the file, so a typo never passes silently.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cml.errors import CMLInputError


@dataclass
class DataConfig:
    dataset: str = "demo"
    data_dir: str | None = None
    max_per_relation: int | None = None  # cap on training examples per relation, for quick runs
    n_tasks: int | None = None  # default: the dataset's task_orders.json, else 10 (demo: 5)
    task_split: str = "random"  # random (seeds 2021 + 100 i) or clustered
    orders: int = 5
    order_protocol: str | None = None  # file (task_orders.json), random or cyclic; default: file when there is one
    curriculum_orders: bool = False  # also run order 0's tasks sorted easy to hard and hard to easy
    eval_split: str = "test"  # test, or val to choose settings without looking at the test set


@dataclass
class EncoderConfig:
    name: str = "minilm"  # minilm (offline all-MiniLM-L6-v2), tiny (random, tests), a path or a hub id
    max_length: int = 128
    freeze_layers: int = 0  # freeze the embeddings and this many bottom layers (0: train everything)
    marker_init: str = "punct"  # entity-marker embeddings: punct ([E11]/[E12] from '@', [E21]/[E22] from '#') or random


@dataclass
class TrainConfig:
    methods: list[str] = field(default_factory=lambda: ["finetune", "replay", "joint"])
    epochs: int = 2  # of the learn stage
    consolidate_epochs: int = 10  # of the consolidation stage (crl, cear, cml)
    batch_size: int = 16
    eval_batch_size: int | None = None  # default: 128 on a CPU, 1024 on a GPU
    length_window: int = 50  # training batches are sorted by length within windows of this many (1: no sorting)
    precision: str = "auto"  # bf16 (autocast), fp32, or auto: bf16 where the hardware has it (cml/device.py)
    lr: float = 5e-5  # the encoder
    projection_lr: float | None = None  # the h and z projections (default: lr, as CEAR)
    head_lr: float = 1e-3  # the classifier
    memory_size: int = 10  # examples kept per relation
    head: str = "projection"  # projection (Linear-GELU-LayerNorm), linear, mlp, or a genotype.json of the head search
    classifier: str = "auto"  # auto (each method's own), linear, ncm or ensemble
    alpha: float = 0.5  # ensemble: alpha P_linear + (1 - alpha) P_ncm
    beta: float = 0.5  # prototypes: (1 - beta) static mean + beta dynamic (memory) mean
    augment: str = "full"  # memory augmentation of the methods that augment: none, swap or full (swap + concatenation)
    augment_max_length: int = 256  # word pieces of a concatenated sentence at most


@dataclass
class CMLConfig:
    """The curriculum-meta learner and the relation space it (and the reports) use."""

    types: str = "auto"  # auto (dataset types, else induced), dataset, induced, or a KG type map (JSON path)
    n_types: int = 32  # clusters for induced types
    similarity: str = "kl"  # kl (exp(-symmetrised KL / tau)) or cosine
    tau: float | None = None  # default: the median off-diagonal divergence
    pacing: str = "linear"  # linear, root or step
    start_fraction: float = 0.25
    direction: str = "easy_first"  # easy_first or hard_first
    meta_eps: float | None = None  # Reptile step size; None: the method's own (cml/methods.py)
    meta_schedule: str = "fixed"  # fixed, linear (eps (1 - k/K)) or sqrt (eps sqrt(1 - k/K))
    difficulty: str = "types"  # what orders the curriculum: types (the relation space) or prototypes (cosine)


@dataclass
class LossConfig:
    """The weight of every loss term (0 switches it off) and the terms' constants. Which terms a
    stage uses is part of its method (cml/methods.py)."""

    ce: float = field(default=1.0, metadata={"help": "cross-entropy over the seen relations"})
    supcon: float = field(default=1.0, metadata={"help": "supervised contrastive loss against a feature bank (CRL)"})
    proto: float = field(default=1.0, metadata={"help": "InfoNCE against the relation prototypes (CEAR)"})
    margin: float = field(default=0.5, metadata={"help": "hard-negative prototype margin loss (CEAR's mu)"})
    rkd: float = field(default=1.0, metadata={"help": "relational distillation, no teacher pass (CRL)"})
    fkd: float = field(default=1.1, metadata={"help": "focal distillation of the linear head (CEAR's lambda2)"})
    fkd_z: float = field(default=0.5, metadata={"help": "focal distillation of the prototype scores (CEAR's lambda1)"})
    margin_value: float = field(default=0.1, metadata={"help": "the margin omega"})
    tau: float = field(default=0.1, metadata={"help": "temperature tau1 of the contrastive terms and the ensemble"})
    analogy_tau: float = field(default=0.5, metadata={"help": "temperature tau2 of the analogy weights"})
    kappa: float = field(default=10.0, metadata={"help": "temperature factor of relational distillation"})
    gamma: float = field(default=1.25, metadata={"help": "focusing exponent of focal distillation"})
    bank_sample: int = field(default=500, metadata={"help": "bank entries per step in CRL's first stage"})


@dataclass
class SearchConfig:
    """DARTS search of the head cell (METHOD.md section 6), on frozen encoder features of one task."""

    method: str = "darts2"  # darts1 (first order), darts2 (second order) or idarts (implicit)
    relaxation: str = "softmax"  # softmax, gumbel or sparse
    task: int = 0  # which task of order 0 to search on
    nodes: int = 4  # intermediate nodes of the cell
    width: int = 128  # width of every node
    steps: int = 300
    batch_size: int = 64
    w_lr: float = 0.05  # SGD (momentum 0.9) on the supernet weights; also the virtual step xi
    alpha_lr: float = 3e-3  # Adam on the architecture parameters
    neumann_terms: int = 5  # K of the implicit estimator
    neumann_gamma: float = 0.01  # below 1 / largest Hessian eigenvalue
    tau0: float = 1.0  # start temperature of gumbel and sparse
    tau_min: float = 0.05  # end temperature
    skip_limit: int | None = None  # stop early once the discretised cell keeps this many skip edges
    eval_every: int = 20  # steps between validation checks
    head_epochs: int = 30  # epochs of the from-scratch training that compares the heads


@dataclass
class ExecutorConfig:
    """Where the cells of a run execute (cml/executors.py). On a CPU a cell's numbers depend on its
    thread count, never on where it runs: the same seeds and `cpus_per_cell` give the same rows."""

    name: str = "local"  # local (this process, one cell after another) or ray (one Ray task per cell)
    ray_address: str | None = None  # ray: None starts Ray on this machine; auto or host:port joins a cluster
    cpus_per_cell: int | None = None  # threads of a cell, and the Ray CPUs it holds; default: all (local), 1 (ray)
    gpus_per_cell: float = 0.0  # ray: GPUs a cell holds, a fraction to share one GPU between cells


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    cml: CMLConfig = field(default_factory=CMLConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    output: str = "runs/latest"
    seed: int = 2021
    seeds: int = 1  # runs of every (method, order), with seeds seed, seed + 1, ...
    device: str = "auto"  # auto, cpu or cuda

    def check(self, source: str = "config") -> RunConfig:
        """Every option with a fixed set of values, checked before anything runs."""
        for where, value, allowed in (
            ("data.task_split", self.data.task_split, CHOICES["task_split"]),
            ("data.eval_split", self.data.eval_split, CHOICES["eval_split"]),
            ("encoder.marker_init", self.encoder.marker_init, CHOICES["marker_init"]),
            ("train.classifier", self.train.classifier, CHOICES["classifier"]),
            ("train.augment", self.train.augment, CHOICES["augment"]),
            ("cml.difficulty", self.cml.difficulty, CHOICES["difficulty"]),
            ("device", self.device, CHOICES["device"]),
            ("train.precision", self.train.precision, CHOICES["precision"]),
            ("cml.similarity", self.cml.similarity, CHOICES["similarity"]),
            ("cml.pacing", self.cml.pacing, CHOICES["pacing"]),
            ("cml.direction", self.cml.direction, CHOICES["direction"]),
            ("cml.meta_schedule", self.cml.meta_schedule, CHOICES["meta_schedule"]),
            ("search.method", self.search.method, CHOICES["nas_method"]),
            ("search.relaxation", self.search.relaxation, CHOICES["relaxation"]),
            ("executor.name", self.executor.name, CHOICES["executor"]),
        ):
            if value not in allowed:
                raise CMLInputError(f"{where} is {value!r}; use one of {', '.join(allowed)}", source)
        if self.seeds < 1:
            raise CMLInputError(f"seeds is {self.seeds}; it must be at least 1", source)
        self._check_executor(source)
        if self.data.order_protocol is not None and self.data.order_protocol not in CHOICES["order_protocol"]:
            raise CMLInputError(
                f"data.order_protocol is {self.data.order_protocol!r}; use one of {', '.join(CHOICES['order_protocol'])}",
                source,
            )
        if self.cml.types not in ("auto", "dataset", "induced") and not Path(self.cml.types).is_file():
            raise CMLInputError(
                f"cml.types is {self.cml.types!r}: not auto, dataset, induced, or an existing type map file", source
            )
        if self.train.head not in CHOICES["head"]:
            if not self.train.head.endswith(".json"):
                raise CMLInputError(
                    f"train.head is {self.train.head!r}; use one of {', '.join(CHOICES['head'])} or a genotype .json file",
                    source,
                )
            from cml.nas.genotype import Genotype

            Genotype.load(self.train.head)  # a bad genotype fails here, before any data is loaded
        return self

    def _check_executor(self, source: str) -> None:
        ex = self.executor
        if ex.cpus_per_cell is not None and ex.cpus_per_cell < 1:
            raise CMLInputError(f"executor.cpus_per_cell is {ex.cpus_per_cell}; it must be at least 1", source)
        if ex.gpus_per_cell < 0:
            raise CMLInputError(f"executor.gpus_per_cell is {ex.gpus_per_cell}; it must not be negative", source)
        if ex.name == "local" and (ex.gpus_per_cell or ex.ray_address is not None):
            raise CMLInputError(
                "executor.gpus_per_cell and executor.ray_address apply to the ray executor; "
                "the local one runs on --device (add --executor ray)",
                source,
            )

    def run_seeds(self) -> list[int]:
        """The seeds every (method, order) runs with: seed, seed + 1, ..., seed + seeds - 1."""
        return [self.seed + s for s in range(self.seeds)]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> RunConfig:
        return _build(cls, values, source)


CHOICES = {
    "task_split": ("random", "clustered"),
    "order_protocol": ("file", "random", "cyclic"),
    "eval_split": ("test", "val"),
    "marker_init": ("punct", "random"),
    "head": ("projection", "linear", "mlp"),
    "classifier": ("auto", "linear", "ncm", "ensemble"),  # auto: each method's own
    "augment": ("none", "swap", "full"),
    "difficulty": ("types", "prototypes"),
    "device": ("auto", "cpu", "cuda"),
    "precision": ("auto", "bf16", "fp32"),
    "similarity": ("kl", "cosine"),
    "pacing": ("linear", "root", "step"),
    "direction": ("easy_first", "hard_first"),
    "meta_schedule": ("fixed", "linear", "sqrt"),
    "nas_method": ("darts1", "darts2", "idarts"),
    "relaxation": ("softmax", "gumbel", "sparse"),
    "executor": ("local", "ray"),
}
SECTIONS = {
    "data": DataConfig,
    "encoder": EncoderConfig,
    "train": TrainConfig,
    "cml": CMLConfig,
    "loss": LossConfig,
    "search": SearchConfig,
    "executor": ExecutorConfig,
}


def _build(cls, values: Any, source: str, prefix: str = ""):
    if not isinstance(values, dict):
        raise CMLInputError(f"{prefix or 'top level'}: expected a mapping", source)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise CMLInputError(f"unknown key {prefix}{unknown[0]} (known: {', '.join(fields)})", source)
    kwargs = {}
    for name, value in values.items():
        section = SECTIONS.get(name) if cls is RunConfig else None
        kwargs[name] = _build(section, value, source, f"{name}.") if section else value
    return cls(**kwargs)


def load_config(path: str | Path | None, overrides: dict[str, dict[str, Any]] | None = None) -> RunConfig:
    """The config file's values (if any), then the non-None `overrides` ({section or "": {key: value}})."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise CMLInputError("config file not found", path)
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise CMLInputError(f"malformed YAML: {str(e).splitlines()[0]}", path) from None
    config = RunConfig.from_dict(values, str(path or "config"))
    for section, items in (overrides or {}).items():
        target = getattr(config, section) if section else config
        for key, value in items.items():
            if value is not None:
                setattr(target, key, value)
    return config.check(str(path or "config"))
