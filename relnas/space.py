"""Search spaces: supernets that are functions of (x, structure weights).

A supernet is a DAG whose vertex ``i`` mixes every candidate op on every incoming edge::

    v_i = sum_{j<i} sum_k gamma[i,j,k] f_k(v_j)

It never samples and never normalizes: ``forward(x, weights)`` takes ``weights: dict[str, Tensor]``
mapping a cell kind to a dense ``(n_edges, n_ops)`` tensor, ``weights[kind][e, k] = gamma`` of op
``k`` on edge ``e`` (any nonnegative values; the ``Architecture`` in ``relax.py`` puts them on a
simplex). Entries of masked (edge, op) pairs are ignored. ``arch_spec()`` describes the structure,
``weight_groups()`` the parameter groups of the Gaussian weight prior with per-group precision A.

- ``MLPSupernet``: one DAG, kind ``"dag"``; vertex 0 is the input, 1..n_hidden are hidden.
- ``ConvSupernet``: the DARTS search network, kinds ``"normal"`` and ``"reduce"`` (each cell of a
  kind shares the same weights); vertices 0, 1 are the cell inputs, 2.. the intermediate nodes.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn

from relnas import ops
from relnas.archspec import (ArchSpec, Edge, MixedEdge, _check_weights,  # noqa: F401 (API)
                             _edge_groups, _module_group, _op_params)

READOUTS = ("last", "sum")  # what the MLP head reads: the last hidden vertex, or their sum


class MLPSupernet(nn.Module):
    """Fully connected DAG over ``n_hidden`` vertices of size ``width`` and a linear head.

    Vertex 0 is the flattened input ``(B, in_dim)``; every pair ``0 <= j < i <= n_hidden`` is an
    edge, ordered by ``i`` then ``j``. The head reads the last vertex (``readout="last"``) or
    the sum of the hidden vertices (``"sum"``: each of them reaches the output). Ops that need equal
    dimensions (identity) are masked on edges where the dims differ, and no module is built.
    """

    space = "mlp"

    def __init__(self, in_dim: int, out_dim: int, n_hidden: int, width: int,
                 op_names: Sequence[str] = ops.MLP_PRIMITIVES, readout: str = "last"):
        super().__init__()
        if n_hidden < 1:
            raise ValueError(f"n_hidden must be >= 1, got {n_hidden}")
        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
        self.readout = readout
        self.in_dim, self.out_dim, self.n_hidden, self.width = in_dim, out_dim, n_hidden, width
        self.op_names = ops.check_op_names(ops.MLP_OPS, op_names)
        self.edge_list = tuple((j, i) for i in range(1, n_hidden + 1) for j in range(i))
        self.edges = nn.ModuleList()
        mask, op_params = [], []
        for src, _ in self.edge_list:
            d_in = in_dim if src == 0 else width
            allowed = [not ops.MLP_OPS[n].same_dim or d_in == width for n in self.op_names]
            if not any(allowed):
                raise ValueError(f"no op of {self.op_names} fits edge {src} -> (dim {width})")
            mask.append(tuple(allowed))
            built = {n: ops.build_mlp_op(n, d_in, width)
                     for n, ok in zip(self.op_names, allowed) if ok}
            self.edges.append(MixedEdge(built, self.op_names))
            op_params.append(_op_params(built, self.op_names))
        self._spec = ArchSpec(self.op_names, self.edge_list, tuple(mask),
                              tuple(ops.MLP_OPS[n].param_free for n in self.op_names),
                              tuple(op_params))
        self.head = nn.Linear(width, out_dim)

    def arch_spec(self) -> dict[str, ArchSpec]:
        return {"dag": self._spec}

    def weight_groups(self) -> dict[str, list[str]]:
        groups = _edge_groups("edges", "dag", self.edges)
        groups["head"] = _module_group(self.head, "head")
        return groups

    def forward(self, x: torch.Tensor, weights: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``x``: ``(B, *)`` flattened to ``(B, in_dim)``; returns ``(B, out_dim)``."""
        _check_weights(weights, self.arch_spec())
        w = weights["dag"]
        states = [x.flatten(1)]
        e = 0
        for i in range(1, self.n_hidden + 1):
            states.append(sum(self.edges[e + j](states[j], w[e + j]) for j in range(i)))
            e += i
        return self.head(states[-1] if self.readout == "last" else sum(states[1:]))


