"""``Genotype``: a discrete architecture of either search space, with a JSON round trip.

A genotype lists the kept edges ``(op, src, dst)`` of each cell kind; ``relnas.derive`` makes one
from structure weights, ``relnas.nets.build_network`` turns one into an ``nn.Module``.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from relnas import ops

KeptEdge = tuple[str, int, int]  # (op name, src vertex, dst vertex)


@dataclass(frozen=True)
class Genotype:
    """A discrete architecture of either space.

    ``cells``: ``((kind, ((op, src, dst), ...)), ...)``; kinds ``"dag"`` (mlp) or
    ``"normal"``/``"reduce"`` (conv). ``in_dim``: input features (mlp) or channels (conv);
    ``out_dim``: outputs or classes. MLP only: ``width``, ``n_hidden``, ``readout`` (the head reads
    the ``"last"`` hidden vertex or the ``"sum"`` of those with an input). Conv only: ``n_nodes`` and
    ``concat``, the vertices concatenated into the cell output (intermediate nodes are 2..).
    """

    space: str
    cells: tuple[tuple[str, tuple[KeptEdge, ...]], ...]
    in_dim: int
    out_dim: int
    width: int = 0
    n_hidden: int = 0
    n_nodes: int = 0
    concat: tuple[int, ...] = ()
    rule: str = ""  # the discretization rule that chose the edges (``derive.rule_name``)
    readout: str = "last"

    def __post_init__(self):
        if self.space not in ("mlp", "conv"):
            raise ValueError(f"space must be 'mlp' or 'conv', got {self.space!r}")
        registry = ops.MLP_OPS if self.space == "mlp" else ops.CONV_OPS
        for _, edges in self.cells:
            for op, src, dst in edges:
                ops.get_op(registry, op)
                if not 0 <= src < dst:
                    raise ValueError(f"edge {op}: {src} -> {dst} must go forward")
        if self.readout not in ("last", "sum"):
            raise ValueError(f"readout must be 'last' or 'sum', got {self.readout!r}")

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(kind for kind, _ in self.cells)

    def edges(self, kind: str) -> tuple[KeptEdge, ...]:
        return dict(self.cells)[kind]

    def with_edges(self, edges: Mapping[str, Sequence[KeptEdge]]) -> "Genotype":
        """A copy with the edges of each kind in ``edges`` replaced (sorted by (dst, src))."""
        cells = dict(self.cells)
        cells.update({k: tuple(sorted(map(tuple, e), key=lambda t: (t[2], t[1])))
                      for k, e in edges.items()})
        return dataclasses.replace(self, cells=tuple(cells.items()))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["cells"] = {kind: [list(e) for e in edges] for kind, edges in self.cells}
        d["concat"] = list(self.concat)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Genotype":
        d = dict(d)
        d["cells"] = tuple((kind, tuple((str(op), int(s), int(t)) for op, s, t in edges))
                           for kind, edges in d["cells"].items())
        d["concat"] = tuple(int(v) for v in d.get("concat", ()))
        return cls(**d)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, s: str) -> "Genotype":
        return cls.from_dict(json.loads(s))

