"""Why the Dirichlet's mean structure stays spread (issue 10): Boston searches of the default
profile's relnas-Dirichlet (per-vertex simplex, first order, fixed A) under variants of the
relaxation and its prior, search phase only, one line per (variant, lambda) with the median
over seeds of

- ``H(mean)``: normalized entropy of the mean structure (what is discretized, the tables'
  "final entropy"),
- ``E[H(draw)]``: the expected normalized entropy of draws (16 draws),
- ``sum beta``: the mean total concentration of a group (small = sparse draws),
- ``margin``: the median margin of the leading (edge, op) pair over the runner-up,
- ``valid``: the search's last validation loss at the mean structure.

    python tools/dirichlet_decisiveness.py [--seeds 0 1 2] [--lambdas 0 0.1 1 10 100]
        [--variants profile softplus lr long elu beta05 beta02 sparse kl] [--no-darts]

A DARTS (softmax, per vertex) line at lambda 0 is the reference for how far a deterministic
relaxation moves in the same steps. About 4 minutes on 2 CPU cores (one thread).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from relnas import runtime, search, train
from relnas.config import make_config
from relnas.plans import plan
from relnas.profiles import DIRICHLET_ARCH_LR, PROFILES

# name: (what it is, config fields over the profile's)
VARIANTS = {
    "profile": ("the profile (exp concentration, -log Dir, beta0 1, prior cost 3, "
                f"structure lr {DIRICHLET_ARCH_LR:g}x DARTS')", {}),
    "softplus": ("concentration softplus (the plans' until 2026-11-30)",
                 {"concentration": "softplus"}),
    "lr": ("structure lr as DARTS' (0.1, the plans' until 2026-11-30)", {"arch_lr": 0.1}),
    "long": ("4x the steps (128 epochs)", {"epochs": 128}),
    "elu": ("concentration elu + 1", {"concentration": "elu1"}),
    "beta05": ("beta0 0.5", {"beta0": 0.5}),
    "beta02": ("beta0 0.2", {"beta0": 0.2}),
    # at DARTS' lr: at the profile's 3x, draws underflow and the hypergradient turns NaN on
    # some seeds (lambda 10 and 100; BENCHMARKS.md "The Dirichlet's structure lr")
    "sparse": ("beta0 0.2, prior cost 0.6 (every alpha < 1, structure lr 0.1)",
               {"beta0": 0.2, "prior_cost": 0.6, "arch_lr": 0.1}),
    "kl": ("closed-form KL prior", {"prior_form": "kl"}),
}


def measure(cfg) -> dict[str, float]:
    device = runtime.setup(cfg)
    task = train.Task(cfg, device)
    with tempfile.TemporaryDirectory() as folder:
        done = search.run_search(cfg, task, device, Path(folder))
    out = search.decisiveness(done.arch)
    relaxation = done.arch.relaxation
    with torch.no_grad():
        sums = [relaxation.beta(p).sum(-1).mean() for p in done.arch.theta.values()] \
            if hasattr(relaxation, "beta") else [torch.tensor(float("nan"))]
    out["sum_beta"] = float(torch.stack(sums).mean())
    out["valid"] = done.history[-1]["valid_loss"]
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--lambdas", type=float, nargs="+", default=[0.0, 0.1, 1.0, 10.0, 100.0])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--no-darts", action="store_true", help="leave out the DARTS line")
    args = parser.parse_args(argv)
    print("| variant | lambda | H(mean) | E[H(draw)] | sum beta | margin | valid |")
    print("|---|---|---|---|---|---|---|")
    darts = {"arch_lr": PROFILES["boston"]["default"]["arch_lr"]}  # not the Dirichlet's multiple
    rows = [] if args.no_darts else [("DARTS (softmax, per vertex)", 0.0, "softmax", darts)]
    rows += [(VARIANTS[key][0], lam, "dirichlet", VARIANTS[key][1]) for key in args.variants
             for lam in args.lambdas]
    for name, lam, relaxation, over in rows:
        found = []
        for seed in args.seeds:
            cfg = next(c for c in plan("boston", seeds=[seed], relaxations=("dirichlet",),
                                       lambdas=[lam], learned_precision=(False,),
                                       include=("relnas",), conv_cell=False)
                       if c.simplex == "vertex")
            cfg = make_config(**{**cfg.to_dict(), "relaxation": relaxation, **over})
            found.append(measure(cfg))

        def med(key):
            return statistics.median(f[key] for f in found)
        print(f"| {name} | {lam:g} | {med('entropy_norm'):.2f} | "
              f"{med('sample_entropy_norm'):.2f} | {med('sum_beta'):.1f} | "
              f"{med('margin_median'):.3f} | {med('valid'):.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
