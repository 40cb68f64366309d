"""Ground truth for a small MLP space: every architecture the per-vertex rule can derive.

In the MLP DAG with the paper's per-vertex simplex each hidden vertex keeps one (edge, op) pair
(``relnas.derive.derive_vertex``, top 1, never ``zero``), so a small space can be listed and
trained in full: ``genotypes(net)`` lists them (refused above ``LIMIT``), ``method="exhaustive"``
(``relnas.experiment``) retrains every one with the retrain protocol of the other methods and
stores one row per architecture in ``exhaustive.csv``; its metrics are those of the best
architecture on validation. ``relnas.ground_truth`` runs it per seed and ranks the methods.
"""
from __future__ import annotations

import itertools
import math

from relnas import fast, nets, runtime, search, store, train
from relnas.genotype import Genotype
from relnas.space import MLPSupernet

# The most architectures one exhaustive run trains: about 0.35 s each for a Boston-sized MLP on
# one CPU thread (BENCHMARKS.md), so 1,000 is about 6 minutes per seed.
LIMIT = 1000
ROWS = "exhaustive.csv"


def choices(net: MLPSupernet) -> list[list[tuple[str, int, int]]]:
    """Per hidden vertex, the (op, src, dst) pairs it may keep (allowed, not zero)."""
    spec = net.arch_spec()["dag"]
    return [[(spec.op_names[k], *spec.edges[e]) for e in spec.incoming(v)
             for k in range(spec.n_ops) if spec.mask[e][k] and k != spec.zero_index]
            for v in spec.dst_vertices]


def count(net: MLPSupernet) -> int:
    return math.prod(len(c) for c in choices(net))


def genotypes(net: MLPSupernet, limit: int = LIMIT) -> list[Genotype]:
    """Every genotype of one (edge, op) pair per hidden vertex, in a fixed order."""
    if not isinstance(net, MLPSupernet):
        raise ValueError("exhaustive search lists MLP DAG spaces only (space='mlp')")
    n = count(net)
    if n > limit:
        raise ValueError(f"the space has {n:,} architectures of one (edge, op) pair per vertex; "
                         f"exhaustive search trains at most {limit:,} (n_hidden "
                         f"{net.n_hidden}, {len(net.op_names)} ops): use fewer hidden vertices "
                         "or ops")
    base = Genotype("mlp", (), net.in_dim, net.out_dim, width=net.width, n_hidden=net.n_hidden,
                    rule="exhaustive", readout=net.readout)
    from relnas.derive import connected
    return [connected(base.with_edges({"dag": list(pick)}))
            for pick in itertools.product(*choices(net))]


def run(cfg, task, device, run_dir, kw):
    """``method="exhaustive"`` of ``relnas.experiment``: every architecture of the space
    (:func:`genotypes`), each retrained as a derived net (seed ``cfg.seed + 1``), one row each
    in ``exhaustive.csv``; the metrics are those of the best on validation. Resumes architecture by architecture (each is a phase)."""
    listed = genotypes(search.build_supernet(cfg, task))
    rows, seconds = [], 0.0
    for i, genotype in enumerate(listed):
        runtime.seed_everything(cfg.seed + 1)
        model = fast.prepare(train.build_derived(cfg, genotype), cfg, device)
        metrics, _, s = train.fit(model, cfg, task, run_dir, f"arch{i}", cfg.retrain_epochs,
                                  checkpoint_interval=kw["checkpoint_interval"])
        seconds += s
        rows.append({"index": i, "params": nets.count_parameters(model),
                     "valid_metric": metrics["valid_metric"], "test_metric": metrics["test_metric"],
                     "genotype": genotype.to_json(indent=None)})
    store.write_csv(run_dir / ROWS, rows)
    sign = 1 if task.metric == "rmse" else -1
    best = min(rows, key=lambda r: (sign * r["valid_metric"], r["params"]))
    genotype = listed[best["index"]]
    store.write_json(run_dir / store.GENOTYPE, genotype.to_dict())
    metrics = {"valid_metric": best["valid_metric"], "test_metric": best["test_metric"],
               "params": best["params"], "genotype": genotype.to_dict(),
               "architectures": len(rows)}
    return metrics, [], (0.0, seconds)
