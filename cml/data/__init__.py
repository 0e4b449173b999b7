"""Datasets by name (`demo`, `fewrel`, `tacred`, and whatever a user registers), by path (FewRel's
JSON, pre-split or raw; the split files of RP-CRE / CRL or of CEAR), or on the Hugging Face hub
(`hf:ID`).

A name maps to a loader, a function of (data directory, seed) that returns a `RelationDataset`;
`@register("name")` adds one, and `--dataset name` then loads it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from cml.data.cre import MARKED_FILES, is_cear, load_cear, load_marked
from cml.data.demo import make_demo
from cml.data.download import CEAR_FEWREL, STANDARD_FEWREL, fetch, missing
from cml.data.fewrel import PRESPLIT_FILES, RAW_FILES, load_fewrel_dir, load_fewrel_file
from cml.data.hub import PREFIX as HUB_PREFIX
from cml.data.hub import load_hub_dataset
from cml.data.records import RelationDataset, RelationExample
from cml.data.tacred import load_tacred_dir
from cml.errors import CMLInputError

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "data"

__all__ = ["DATASETS", "RelationDataset", "RelationExample", "load_dataset", "register", "resolve_data_dir"]

Loader = Callable[[Path, int], RelationDataset]  # (data directory, seed) -> dataset
DATASETS: dict[str, Loader] = {}


def register(name: str) -> Callable[[Loader], Loader]:
    """Decorator: `--dataset name` calls the loader with `--data-dir` (else $CML_DATA_DIR, else
    data/<name>) and the run's seed (for loaders that draw a split)."""

    def add(loader: Loader) -> Loader:
        DATASETS[name] = loader
        return loader

    return add


def resolve_data_dir(dataset: str, data_dir: str | Path | None) -> Path:
    """`--data-dir`, else `$CML_DATA_DIR`, else the project's `data/<dataset>`."""
    if data_dir:
        return Path(data_dir)
    if os.environ.get("CML_DATA_DIR"):
        return Path(os.environ["CML_DATA_DIR"])
    return DEFAULT_ROOT / dataset


def _has_fewrel(directory: Path) -> bool:
    return all((directory / f).exists() for f in PRESPLIT_FILES) or all((directory / f).exists() for f in RAW_FILES)


@register("demo")
def _demo(directory: Path, seed: int) -> RelationDataset:
    return make_demo()


@register("fewrel")
def _fewrel(directory: Path, seed: int) -> RelationDataset:
    """FewRel's own JSON where the directory holds it (pre-split, or the raw release, which gets a
    seeded split of its own); else the standard continual-RE split, downloaded where missing."""
    if _has_fewrel(directory):
        return load_fewrel_dir(directory, seed)
    if missing((CEAR_FEWREL,), directory):
        fetch(STANDARD_FEWREL, directory)
    return load_cear(directory)


@register("tacred")
def _tacred(directory: Path, seed: int) -> RelationDataset:
    """The LDC release, or the continual-RE split files of CRL or CEAR placed in the directory."""
    if (directory / "data_with_marker_tacred.json").exists():
        return load_marked(directory / "data_with_marker_tacred.json")
    if is_cear(directory):
        return load_cear(directory)
    return load_tacred_dir(directory)


def load_dataset(name: str, data_dir: str | Path | None = None, seed: int = 0) -> RelationDataset:
    """Load a dataset by registered name, hub id or path; `seed` fixes the train/val/test split
    where one is drawn."""
    if name in DATASETS:
        return DATASETS[name](resolve_data_dir(name, data_dir), seed)
    if name.startswith(HUB_PREFIX):
        return load_hub_dataset(name, seed)
    path = Path(name)
    if path.name in MARKED_FILES or (path.is_dir() and any((path / f).exists() for f in MARKED_FILES)):
        return load_marked(path)
    if is_cear(path):
        return load_cear(path)
    if path.is_file():
        return load_fewrel_file(path, seed)
    if path.is_dir():
        return load_fewrel_dir(path, seed, name=path.name)
    raise CMLInputError(
        f"unknown dataset {name!r}: use one of {', '.join(DATASETS)}, {HUB_PREFIX}ID (Hugging Face), or a path to "
        "FewRel-format JSON (a file, a pre-split or raw directory), RP-CRE / CRL's data_with_marker*.json, "
        "or CEAR's data directory (task_order.json, Exp0/)"
    )
