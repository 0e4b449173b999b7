"""The error types users see, each printed by the CLI as one line.

Every problem with user input (files, flags, configs) is raised as `CMLInputError` with a
message that names the file and the problem; the CLI exits with 2. A run whose training
diverges stops with `DivergedError`, naming the cell, task, stage and step; the CLI exits with 1.
"""

from __future__ import annotations

from pathlib import Path


class CMLInputError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = str(path) if path is not None else None
        super().__init__(f"{path}: {message}" if path is not None else message)


class DivergedError(ArithmeticError):
    """A non-finite training loss: the cell cannot give a meaningful number, so the run stops."""
