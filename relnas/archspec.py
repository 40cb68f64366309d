"""The structure of a search space, shared by every supernet: ``ArchSpec`` (edges, ops, masks,
op parameter counts and costs of one cell kind), ``MixedEdge`` (the weighted sum of an edge's
candidate ops) and the helpers that name weight groups. ``relnas.space`` builds the supernets.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
from torch import nn

from relnas import ops

Edge = tuple[int, int]


@dataclass(frozen=True)
class ArchSpec:
    """Structure of one cell kind.

    ``edges[e] = (src, dst)`` in edge order (the row order of the weight tensor);
    ``mask[e][k]`` is False where op ``k`` is not allowed on edge ``e``;
    ``param_free[k]`` tells whether op ``k`` is parameter-free;
    ``op_params[e][k]`` is the parameter count of op ``k`` on edge ``e`` (0 where masked; empty
    when unknown, then ``cost`` falls back to ``param_free``).
    """

    op_names: tuple[str, ...]
    edges: tuple[Edge, ...]
    mask: tuple[tuple[bool, ...], ...]
    param_free: tuple[bool, ...]
    op_params: tuple[tuple[int, ...], ...] = ()

    def __post_init__(self):
        if len(self.mask) != len(self.edges) or any(len(r) != len(self.op_names) for r in self.mask):
            raise ValueError("mask must have shape (n_edges, n_ops)")
        if len(self.param_free) != len(self.op_names):
            raise ValueError("param_free must have one flag per op")
        if any(src >= dst for src, dst in self.edges):
            raise ValueError("edges must go from a lower to a higher vertex")
        if self.op_params and (len(self.op_params) != len(self.edges)
                               or any(len(r) != len(self.op_names) for r in self.op_params)):
            raise ValueError("op_params must have shape (n_edges, n_ops)")

    def cost(self) -> torch.Tensor:
        """``(n_edges, n_ops)`` cost of each (edge, op) in [0, 1]: its parameter count over the
        largest count among the ops allowed on the same edge (method.md 3: cost normalized per
        edge). Parameter-free ops cost 0; masked entries 0. Without ``op_params``: 0 for
        parameter-free ops, 1 for the others."""
        return normalized_cost(self.params(), dim=1)

    def params(self) -> torch.Tensor:
        """``(n_edges, n_ops)`` float64 parameter count of each (edge, op), 0 where masked;
        without ``op_params``: 1 for ops with weights, 0 for parameter-free ops."""
        mask = self.mask_tensor(torch.float64)
        if self.op_params:
            return torch.tensor(self.op_params, dtype=torch.float64) * mask
        return (1.0 - torch.tensor(self.param_free, dtype=torch.float64)) * mask

    @property
    def n_edges(self) -> int:
        return len(self.edges)

    @property
    def n_ops(self) -> int:
        return len(self.op_names)

    @property
    def dst_vertices(self) -> tuple[int, ...]:
        """Vertices with incoming edges, ascending."""
        return tuple(sorted({dst for _, dst in self.edges}))

    @property
    def input_vertices(self) -> tuple[int, ...]:
        """Vertices that are never a destination (the inputs), ascending."""
        dsts = set(self.dst_vertices)
        return tuple(sorted({src for src, _ in self.edges} - dsts))

    @property
    def zero_index(self) -> int | None:
        """Index of the zero op (``zero`` / ``none``), or None when the op set has none."""
        return next((k for k, n in enumerate(self.op_names) if ops.is_zero_op(n)), None)

    def incoming(self, vertex: int) -> tuple[int, ...]:
        """Indices of the edges ending at ``vertex``."""
        return tuple(e for e, (_, dst) in enumerate(self.edges) if dst == vertex)

    def edge_index(self, src: int, dst: int) -> int:
        return self.edges.index((src, dst))

    def mask_tensor(self, dtype=torch.bool, device=None) -> torch.Tensor:
        """The mask as an ``(n_edges, n_ops)`` tensor."""
        return torch.tensor(self.mask, dtype=dtype, device=device)


def normalized_cost(params: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``params`` over their largest value along ``dim`` (0 where that largest value is 0)."""
    top = params.amax(dim=dim, keepdim=True)
    return torch.where(top > 0, params / top.clamp_min(1.0e-12), torch.zeros_like(params))


class MixedEdge(nn.Module):
    """One edge ``j -> i`` holding one module per allowed op: ``x -> sum_k w[k] f_k(x)``."""

    def __init__(self, modules: Mapping[str, nn.Module], op_names: Sequence[str]):
        super().__init__()
        self.ops = nn.ModuleDict(modules)
        # (column of the weight row, op module name) for the allowed ops only
        self.columns = [(k, name) for k, name in enumerate(op_names) if name in self.ops]
        # The zero op adds nothing (and its weight gets a zero gradient either way): skipped
        # unless it is the only op allowed on the edge.
        computed = [(k, n) for k, n in self.columns if not ops.is_zero_op(n)] or self.columns
        self._computed = computed
        self._index: dict[torch.device, torch.Tensor] = {}  # columns of computed ops, per device

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        outs = [self.ops[name](x) for _, name in self._computed]
        if len(outs) == 1:
            return w[self._computed[0][0]] * outs[0]
        # one weighted sum over the stacked outputs instead of a multiply and an add per op
        cols = self._index.get(w.device)
        if cols is None:
            cols = self._index[w.device] = torch.tensor([k for k, _ in self._computed],
                                                        device=w.device)
        stacked = torch.stack(outs)  # bf16 under autocast (relnas.fast): the weights follow
        return torch.tensordot(w.index_select(0, cols).to(stacked.dtype), stacked, 1)


def _check_weights(weights: Mapping[str, torch.Tensor], specs: Mapping[str, ArchSpec]) -> None:
    for kind, spec in specs.items():
        if kind not in weights:
            raise ValueError(f"weights lack cell kind {kind!r}; expected keys {sorted(specs)}")
        if tuple(weights[kind].shape) != (spec.n_edges, spec.n_ops):
            raise ValueError(f"weights[{kind!r}] has shape {tuple(weights[kind].shape)}, "
                             f"expected {(spec.n_edges, spec.n_ops)}")


def _edge_groups(prefix: str, edge_tag: str, edges: Sequence[MixedEdge]) -> dict[str, list[str]]:
    """One group ``{edge_tag}.e{e}.{op}`` per (edge, op) with parameters; names under ``prefix``."""
    groups = {}
    for e, edge in enumerate(edges):
        for name, module in edge.ops.items():
            params = [f"{prefix}.{e}.ops.{name}.{p}" for p, _ in module.named_parameters()]
            if params:
                groups[f"{edge_tag}.e{e}.{name}"] = params
    return groups


def _op_params(built: Mapping[str, nn.Module], op_names: Sequence[str]) -> tuple[int, ...]:
    """Parameter count of each op of one edge (0 for an op not built there)."""
    return tuple(sum(p.numel() for p in built[n].parameters()) if n in built else 0
                 for n in op_names)


def _module_group(module: nn.Module, prefix: str) -> list[str]:
    return [f"{prefix}.{p}" for p, _ in module.named_parameters()]
