"""A discrete head cell: for each intermediate node, the edges it keeps and the op on each.

Node numbering follows docs/method.md, "Head-cell search": nodes 0 and 1 are the `[E11]` and `[E21]` states
(projected to the cell width), intermediate nodes are 2, 3, ...; a node may only read nodes with
a smaller number. The JSON form is meant to be read by people:

    {"width": 128, "nodes": [{"node": 2, "edges": [{"from": 0, "op": "linear_relu"}, ...]}, ...]}
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from cml.errors import CMLInputError
from cml.nas.ops import OPS

N_INPUTS = 2


@dataclass(frozen=True)
class Edge:
    source: int
    op: str


@dataclass(frozen=True)
class Genotype:
    nodes: tuple[tuple[Edge, ...], ...]  # nodes[k] holds the edges into node k + N_INPUTS
    width: int

    def histogram(self) -> dict[str, int]:
        """How often each op was chosen: a cell full of `skip` is the known DARTS failure."""
        return dict(Counter(e.op for node in self.nodes for e in node))

    def to_dict(self) -> dict:
        return {
            "width": self.width,
            "nodes": [
                {"node": k + N_INPUTS, "edges": [{"from": e.source, "op": e.op} for e in node]}
                for k, node in enumerate(self.nodes)
            ],
        }

    def save(self, path: str | Path) -> None:
        """One line per node, so the file reads as the cell."""
        data = self.to_dict()
        nodes = ",\n".join(f"    {json.dumps(node)}" for node in data["nodes"])
        Path(path).write_text(f'{{\n  "width": {data["width"]},\n  "nodes": [\n{nodes}\n  ]\n}}\n')

    @classmethod
    def from_dict(cls, data: dict, source: str | Path = "genotype") -> Genotype:
        """Check everything a cell needs, naming the node and edge at fault."""

        def fail(message: str):
            raise CMLInputError(message, source)

        if not isinstance(data, dict) or not isinstance(data.get("nodes"), list) or not data["nodes"]:
            fail('expected {"width": W, "nodes": [{"node": 2, "edges": [{"from": 0, "op": ...}]}, ...]}')
        width = data.get("width")
        if not isinstance(width, int) or width <= 0:
            fail(f"width must be a positive integer, got {width!r}")
        nodes = []
        for k, entry in enumerate(data["nodes"]):
            node = k + N_INPUTS
            if not isinstance(entry, dict) or entry.get("node") != node:
                fail(f"entry {k} of nodes must be node {node} (nodes are numbered from {N_INPUTS}, in order)")
            edges = entry.get("edges")
            if not isinstance(edges, list) or not edges:
                fail(f"node {node} has no edges")
            kept = []
            for edge in edges:
                if not isinstance(edge, dict) or set(edge) != {"from", "op"}:
                    fail(f'node {node}: each edge is {{"from": <node>, "op": <op>}}, got {edge!r}')
                op, src = edge["op"], edge["from"]
                if op not in OPS or op == "none":
                    known = ", ".join(o for o in OPS if o != "none")
                    fail(f"node {node}: unknown op {op!r} (known: {known})")
                if not isinstance(src, int) or src < 0:
                    fail(f"node {node}: edge source {src!r} is not a node number")
                if src >= node:
                    fail(f"node {node}: edge from node {src}, which is not before it (a cell is a DAG)")
                kept.append(Edge(src, op))
            nodes.append(tuple(kept))
        return cls(tuple(nodes), width)

    @classmethod
    def load(cls, path: str | Path) -> Genotype:
        path = Path(path)
        if not path.is_file():
            raise CMLInputError("genotype file not found", path)
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise CMLInputError(f"malformed JSON: {e}", path) from None
        return cls.from_dict(data, path)
