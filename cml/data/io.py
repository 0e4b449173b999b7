"""Reading JSON input files with errors that name the file and the problem."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cml.errors import CMLInputError


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.exists():
        raise CMLInputError("file not found", path)
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise CMLInputError(f"malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}", path) from None
    except UnicodeDecodeError as e:
        raise CMLInputError(f"not UTF-8 text ({e.reason} at byte {e.start})", path) from None
