"""From structure weights to a discrete network: discretization, relevance, pruning, rebuilding.

With structure weights ``gamma`` (``weights[kind]``, shape ``(n_edges, n_ops)``, see ``space``):

- ``derive_vertex`` (``simplex="vertex"``, method.md 1): each vertex keeps its ``top_k``
  highest-mass (edge, op) pairs (default 1), or every pair with mass >= ``threshold`` (at least
  one), the zero op never; the prior shaped exactly this choice.
- ``derive``: on each edge keep ``argmax_k gamma[i,j,k]`` over the allowed non-zero ops. Conv cells
  (``top_k=2``) then keep the ``k`` incoming edges of each vertex with the largest such weight
  (DARTS). The MLP DAG (``top_k=None``) keeps an edge only where that op beats the zero op, i.e.
  where ``argmax`` over all allowed ops (zero included, ties to zero) is not zero; a vertex left
  without incoming edges keeps its best one, so that every vertex stays computable.
- ``relevance``: the mass of (edge, op) under the structure distribution, normalized per vertex:
  ``r[i,j,k] = gamma[i,j,k] / sum_{j',k'} gamma[i,j',k']``; the relevance of an edge is the mass of
  its non-zero ops. Pass the mean of the structure distribution as ``weights``.
- ``prune``: drop the least relevant edges (below a threshold, or until a parameter budget holds)
  without ever disconnecting the output.
- ``Genotype`` (JSON round trip) -> ``build_network`` -> ``nn.Module`` with a plain ``forward(x)``;
  ``load_from_supernet`` copies the chosen ops' parameters from a supernet.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from relnas import ops
from relnas.space import ArchSpec, ConvSupernet, MLPSupernet, preprocess, reduction_layers, stem

KeptEdge = tuple[str, int, int]  # (op name, src vertex, dst vertex)


@dataclass(frozen=True)
class Genotype:
    """A discrete architecture of either space.

    ``cells``: ``((kind, ((op, src, dst), ...)), ...)``; kinds ``"dag"`` (mlp) or
    ``"normal"``/``"reduce"`` (conv). ``in_dim``: input features (mlp) or channels (conv);
    ``out_dim``: outputs or classes. MLP only: ``width``, ``n_hidden``. Conv only: ``n_nodes`` and
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
    rule: str = ""  # the discretization rule that chose the edges (``rule_name``); "" = unknown

    def __post_init__(self):
        if self.space not in ("mlp", "conv"):
            raise ValueError(f"space must be 'mlp' or 'conv', got {self.space!r}")
        registry = ops.MLP_OPS if self.space == "mlp" else ops.CONV_OPS
        for _, edges in self.cells:
            for op, src, dst in edges:
                ops.get_op(registry, op)
                if not 0 <= src < dst:
                    raise ValueError(f"edge {op}: {src} -> {dst} must go forward")

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


