"""Writing a file so that no reader ever sees part of it: the content goes to a temporary file
beside it, named for this writer alone (process id and a random suffix, so that two runs
filling the same cache entry never share one), then replaces the file in one rename."""

from __future__ import annotations

import os
import pickle
import secrets
from collections.abc import Callable
from pathlib import Path

import torch

# what torch.load raises for a file cut short, overwritten or not in its format
UNREADABLE = (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError)


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """`write(tmp)` to a temporary file of this writer, then rename it to `path`; on any failure
    the temporary file is removed and `path` is as it was."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        write(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomically(path: Path, text: str) -> None:
    write_atomically(path, lambda tmp: tmp.write_text(text))


def save_atomically(value: object, path: Path) -> None:
    """`torch.save(value, path)`, atomically. Saved through an open file, so the archive's inner
    name is torch's fixed one rather than the temporary file's: the same value, the same bytes."""

    def write(tmp: Path) -> None:
        with tmp.open("wb") as f:
            torch.save(value, f)

    write_atomically(path, write)
