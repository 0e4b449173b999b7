"""The one error type users see.

Every problem with user input (files, flags, configs) is raised as `CMLInputError` with a
message that names the file and the problem; the CLI prints it on one line and exits with 2.
"""

from __future__ import annotations

from pathlib import Path


class CMLInputError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = str(path) if path is not None else None
        super().__init__(f"{path}: {message}" if path is not None else message)
