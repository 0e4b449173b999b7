"""The on-disk cache of what a run computes once and reuses: tokenised splits, frozen-layer
states, induced entity types, the head search's features. Entries are keyed by a fingerprint of
everything they depend on, so a stale entry is never read."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from cml.data import DEFAULT_ROOT
from cml.errors import warn
from cml.files import UNREADABLE, save_atomically


def cache_dir() -> Path:
    """`$CML_CACHE_DIR`, else the project's data/cache."""
    return Path(os.environ.get("CML_CACHE_DIR", DEFAULT_ROOT / "cache"))


def fingerprint(*parts: object) -> str:
    h = hashlib.sha1()
    for p in parts:
        h.update(repr(p).encode())
    return h.hexdigest()[:16]


def memo(path: Path | None, compute):
    """`compute()`, saved to `path` (atomically) the first time and loaded from it after. An
    entry that cannot be read (cut short, overwritten, not torch's format) is derived data: it
    is said in one line, computed again and replaced."""
    if path is None:
        return compute()
    if path.exists():
        try:
            return torch.load(path)
        except UNREADABLE as e:
            warn(f"unreadable cache entry ({e.__class__.__name__}): computing it again", path)
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_atomically(value, path)
    return value
