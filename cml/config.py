"""Run configuration: dataclasses, loaded from YAML and overridden by command-line flags.

A config file mirrors these sections (`data:`, `encoder:`, `train:`) plus the top-level run
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


@dataclass
class EncoderConfig:
    name: str = "minilm"  # minilm (offline all-MiniLM-L6-v2), tiny (random, tests), a path or a hub id
    max_length: int = 128
    freeze_layers: int = 0  # freeze the embeddings and this many bottom layers (0: train everything)


@dataclass
class TrainConfig:
    methods: list[str] = field(default_factory=lambda: ["finetune", "replay", "joint"])
    epochs: int = 2
    batch_size: int = 32
    eval_batch_size: int = 128
    lr: float = 5e-5
    head_lr: float = 1e-3
    memory_size: int = 10  # examples kept per relation
    head: str = "linear"  # linear or mlp


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output: str = "runs/latest"
    seed: int = 2021
    device: str = "auto"  # auto, cpu or cuda

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> "RunConfig":
        return _build(cls, values, source)


SECTIONS = {"data": DataConfig, "encoder": EncoderConfig, "train": TrainConfig}


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
    return config
