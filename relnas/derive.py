"""From structure weights to a discrete architecture: discretization, relevance, pruning.

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
- The result is a ``Genotype`` (``relnas.genotype``); ``relnas.nets.build_network`` rebuilds it
  as an ``nn.Module``; ``load_from_supernet`` copies the chosen ops' parameters from a supernet.
"""
from __future__ import annotations

from typing import Mapping

import torch

from relnas.genotype import Genotype, KeptEdge
from relnas.nets import ConvNet, MLPNet, build_network, count_parameters
from relnas.space import ArchSpec, ConvSupernet, MLPSupernet


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
        last = {genotype.n_hidden} if genotype.readout == "last" else \
            set(range(1, genotype.n_hidden + 1))
        return {0}, last
    return {0, 1}, set(genotype.concat)


def connected(genotype: Genotype) -> Genotype:
    """Keep only edges on a path from an input vertex to an output vertex (the MLP's last hidden
    vertex, or every hidden vertex with ``readout="sum"``; the concatenated nodes of a conv
    cell)."""
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
                     rule=rule, readout=net.readout)
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
