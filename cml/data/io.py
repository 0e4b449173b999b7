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


def read_by_relation(path: str | Path, keys: tuple[str, ...]) -> dict[str, list[tuple[str, dict]]]:
    """A JSON object `{relation: [records]}` whose records are objects holding `keys`; each
    record comes with where it is ("relation R, example i"), for the errors of its reader."""
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, dict):
        raise CMLInputError("expected a JSON object {relation: [examples]}", path)
    out = {}
    for relation, items in data.items():
        if not isinstance(items, list):
            raise CMLInputError(f"relation {relation}: expected a list of examples", path)
        out[relation] = [(f"relation {relation}, example {i}", item) for i, item in enumerate(items)]
        for where, item in out[relation]:
            if not isinstance(item, dict) or not set(keys) <= item.keys():
                raise CMLInputError(f"{where}: expected keys {', '.join(keys)}", path)
    return out
