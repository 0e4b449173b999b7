"""Run configuration: every option declared once, as a dataclass field whose metadata holds its
help, its allowed values, its lower bound and (where it is not `--<name>`) its flag. The YAML
loader, the command line (cml/cli.py, generated from `options()`) and the validation all read
those declarations; adding an option is adding a field.

A config file mirrors the sections (`data:`, `encoder:`, `train:`, `cml:`, `loss:`, `search:`,
`executor:`) plus the top-level run fields; an unknown key or a value of the wrong type is an
error that names the file, so a typo never passes silently.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cml.errors import CMLInputError
from cml.nas.genotype import Genotype
from cml.nas.search import SearchConfig

HEADS = ("projection", "linear", "mlp")


@dataclass(frozen=True)
class Interval:
    """The values a numeric option allows, written as in mathematics: "[1, inf)", "(0, 1]"."""

    low: float
    high: float
    low_open: bool
    high_open: bool

    @classmethod
    def parse(cls, text: str) -> Interval:
        left, right = text[0], text[-1]
        low, high = (float(part) for part in text[1:-1].split(","))
        assert left in "[(" and right in "])" and low < high, text
        return cls(low, high, left == "(", right == ")")

    def __contains__(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def __str__(self) -> str:
        return (
            f"{'(' if self.low_open else '['}{_number(self.low)}, {_number(self.high)}{')' if self.high_open else ']'}"
        )

    def words(self) -> str:
        """How an error and the help say it."""
        if self.high == float("inf"):
            return f"{'above' if self.low_open else 'at least'} {_number(self.low)}"
        if not (self.low_open or self.high_open):
            return f"between {_number(self.low)} and {_number(self.high)}"
        return f"in {self}"


def _number(x: float) -> str:
    return "inf" if x == float("inf") else str(int(x)) if x == int(x) else str(x)


def option(
    default: Any,
    help: str,
    *,
    choices: tuple | None = None,
    flag: str | None = None,
    domain: str | None = None,
    check: Callable[[Any], str | None] | None = None,
):
    """A config field with everything the CLI, the YAML loader and validation need. `domain` is
    the interval a number must lie in (`Interval`); `check` returns what is wrong with a value
    (None: nothing), for what choices and a domain cannot say."""
    metadata = {"help": help, "choices": choices, "flag": flag, "domain": domain, "check": check}
    metadata = {k: v for k, v in metadata.items() if v is not None}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def _types_source(value: str) -> str | None:
    if value in ("auto", "dataset", "induced") or Path(value).is_file():
        return None
    return "use auto, dataset, induced, or an existing type map file"


# --log-to: tracker -> (the module it needs, the extra that installs it); cml/trackers.py uses them
TRACKERS = {"tensorboard": ("tensorboard", "tensorboard"), "mlflow": ("mlflow", "mlflow"), "wandb": ("wandb", "wandb")}


def _trackers(names: list[str]) -> str | None:
    for name in names:
        if name not in TRACKERS:
            return f"use any of {', '.join(TRACKERS)}"
        module, extra = TRACKERS[name]
        if importlib.util.find_spec(module) is None:
            return f"--log-to {name} needs {module}: pip install -e '.[{extra}]'"
    return None


def _head(value: str) -> str | None:
    """A built-in head, or a genotype file of the head search that loads (else the file's problem)."""
    if value in HEADS:
        return None
    if not value.endswith(".json"):
        return f"use one of {', '.join(HEADS)} or a genotype .json file"
    try:
        Genotype.load(value)
    except CMLInputError as e:
        return str(e)
    return None


@dataclass
class DataConfig:
    dataset: str = option(
        "demo",
        "demo, fewrel, tacred, hf:ID[:SPLITS] (Hugging Face, FewRel-shaped), or a path: FewRel-format JSON (file, "
        "pre-split or raw directory), RP-CRE / CRL's data_with_marker*.json, or CEAR's data directory",
    )
    data_dir: str | None = option(None, "directory of the dataset's files (default $CML_DATA_DIR, else data/<dataset>)")
    max_per_relation: int | None = option(
        None, "cap on training examples per relation, for quick runs", domain="[1, inf)"
    )
    n_tasks: int | None = option(
        None,
        "number of tasks (default: the dataset's task_orders.json, else 10; demo 5)",
        flag="--tasks",
        domain="[1, inf)",
    )
    task_split: str = option("random", "how relations are cut into tasks", choices=("random", "clustered"))
    orders: int = option(5, "number of task orders", domain="[1, inf)")
    order_protocol: str | None = option(
        None,
        "where orders come from: file (task_orders.json), random (seeds 2021 + 100 i) or cyclic (shifts of one "
        "random split, as the CML paper); default: file when the dataset has one, else random",
        choices=("file", "random", "cyclic"),
    )
    curriculum_orders: bool = option(
        False, "also run order 0's tasks sorted by difficulty, easy to hard and hard to easy", flag="--curriculum-order"
    )
    eval_split: str = option(
        "test", "split the results are measured on: test, or val to choose settings", choices=("test", "val")
    )


@dataclass
class EncoderConfig:
    name: str = option(
        "minilm",
        "minilm (offline all-MiniLM-L6-v2), tiny (random, for tests), a local path or a hub id",
        flag="--encoder",
    )
    max_length: int = option(128, "maximum word pieces per sentence", domain="[8, inf)")
    freeze_layers: int = option(
        0, "freeze the embeddings and this many bottom encoder layers (0: train all)", domain="[0, inf)"
    )
    marker_init: str = option(
        "punct",
        "entity-marker embeddings: punct ([E11]/[E12] from '@', [E21]/[E22] from '#') or random",
        choices=("punct", "random"),
    )


@dataclass
class TrainConfig:
    methods: list[str] = option(["finetune", "replay", "joint"], "comma list of methods", flag="--method")
    epochs: int = option(2, "epochs of the learn stage", domain="[0, inf)")
    consolidate_epochs: int = option(10, "epochs of the consolidation stage (crl, cear, cml)", domain="[0, inf)")
    batch_size: int = option(16, "training batch size", domain="[1, inf)")
    eval_batch_size: int | None = option(
        None, "evaluation batch size (default: 128 on a CPU, 1024 on a GPU)", domain="[1, inf)"
    )
    length_window: int = option(
        50, "training batches are sorted by length within windows of this many (1: no sorting)", domain="[1, inf)"
    )
    precision: str = option(
        "auto",
        "bf16 autocast or fp32; auto: bf16 where the GPU or CPU multiplies bf16 natively",
        choices=("auto", "bf16", "fp32"),
    )
    eval_every: int = option(
        1,
        "evaluate after every k-th task and always after the last (1: every task); the rows between carry no "
        "accuracy, and the metrics use the tasks evaluated",
        domain="[1, inf)",
    )
    lr: float = option(5e-5, "learning rate of the encoder", domain="(0, inf)")
    projection_lr: float | None = option(
        None, "learning rate of the h and z projections (default: --lr, as CEAR)", domain="(0, inf)"
    )
    head_lr: float = option(1e-3, "learning rate of the classifier", domain="(0, inf)")
    memory_size: int = option(10, "memory examples kept per relation", domain="[1, inf)")
    head: str = option(
        "projection",
        "projection (Linear-GELU-LayerNorm), linear, mlp, or a genotype.json of --search-head",
        check=_head,
    )
    classifier: str = option(
        "auto",
        "test-time classifier for every method: linear, ncm (nearest prototype), ensemble; auto: each method's own",
        choices=("auto", "linear", "ncm", "ensemble"),
    )
    alpha: float = option(
        0.5, "ensemble weight of the linear head: alpha P_linear + (1 - alpha) P_ncm", domain="[0, 1]"
    )
    beta: float = option(
        0.5, "prototype weight of the dynamic (memory) mean: (1 - beta) static + beta dynamic", domain="[0, 1]"
    )
    augment: str = option(
        "full",
        "memory augmentation of cear and cml: none, swap (entity swap) or full (swap + concatenation)",
        choices=("none", "swap", "full"),
    )
    augment_max_length: int = option(256, "word pieces of a concatenated sentence at most", domain="[8, inf)")


@dataclass
class CMLConfig:
    """The curriculum-meta learner and the relation space it (and the reports) use."""

    types: str = option(
        "auto",
        "entity types: auto (the dataset's, else induced), dataset, induced, or a KG type map (JSON: entity id -> types)",
        check=_types_source,
    )
    n_types: int = option(32, "clusters for induced types", domain="[2, inf)")
    similarity: str = option(
        "kl", "relation similarity: kl (exp(-symmetrised KL / tau)) or cosine", choices=("kl", "cosine")
    )
    tau: float | None = option(
        None,
        "temperature of the kl similarity (default: the median off-diagonal divergence)",
        flag="--similarity-tau",
        domain="(0, inf)",
    )
    pacing: str = option("linear", "curriculum pacing", choices=("linear", "root", "step"))
    start_fraction: float = option(
        0.25, "fraction of the memory available at the first curriculum step", domain="(0, 1]"
    )
    direction: str = option("easy_first", "curriculum direction", choices=("easy_first", "hard_first"))
    meta_eps: float | None = option(
        None,
        "Reptile step size (default: the method's own, 0.5 for cml-2021 as published, 0.9 for cml)",
        domain="(0, 1]",
    )
    meta_schedule: str = option(
        "fixed",
        "Reptile step-size schedule: fixed, linear (eps (1 - k/K)) or sqrt",
        choices=("fixed", "linear", "sqrt"),
    )
    difficulty: str = option(
        "types",
        "what orders the curriculum: types (the relation space) or prototypes (cosine)",
        choices=("types", "prototypes"),
    )
    # The parts that put the difficulty where forgetting happens (docs/method.md, "Difficulty against
    # forgetting"). None: each method's own (cml/methods.py); a value sets it for every method.
    memory_allocation: str | None = option(
        None,
        "memory shares: uniform (--memory-size each) or difficulty (the same total, shared in proportion to each "
        "seen relation's similarity to the others, re-balanced every task); default: the method's own",
        choices=("uniform", "difficulty"),
    )
    replay_weighting: str | None = option(
        None,
        "consolidation replay (stages on the memory): uniform, or threat (an old relation's memory drawn in "
        "proportion to its similarity to the current task, a new one's to its similarity to the old relations); "
        "default: the method's own",
        choices=("uniform", "threat"),
    )
    prototype_drift: str | None = option(
        None,
        "static prototypes: fixed, or compensated (moved by the drift their memory shows, as SDC); default: the "
        "method's own",
        choices=("fixed", "compensated"),
    )
    meta_batches: int | None = option(
        None,
        "consolidation steps (stages on the memory) as first-order MER: sub-batches per step, each an SGD step "
        "of --meta-lr, the step taking their mean gradient along the path (1: off); default: the method's own",
        domain="[1, inf)",
    )
    meta_lr: float = option(0.1, "inner SGD learning rate of --meta-batches", domain="[0, inf)")
    threatened: int = option(
        8,
        "old relations whose memory joins a learn stage on task+threatened: those with the highest type similarity "
        "to a relation of the task",
        domain="[0, inf)",
    )
    type_margin: float | None = option(
        None,
        "consolidation (stages on the memory): pair margins m x sim(y, r) on the wrong relations' scores of the "
        "cross-entropy and prototype terms, so analogous relations are pushed further apart (0: off); default: "
        "the method's own",
        domain="[0, inf)",
    )
    reverse_similarity: float | None = option(
        None,
        "learn stages on the task, and a stage on the memory that has reversed classes (cml+directions): a "
        "relation at least this type-similar to its own reversal (domain and range "
        "swapped: the types cannot tell the direction) gets a reversed class for the stage, its sentences with "
        "head and tail swapped (ACA's reversed classes; a symmetric relation's keep its label; above 1: none); "
        "default: the method's own",
        domain="[0, inf)",
    )
    hybrid_pairs: str | None = option(
        None,
        "learn stages on the task: a hybrid class (ACA's) per pair of the task's relations, its sentences the head "
        "with 5 words of context from one relation's sentence and the tail with its context from the other's: none, "
        "aca (the first half of the task's relations with the second half) or analogous (the most type-similar "
        "pairs first); default: the method's own",
        choices=("none", "aca", "analogous"),
    )
    learn_softmax: str | None = option(
        None,
        "learn stages on the task: the cross-entropy's softmax over seen (every relation seen so far, so the "
        "task's sentences push the old relations' scores down) or task (the task's own classes, reversed and "
        "hybrid ones included: ER-ACE's asymmetric cross-entropy, which leaves old against new to the "
        "consolidation); default: the method's own",
        choices=("seen", "task"),
    )


@dataclass
class LossConfig:
    """The weight of every loss term (0 switches it off) and the terms' constants. Which terms a
    stage uses is part of its method (cml/methods.py)."""

    ce: float = option(1.0, "cross-entropy over the seen relations", domain="[0, inf)")
    supcon: float = option(1.0, "supervised contrastive loss against a feature bank (CRL)", domain="[0, inf)")
    proto: float = option(1.0, "InfoNCE against the relation prototypes (CEAR)", domain="[0, inf)")
    margin: float = option(0.5, "hard-negative prototype margin loss (CEAR's mu)", domain="[0, inf)")
    rkd: float = option(1.0, "relational distillation, no teacher pass (CRL)", domain="[0, inf)")
    fkd: float = option(1.1, "focal distillation of the linear head (CEAR's lambda2)", domain="[0, inf)")
    fkd_z: float = option(0.5, "focal distillation of the prototype scores (CEAR's lambda1)", domain="[0, inf)")
    margin_value: float = option(0.1, "the margin omega", domain="[0, inf)")
    tau: float = option(0.1, "temperature tau1 of the contrastive terms and the ensemble", domain="(0, inf)")
    analogy_tau: float = option(0.5, "temperature tau2 of the analogy weights", domain="(0, inf)")
    kappa: float = option(10.0, "temperature factor of relational distillation", domain="(0, inf)")
    gamma: float = option(1.25, "focusing exponent of focal distillation", domain="[0, inf)")
    bank_sample: int = option(500, "bank entries per step in CRL's first stage", domain="[1, inf)")


@dataclass
class ExecutorConfig:
    """Where the cells of a run execute (cml/executors.py). On a CPU a cell's numbers depend on its
    thread count, never on where it runs: the same seeds and `cpus_per_cell` give the same rows."""

    name: str = option(
        "local",
        "where the (method, order, seed) cells run: local (this process, one after another), processes (side by "
        "side on this CPU, a process each, as many as its cores hold at --cpus-per-cell threads) or ray (a Ray task "
        'each, side by side, here or on a cluster; pip install -e ".[ray]")',
        choices=("local", "processes", "ray"),
        flag="--executor",
    )
    ray_address: str | None = option(None, "ray: the cluster to join (auto, or host:port); default: start Ray here")
    cpus_per_cell: int | None = option(
        None,
        "threads of one cell, and the CPUs Ray reserves for it (default: all cores on local, 1 on processes and "
        "ray); on a CPU the numbers depend on it, so equal values give equal rows on every executor",
        domain="[1, inf)",
    )
    gpus_per_cell: float = option(
        0.0, "ray: GPUs one cell holds; a fraction lets cells share a GPU (0.25: four cells per GPU)", domain="[0, inf)"
    )


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    cml: CMLConfig = field(default_factory=CMLConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    output: str = option("runs/latest", "run directory")
    seed: int = option(2021, "seed of the run", domain="[0, 4294967295]")
    seeds: int = option(
        1,
        "runs of every (method, order) with seeds --seed, --seed + 1, ...: the report separates the variance of "
        "orders from that of seeds",
        domain="[1, inf)",
    )
    device: str = option("auto", "where the learner computes", choices=("auto", "cpu", "cuda"))
    log_to: list[str] = option(
        [], "experiment trackers to stream the run to: tensorboard, mlflow, wandb (any subset)", check=_trackers
    )
    mlflow_uri: str | None = option(None, "MLflow tracking URI (default: the file store mlruns/ here)")
    plots: str = option(
        "png",
        "the report's plots: png (five PNG files beside report.md) or none (report.json and report.md alone, for "
        "grids of many small runs: drawing them costs about a second a report)",
        choices=("png", "none"),
    )

    def check(self, source: str = "config") -> RunConfig:
        """Every option against its declaration, then what only a combination can get wrong;
        before anything runs."""
        for opt in options():
            problem = opt.problem(opt.get(self))
            if problem:
                raise CMLInputError(f"{opt.key} is {opt.get(self)!r}; {problem}", source)
        ex = self.executor
        if ex.name != "ray" and (ex.gpus_per_cell or ex.ray_address is not None):
            raise CMLInputError(
                "executor.gpus_per_cell and executor.ray_address apply to the ray executor; "
                f"the {ex.name} one runs on --device (add --executor ray)",
                source,
            )
        return self

    def run_seeds(self) -> list[int]:
        """The seeds every (method, order) runs with: seed, seed + 1, ..., seed + seeds - 1."""
        return [self.seed + s for s in range(self.seeds)]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> RunConfig:
        return _build(cls, values, source)


SECTIONS = {
    f.name: f.default_factory for f in dataclasses.fields(RunConfig) if dataclasses.is_dataclass(f.default_factory)
}
# flags of a section's options are --<prefix><name> unless the declaration names its flag
FLAG_PREFIX = {"loss": "loss-", "search": "search-"}


@dataclass(frozen=True)
class Option:
    """One declared option, as the CLI, the YAML loader and validation see it."""

    section: str  # "" for the top level
    name: str
    kind: type  # int, float, str, bool or list (of str)
    optional: bool  # None allowed
    default: Any
    help: str
    flag: str
    choices: tuple | None = None
    domain: Interval | None = None
    check: Callable[[Any], str | None] | None = None

    @property
    def key(self) -> str:
        return f"{self.section}.{self.name}" if self.section else self.name

    def get(self, config: RunConfig) -> Any:
        return getattr(getattr(config, self.section) if self.section else config, self.name)

    def problem(self, value: Any) -> str | None:
        """What is wrong with `value` for this option, or None."""
        if value is None:
            return None if self.optional else "a value is required"
        if self.kind is list:
            if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                return "expected a list of names"
        elif self.kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return "expected a number"
        elif isinstance(value, bool) != (self.kind is bool) or not isinstance(value, self.kind):
            return (
                f"expected {'true or false' if self.kind is bool else 'an integer' if self.kind is int else 'a string'}"
            )
        if self.choices is not None and value not in self.choices:
            return f"use one of {', '.join(self.choices)}"
        if self.domain is not None and value not in self.domain:
            return f"it must be {self.domain.words()}"
        return self.check(value) if self.check else None


def _kind(hint) -> tuple[type, bool]:
    """(int | float | str | bool | list, whether None is allowed) of a field's type hint."""
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        (inner,) = [a for a in args if a is not type(None)]
        return _kind(inner)[0], True
    return (typing.get_origin(hint) or hint), False


def _options_of(cls, section: str) -> list[Option]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if f.name in SECTIONS and cls is RunConfig:
            continue
        kind, optional = _kind(hints[f.name])
        m = f.metadata
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        flag = m.get("flag") or "--" + FLAG_PREFIX.get(section, "") + f.name.replace("_", "-")
        out.append(
            Option(
                section,
                f.name,
                kind,
                optional,
                default,
                m["help"],
                flag,
                m.get("choices"),
                Interval.parse(m["domain"]) if "domain" in m else None,
                m.get("check"),
            )
        )
    return out


def flatten(d: dict, prefix: str = "") -> dict:
    """A nested config dict as {"section.key": value}."""
    out = {}
    for k, v in d.items():
        out.update(flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def first_difference(a: dict, b: dict, free: tuple[str, ...]) -> tuple[str, Any, Any] | None:
    """(key, a's value, b's value) of the first option two nested config dicts set differently,
    leaving out the keys in `free` and the sections they name; None where they agree."""
    a, b = flatten(a), flatten(b)
    for key in sorted(set(a) | set(b)):
        if not any(key == k or key.startswith(k + ".") for k in free) and a.get(key) != b.get(key):
            return key, a.get(key), b.get(key)
    return None


def options() -> list[Option]:
    """Every option of a run, section by section, then the top-level ones."""
    return [o for name, cls in SECTIONS.items() for o in _options_of(cls, name)] + _options_of(RunConfig, "")


def choices(key: str) -> tuple:
    """The allowed values of an option, by its key (e.g. `train.augment`)."""
    return next(o.choices for o in options() if o.key == key)


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