# ---------------------------------------------------------------------------- discretization
def _best_nonzero(spec: ArchSpec, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per edge, the best allowed non-zero op and its weight (-inf where there is none)."""
    allowed = spec.mask_tensor()
    if spec.zero_index is not None:
        allowed[:, spec.zero_index] = False
    strength, best = w.masked_fill(~allowed, float("-inf")).max(dim=1)
    return best, strength


def derive(specs: Mapping[str, ArchSpec], weights: Mapping[str, torch.Tensor],
           top_k: int | None = None) -> dict[str, tuple[KeptEdge, ...]]:
    """Kept edges ``(op, src, dst)`` per kind, in edge order (rules in the module docstring).

    Dangling vertices are not removed here; ``connected`` does that once the space is known.
    """
    out = {}
    for kind, spec in specs.items():
        w = weights[kind].detach().to("cpu", torch.float64)
        best, strength = _best_nonzero(spec, w)
        keep = set()
        if top_k is None:
            z = spec.zero_index
            zero_w = w[:, z].masked_fill(~spec.mask_tensor()[:, z], float("-inf")) \
                if z is not None else torch.full_like(strength, float("-inf"))
            keep = {e for e in range(spec.n_edges) if strength[e] > zero_w[e]}
        for v in spec.dst_vertices:
            incoming = [e for e in spec.incoming(v) if strength[e] > float("-inf")]
            ranked = sorted(incoming, key=lambda e: (-strength[e].item(), e))
            if top_k is not None:
                keep.update(ranked[:top_k])
            elif ranked and not keep.intersection(incoming):
                keep.add(ranked[0])
        out[kind] = tuple((spec.op_names[int(best[e])], *spec.edges[e]) for e in sorted(keep))
    return out


def derive_vertex(specs: Mapping[str, ArchSpec], weights: Mapping[str, torch.Tensor],
                  top_k: int = 1, threshold: float | None = None
                  ) -> dict[str, tuple[KeptEdge, ...]]:
    """Per vertex, the ``top_k`` non-zero (edge, op) pairs of largest mass, or those with mass
    >= ``threshold`` (at least the best one); ties go to the lower edge, then the lower op."""
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    out = {}
    for kind, spec in specs.items():
        w = weights[kind].detach().to("cpu", torch.float64)
        kept = []
        for v in spec.dst_vertices:
            pairs = sorted(((-w[e, k].item(), e, k) for e in spec.incoming(v)
                            for k in range(spec.n_ops)
                            if spec.mask[e][k] and k != spec.zero_index), )
            chosen = pairs[:top_k] if threshold is None else \
                [p for p in pairs if -p[0] >= threshold] or pairs[:1]
            kept += [(spec.op_names[k], *spec.edges[e]) for _, e, k in chosen]
        out[kind] = tuple(kept)
    return out


def rule_name(simplex: str, top_k: int | None, threshold: float | None = None) -> str:
    """The name a genotype records for its discretization rule."""
    if simplex == "vertex":
        return f"vertex-mass>={threshold:g}" if threshold else f"vertex-top{top_k or 1}"
    return f"edge-argmax-top{top_k}" if top_k else "edge-argmax"


def _io_vertices(genotype: Genotype) -> tuple[set[int], set[int]]:
    if genotype.space == "mlp":
        return {0}, {genotype.n_hidden}
    return {0, 1}, set(genotype.concat)


def connected(genotype: Genotype) -> Genotype:
    """Keep only edges on a path from an input vertex to an output vertex (the MLP's last hidden
    vertex; the concatenated nodes of a conv cell)."""
    inputs, outputs = _io_vertices(genotype)
    cleaned = {}
    for kind, edges in genotype.cells:
        fwd = set(inputs)
        for _, src, dst in sorted(edges, key=lambda t: t[2]):
            if src in fwd:
                fwd.add(dst)
        bwd = set(outputs)
        for _, src, dst in sorted(edges, key=lambda t: -t[2]):
            if dst in bwd:
                bwd.add(src)
        cleaned[kind] = [e for e in edges if e[1] in fwd and e[2] in bwd]
    return genotype.with_edges(cleaned)


def genotype_from_supernet(net: MLPSupernet | ConvSupernet, weights: Mapping[str, torch.Tensor],
                           top_k: int | None | str = "auto", simplex: str = "edge",
                           threshold: float | None = None) -> Genotype:
    """Derive and wrap into a connected ``Genotype``; ``top_k="auto"``: None (mlp), 2 (conv)
    with ``simplex="edge"``, 1 pair per vertex with ``simplex="vertex"`` (``derive_vertex``)."""
    if top_k == "auto":
        top_k = None if net.space == "mlp" or simplex == "vertex" else 2
    if simplex == "vertex":
        edges = derive_vertex(net.arch_spec(), weights, top_k or 1, threshold)
    else:
        edges = derive(net.arch_spec(), weights, top_k)
    rule = rule_name(simplex, top_k, threshold)
    if net.space == "mlp":
        g = Genotype("mlp", (), net.in_dim, net.out_dim, width=net.width, n_hidden=net.n_hidden,
                     rule=rule)
    else:
        g = Genotype("conv", (), net.C_in, net.n_classes, n_nodes=net.n_nodes,
                     concat=tuple(range(2, 2 + net.n_nodes)), rule=rule)
    return connected(g.with_edges(edges))


# ---------------------------------------------------------------------------- relevance, pruning
def relevance(spec: ArchSpec, weights: torch.Tensor) -> torch.Tensor:
    """``(n_edges, n_ops)``: ``gamma`` with masked ops zeroed, normalized over each vertex's
    incoming (edge, op) pairs, so the entries of a vertex sum to 1."""
    w = weights.detach().clamp_min(0) * spec.mask_tensor(weights.dtype, weights.device)
    dst = torch.tensor([d for _, d in spec.edges], device=w.device)
    totals = torch.zeros(int(dst.max()) + 1, dtype=w.dtype, device=w.device)
    totals.index_add_(0, dst, w.sum(dim=1))
    return w / totals[dst].clamp_min(torch.finfo(w.dtype).tiny).unsqueeze(1)


def edge_relevance(spec: ArchSpec, weights: torch.Tensor) -> torch.Tensor:
    """``(n_edges,)``: relevance mass of the non-zero ops of each edge."""
    r = relevance(spec, weights)
    if spec.zero_index is not None:
        r = torch.cat([r[:, :spec.zero_index], r[:, spec.zero_index + 1:]], dim=1)
    return r.sum(dim=1)


def relevance_by_edge(specs: Mapping[str, ArchSpec], weights: Mapping[str, torch.Tensor]
                      ) -> dict[str, dict[tuple[int, int], float]]:
    """``{kind: {(src, dst): edge relevance}}``, the input of ``prune``."""
    return {kind: dict(zip(spec.edges, edge_relevance(spec, weights[kind]).tolist()))
            for kind, spec in specs.items()}


def _without(genotype: Genotype, kind: str, edge: KeptEdge) -> Genotype | None:
    """``genotype`` minus ``edge`` (and what it disconnects), or None if that cuts the output."""
    edges = [e for e in genotype.edges(kind) if e != edge]
    g = connected(genotype.with_edges({kind: edges}))
    return g if all(g.edges(k) for k in g.kinds) else None


def prune(genotype: Genotype, relevance: Mapping[str, Mapping[tuple[int, int], float]],
          threshold: float | None = None, param_budget: int | None = None,
          **build_options) -> Genotype:
    """Remove the least relevant edges, never disconnecting the output.

    ``threshold``: drop every edge with relevance below it (unless the output would be cut).
    ``param_budget``: then drop edges, least relevant first, until ``count_parameters`` of
    ``build_network(genotype, **build_options)`` is <= the budget; ValueError if impossible.
    """
    if threshold is None and param_budget is None:
        raise ValueError("give a threshold, a param_budget or both")

    def ranked(g: Genotype) -> list[tuple[float, str, KeptEdge]]:
        return sorted((relevance[k][(e[1], e[2])], k, e) for k in g.kinds for e in g.edges(k))

    g = connected(genotype)
    if threshold is not None:
        for rel, kind, edge in ranked(g):
            if rel < threshold and edge in g.edges(kind):
                g = _without(g, kind, edge) or g
    if param_budget is not None:
        while count_parameters(build_network(g, **build_options)) > param_budget:
            smaller = next((s for _, k, e in ranked(g) if (s := _without(g, k, e))), None)
            if smaller is None:
                raise ValueError(f"cannot reach {param_budget} parameters without cutting the "
                                 f"output (now {count_parameters(build_network(g, **build_options))})")
            g = smaller
    return g


# ---------------------------------------------------------------------------- discrete networks
def count_parameters(module: nn.Module) -> int:
    """Number of scalar parameters of the model used for prediction (shared tensors counted
    once). The DARTS auxiliary head only serves training, so it is not counted (as in DARTS)."""
    return sum(p.numel() for name, p in module.named_parameters()
               if not name.startswith("auxiliary_head."))


def _check_computable(edges: Sequence[KeptEdge], inputs: set[int]) -> None:
    dsts = {dst for _, _, dst in edges}
    for op, src, dst in edges:
        if src not in inputs and src not in dsts:
            raise ValueError(f"edge {op}: {src} -> {dst} reads vertex {src}, which has no input")


class MLPNet(nn.Module):
    """The MLP of a genotype: ``v_i = sum_{(op, j, i) kept} f_op(v_j)``, head on the last vertex."""

    def __init__(self, genotype: Genotype):
        super().__init__()
        self.genotype = genotype
        self.kept = tuple(sorted(genotype.edges("dag"), key=lambda t: (t[2], t[1])))
        _check_computable(self.kept, {0})
        if genotype.n_hidden not in {dst for _, _, dst in self.kept}:
            raise ValueError(f"no edge reaches the output vertex {genotype.n_hidden}")
        self.edges = nn.ModuleList(
            ops.build_mlp_op(op, genotype.in_dim if src == 0 else genotype.width, genotype.width)
            for op, src, _ in self.kept)
        self.head = nn.Linear(genotype.width, genotype.out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        states = {0: x.flatten(1)}
        for (_, src, dst), op in zip(self.kept, self.edges):
            h = op(states[src])
            states[dst] = states[dst] + h if dst in states else h
        return self.head(states[self.genotype.n_hidden])


def drop_path(x: torch.Tensor, p: float) -> torch.Tensor:
    """Zero whole samples with probability ``p`` and rescale the rest by ``1 / (1 - p)``."""
    keep = 1.0 - p
    mask = torch.empty(x.shape[0], *(1,) * (x.dim() - 1), dtype=x.dtype, device=x.device)
    return x * mask.bernoulli_(keep) / keep


class DiscreteCell(nn.Module):
    """A DARTS evaluation cell: each kept edge ``(op, src, dst)`` adds ``f_op(state_src)`` to node
    ``dst``; a node without edges is zero; output = concat of ``concat`` nodes."""

    def __init__(self, edges: Sequence[KeptEdge], concat: Sequence[int], C_pp: int, C_p: int,
                 C: int, reduction: bool, reduction_prev: bool, affine: bool):
        super().__init__()
        self.reduction, self.concat = reduction, tuple(concat)
        self.kept = tuple(sorted(edges, key=lambda t: (t[2], t[1])))
        _check_computable(self.kept, {0, 1})
        self.preprocess0, self.preprocess1 = preprocess(C_pp, C_p, C, reduction_prev, affine)
        self.edges = nn.ModuleList(
            ops.build_conv_op(op, C, 2 if reduction and src < 2 else 1, affine)
            for op, src, _ in self.kept)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float = 0.0) -> torch.Tensor:
        states = {0: self.preprocess0(s0), 1: self.preprocess1(s1)}
        for (_, src, dst), op in zip(self.kept, self.edges):
            h = op(states[src])
            if self.training and drop_prob > 0 and not isinstance(op, nn.Identity):
                h = drop_path(h, drop_prob)
            states[dst] = states[dst] + h if dst in states else h
        step = 2 if self.reduction else 1
        zeros = torch.zeros_like(states[1][:, :, ::step, ::step])
        return torch.cat([states.get(v, zeros) for v in self.concat], dim=1)


class AuxiliaryHead(nn.Module):
    """DARTS AuxiliaryHeadCIFAR: ReLU, avg-pool 5 stride 3, 1x1 conv 128, BN, ReLU, 2x2 conv 768,
    BN, ReLU, linear. Exact for 8x8 maps (CIFAR); for other sizes the pooled map is resized to 2x2
    (adaptive average pooling), so 7x7 maps (MNIST) work too."""

    def __init__(self, C: int, n_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(C, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(),
            nn.Conv2d(128, 768, 2, bias=False), nn.BatchNorm2d(768), nn.ReLU())
        self.classifier = nn.Linear(768, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(x)
        if min(x.shape[-2:]) >= 5:
            x = nn.functional.avg_pool2d(x, 5, stride=3, count_include_pad=False)
        x = nn.functional.adaptive_avg_pool2d(x, 2)
        return self.classifier(self.features(x).flatten(1))


class ConvNet(nn.Module):
    """The DARTS evaluation network for a conv genotype.

    ``forward(x)`` returns logits, or ``(logits, aux_logits)`` in training mode when
    ``auxiliary``. ``drop_path_prob`` is a public attribute a training loop may schedule.
    """

    def __init__(self, genotype: Genotype, C: int = 36, layers: int = 20, stem_multiplier: int = 3,
                 affine: bool = True, auxiliary: bool = False, drop_path_prob: float = 0.0,
                 stem_stride: int = 1):
        super().__init__()
        if genotype.space != "conv":
            raise ValueError(f"ConvNet needs a conv genotype, got {genotype.space!r}")
        self.genotype, self.drop_path_prob = genotype, drop_path_prob
        C_curr = stem_multiplier * C
        self.stem = stem(genotype.in_dim, C_curr, stem_stride)
        C_pp, C_p, C_curr = C_curr, C_curr, C
        self.cells = nn.ModuleList()
        reduction_prev = False
        self.aux_layer = reduction_layers(layers)[1] if auxiliary else None
        for layer in range(layers):
            reduction = layer in reduction_layers(layers)
            C_curr = C_curr * 2 if reduction else C_curr
            edges = genotype.edges("reduce" if reduction else "normal")
            self.cells.append(DiscreteCell(edges, genotype.concat, C_pp, C_p, C_curr, reduction,
                                           reduction_prev, affine))
            reduction_prev = reduction
            C_pp, C_p = C_p, len(genotype.concat) * C_curr
            if layer == self.aux_layer:
                self.auxiliary_head = AuxiliaryHead(C_p, genotype.out_dim)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_p, genotype.out_dim)

    def forward(self, x: torch.Tensor):
        s0 = s1 = self.stem(x)
        aux_logits = None
        for layer, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if layer == self.aux_layer and self.training:
                aux_logits = self.auxiliary_head(s1)
        logits = self.classifier(self.pool(s1).flatten(1))
        return logits if aux_logits is None else (logits, aux_logits)


def build_network(genotype: Genotype, **options) -> nn.Module:
    """``MLPNet(genotype)`` (no options) or ``ConvNet(genotype, **options)`` (C, layers,
    stem_multiplier, affine, auxiliary, drop_path_prob, stem_stride)."""
    if genotype.space == "mlp":
        if options:
            raise TypeError(f"an mlp genotype takes no build options, got {sorted(options)}")
        return MLPNet(genotype)
    return ConvNet(genotype, **options)


def load_from_supernet(discrete: MLPNet | ConvNet, supernet: MLPSupernet | ConvSupernet) -> None:
    """Copy the parameters (and BN buffers) of the kept ops, stem/preprocessing and head from a
    supernet built with the same sizes (for conv: same ``C``, ``layers``, ``affine``)."""
    specs = supernet.arch_spec()
    if isinstance(discrete, MLPNet):
        pairs = [(discrete.edges, supernet.edges, specs["dag"], discrete.kept)]
        discrete.head.load_state_dict(supernet.head.state_dict())
    else:
        if len(discrete.cells) != len(supernet.cells):
            raise ValueError(f"{len(discrete.cells)} cells vs {len(supernet.cells)} in supernet")
        discrete.stem.load_state_dict(supernet.stem.state_dict())
        discrete.classifier.load_state_dict(supernet.classifier.state_dict())
        pairs = []
        for dcell, scell in zip(discrete.cells, supernet.cells):
            for pre in ("preprocess0", "preprocess1"):
                getattr(dcell, pre).load_state_dict(getattr(scell, pre).state_dict())
            spec = specs["reduce" if scell.reduction else "normal"]
            pairs.append((dcell.edges, scell.edges, spec, dcell.kept))
    for d_edges, s_edges, spec, kept in pairs:
        for module, (op, src, dst) in zip(d_edges, kept):
            module.load_state_dict(s_edges[spec.edge_index(src, dst)].ops[op].state_dict())