def stem(C_in: int, C_out: int, stride: int = 1) -> nn.Sequential:
    """Conv 3x3 -> BN; ``stride=2`` halves H and W before the first cell (a cheaper small net)."""
    if stride not in (1, 2):
        raise ValueError(f"stem stride must be 1 or 2, got {stride}")
    return nn.Sequential(nn.Conv2d(C_in, C_out, 3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(C_out))


def preprocess(C_pp: int, C_p: int, C: int, reduction_prev: bool, affine: bool):
    """The two input adapters of a DARTS cell: ``c_{k-2}`` (halved if the previous cell reduced)
    and ``c_{k-1}``, both to ``C`` channels."""
    pre0 = (ops.FactorizedReduce(C_pp, C, affine) if reduction_prev
            else ops.ReLUConvBN(C_pp, C, 1, 1, 0, affine))
    return pre0, ops.ReLUConvBN(C_p, C, 1, 1, 0, affine)


def cell_edges(n_nodes: int) -> tuple[Edge, ...]:
    """DARTS cell edges in order: node ``2+i`` gets edges from vertices ``0 .. 1+i``."""
    return tuple((j, 2 + i) for i in range(n_nodes) for j in range(2 + i))


def reduction_layers(layers: int) -> tuple[int, int]:
    """Indices of the reduction cells: 1/3 and 2/3 of the depth (DARTS)."""
    return layers // 3, 2 * layers // 3


class SearchCell(nn.Module):
    """A DARTS search cell: every edge is a MixedEdge; output = concat of the intermediate nodes."""

    def __init__(self, n_nodes: int, C_pp: int, C_p: int, C: int, reduction: bool,
                 reduction_prev: bool, op_names: Sequence[str], affine: bool):
        super().__init__()
        self.reduction, self.n_nodes = reduction, n_nodes
        self.preprocess0, self.preprocess1 = preprocess(C_pp, C_p, C, reduction_prev, affine)
        self.edges = nn.ModuleList()
        for src, _ in cell_edges(n_nodes):
            stride = 2 if reduction and src < 2 else 1
            built = {n: ops.build_conv_op(n, C, stride, affine) for n in op_names}
            self.edges.append(MixedEdge(built, op_names))

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        e = 0
        for _ in range(self.n_nodes):
            states.append(sum(self.edges[e + j](h, w[e + j]) for j, h in enumerate(states)))
            e += len(states) - 1
        return torch.cat(states[2:], dim=1)


class ConvSupernet(nn.Module):
    """The DARTS search network: stem, ``layers`` cells (reduction at 1/3 and 2/3 depth, channels
    doubled there), global average pooling and a linear classifier.

    ``x``: ``(B, C_in, H, W)``; stride-2 steps round odd sizes up (MNIST 28x28 with a stride-2
    stem: 14 -> 7 -> 4).
    """

    space = "conv"

    def __init__(self, C_in: int, n_classes: int, C: int = 16, layers: int = 8, n_nodes: int = 4,
                 stem_multiplier: int = 3, op_names: Sequence[str] = ops.DARTS_PRIMITIVES,
                 affine: bool = False, stem_stride: int = 1):
        super().__init__()
        self.C_in, self.n_classes, self.C, self.layers = C_in, n_classes, C, layers
        self.n_nodes, self.stem_multiplier, self.affine = n_nodes, stem_multiplier, affine
        self.op_names = ops.check_op_names(ops.CONV_OPS, op_names)
        C_curr = stem_multiplier * C
        self.stem = stem(C_in, C_curr, stem_stride)
        C_pp, C_p, C_curr = C_curr, C_curr, C
        self.cells = nn.ModuleList()
        reduction_prev = False
        for layer in range(layers):
            reduction = layer in reduction_layers(layers)
            C_curr = C_curr * 2 if reduction else C_curr
            self.cells.append(SearchCell(n_nodes, C_pp, C_p, C_curr, reduction, reduction_prev,
                                         self.op_names, affine))
            reduction_prev = reduction
            C_pp, C_p = C_p, n_nodes * C_curr
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_p, n_classes)
        edges = cell_edges(n_nodes)
        mask = tuple((True,) * len(self.op_names) for _ in edges)
        param_free = tuple(ops.CONV_OPS[n].param_free for n in self.op_names)
        # Op costs per kind from the kind's first cell (a reduction cell's skip_connect on an
        # input edge is a FactorizedReduce with weights); relative costs are the same in the
        # later cells of a kind, whose channel counts differ.
        self._specs = {}
        for kind, reduction in (("normal", False), ("reduce", True)):
            cell = next((c for c in self.cells if c.reduction == reduction), None)
            op_params = tuple(_op_params(edge.ops, self.op_names) for edge in cell.edges) \
                if cell is not None else ()
            self._specs[kind] = ArchSpec(self.op_names, edges, mask, param_free, op_params)

    def arch_spec(self) -> dict[str, ArchSpec]:
        return dict(self._specs)

    def weight_groups(self) -> dict[str, list[str]]:
        groups = {"stem": _module_group(self.stem, "stem")}
        for layer, cell in enumerate(self.cells):
            for pre in ("preprocess0", "preprocess1"):
                groups[f"cells.{layer}.{pre}"] = _module_group(getattr(cell, pre),
                                                               f"cells.{layer}.{pre}")
            groups.update(_edge_groups(f"cells.{layer}.edges", f"cells.{layer}", cell.edges))
        groups["classifier"] = _module_group(self.classifier, "classifier")
        return {g: names for g, names in groups.items() if names}

    def forward(self, x: torch.Tensor, weights: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Returns logits ``(B, n_classes)``."""
        _check_weights(weights, self.arch_spec())
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, weights["reduce" if cell.reduction else "normal"])
        return self.classifier(self.pool(s1).flatten(1))


def uniform_weights(specs: Mapping[str, ArchSpec], dtype=torch.float32,
                    device=None) -> dict[str, torch.Tensor]:
    """Per edge, ``1 / n_allowed`` on allowed ops and 0 on masked ones (the DARTS initial mean)."""
    out = {}
    for kind, spec in specs.items():
        mask = spec.mask_tensor(dtype, device)
        out[kind] = mask / mask.sum(dim=1, keepdim=True)
    return out


def one_hot_weights(specs: Mapping[str, ArchSpec], choices: Mapping[str, Sequence[str]],
                    dtype=torch.float32, device=None) -> dict[str, torch.Tensor]:
    """``choices[kind][e]`` is the op name chosen on edge ``e``; weight 1 there, 0 elsewhere."""
    out = {}
    for kind, spec in specs.items():
        names = choices[kind]
        if len(names) != spec.n_edges:
            raise ValueError(f"{kind!r}: {len(names)} choices for {spec.n_edges} edges")
        w = torch.zeros(spec.n_edges, spec.n_ops, dtype=dtype, device=device)
        for e, name in enumerate(names):
            if name not in spec.op_names:
                raise ValueError(f"unknown op {name!r}; allowed: {list(spec.op_names)}")
            k = spec.op_names.index(name)
            if not spec.mask[e][k]:
                raise ValueError(f"op {name!r} is masked on edge {e} {spec.edges[e]}")
            w[e, k] = 1.0
        out[kind] = w
    return out
