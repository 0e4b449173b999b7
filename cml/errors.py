"""The error types users see, each printed by the CLI as one line.

Every problem with user input (files, flags, configs) is raised as `CMLInputError` with a
message that names the file and the problem; the CLI exits with 2. A run whose training
diverges stops with `DivergedError`, naming the cell, task, stage and step; the CLI exits with 1.
What a run can recover from by itself (a torn last result line, a corrupt cache entry or
checkpoint) is said in one `warn` line, and the run goes on.
"""

from __future__ import annotations

import sys
from pathlib import Path


class CMLInputError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = str(path) if path is not None else None
        super().__init__(f"{path}: {message}" if path is not None else message)


class DivergedError(ArithmeticError):
    """A non-finite training loss: the cell cannot give a meaningful number, so the run stops."""


def warn(message: str, path: str | Path | None = None) -> None:
    """A problem the run recovers from, as one line on stderr (naming the file where there is one)."""
    print(f"warning: {path}: {message}" if path is not None else f"warning: {message}", file=sys.stderr)
