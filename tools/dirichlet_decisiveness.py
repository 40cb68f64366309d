"""How decisive the Dirichlet's searches are (issue 10): searches of a dataset's (Boston's
unless told) default profile's relnas-Dirichlet (or ``--relaxation gumbel``; per-vertex
simplex, first order, fixed A) under variants of the relaxation and its prior, search phase
only, one line per (variant, lambda) with the median over seeds of

- ``H(mean)``: normalized entropy of the mean structure (what is discretized, the tables'
  "final entropy"),
- ``E[H(draw)]``: the expected normalized entropy of draws (16 draws),
- ``sum beta``: the mean total concentration of a group's draws at the last temperature
  (small = sparse draws),
- ``margin``: the median margin of the leading (edge, op) pair over the runner-up,
- ``valid``: the search's last validation loss at the mean structure,
- ``params``: the parameters of the net the search derives (median, then per seed).

    python tools/dirichlet_decisiveness.py [--dataset boston] [--seeds 0 1 2]
        [--lambdas 0 0.1 1 10 100]
        [--variants profile exp tempered_wide lr long sparse exp_sparse kl tempered_flat
                    tau_mild edge_cost code code_wide centered symmetric
                    warmup1 warmup2] [--relaxation dirichlet]
        [--simplex vertex] [--no-darts]

A DARTS (softmax, per vertex) line at lambda 0 is the reference for how far a deterministic
relaxation moves in the same steps. Boston: about 1 s a search, MNIST about 4 s (one thread).
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from relnas import nets, runtime, search, train
from relnas.config import make_config
from relnas.plans import plan
from relnas.profiles import DIRICHLET_ARCH_LR, PROFILES

# name: (what it is, config fields over the profile's)
VARIANTS = {
    "profile": ("the profile (cost over the vertex's simplex; Dirichlet: tempered, -log Dir, "
                f"alpha 0.5 to 1, structure lr {DIRICHLET_ARCH_LR:g}x DARTS')", {}),
    "exp": ("concentration exp, alpha 1 to 4 (the plans' until 2026-11-30, session 10)",
            {"concentration": "exp", "beta0": 1.0, "prior_cost": 3.0}),
    "tempered_wide": ("tempered, alpha 1 to 4 (beta0 1, prior cost 3)",
                      {"beta0": 1.0, "prior_cost": 3.0}),
    "lr": ("structure lr as DARTS' (0.1)", {"arch_lr": 0.1}),
    "long": ("4x the steps (128 epochs)", {"epochs": 128}),
    "sparse": ("beta0 0.2, prior cost 0.6 (alpha 0.2 to 0.8, tempered)",
               {"beta0": 0.2, "prior_cost": 0.6}),
    # at the profile's 3x, exp draws underflow and the hypergradient turned NaN on some seeds
    # (lambda 10 and 100; BENCHMARKS.md "The Dirichlet's structure lr")
    "exp_sparse": ("exp, alpha 0.2 to 0.8, structure lr 0.1",
                   {"concentration": "exp", "beta0": 0.2, "prior_cost": 0.6, "arch_lr": 0.1}),
    "kl": ("closed-form KL prior", {"prior_form": "kl"}),
    "tempered_flat": ("tempered, alpha 1 to 2 (beta0 1, prior cost 1: flat over ops with "
                      "weights)", {"beta0": 1.0, "prior_cost": 1.0}),
    "tau_mild": ("the profile, draws' temperature annealed to 0.3 (not 0.1)", {"tau_end": 0.3}),
    "edge_cost": ("the profile, cost normalized per edge (the plans' until session 12)",
                  {"cost_scope": "edge"}),
    # the expected description length -sum_k gamma_k log pi_k, pi = the prior's mean alpha / sum
    "code": ("description-length prior, alpha 0.5 to 1 (code lengths differ by up to log 2)",
             {"prior_form": "code"}),
    "code_wide": ("description-length prior, alpha 0.05 to 1.05 (up to log 21 = 3.0)",
                  {"prior_form": "code", "beta0": 0.05, "prior_cost": 1.0}),
    # alpha below 1 for costly ops and above 1 for cheap ones: at the mean, -log Dir's pull on
    # op j in theta is (1 - alpha_j) - gamma_j sum_k (1 - alpha_k), so with sum_k alpha_k >= K a
    # costly leader would be pushed down at any mass; at tempered draws it is still grown
    # (BENCHMARKS.md "Thirty held-out seeds", session 16; not adopted)
    "centered": ("-log Dir, alpha 0.5 (costliest) to 1.5 (parameter-free)",
                 {"beta0": 0.5, "prior_cost": 1.0}),
    "symmetric": ("symmetric sparse prior, alpha 0.5 for every op (-log Dir, no cost)",
                  {"prior_cost": 0.0}),
    # not config fields: the first epochs train the weights only (WARMUP, by measure())
    "warmup1": ("the profile, first epoch without structure steps", {}),
    "warmup2": ("the profile, first two epochs without structure steps", {}),
}
WARMUP = {"warmup1": 1, "warmup2": 2}


@contextlib.contextmanager
def weights_first(epochs: int):
    """Within: ``search.run_search`` takes no structure step in its first ``epochs`` epochs
    (the weight steps and the temperature schedule unchanged)."""
    epoch = {"now": 0}
    temperature, step = search.temperature, search._step

    def noting(e, *args, **kwargs):
        epoch["now"] = e
        return temperature(e, *args, **kwargs)

    def stepping(opt, *args, **kwargs):
        if epoch["now"] >= epochs:
            return step(opt, *args, **kwargs)
        arch_step = opt.arch_optimizer.step
        opt.arch_optimizer.step = lambda *a, **k: None
        try:
            return step(opt, *args, **kwargs)
        finally:
            opt.arch_optimizer.step = arch_step

    search.temperature, search._step = noting, stepping
    try:
        yield
    finally:
        search.temperature, search._step = temperature, step


def measure(cfg, warmup: int = 0) -> dict[str, float]:
    device = runtime.setup(cfg)
    task = train.Task(cfg, device)
    with tempfile.TemporaryDirectory() as folder, weights_first(warmup):
        done = search.run_search(cfg, task, device, Path(folder))
    out = search.decisiveness(done.arch)
    relaxation = done.arch.relaxation
    with torch.no_grad():
        sums = [relaxation.draw_beta(p, cfg.tau_end).sum(-1).mean()
                for p in done.arch.theta.values()] \
            if hasattr(relaxation, "beta") else [torch.tensor(float("nan"))]
    out["sum_beta"] = float(torch.stack(sums).mean())
    out["valid"] = done.history[-1]["valid_loss"]
    with torch.no_grad():
        mean = {k: w.detach().cpu() for k, w in done.arch.mean().items()}
    out["params"] = nets.count_parameters(
        train.build_derived(cfg, search.discretize(cfg, done.net, mean)))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="boston", help="a dataset with an MLP DAG profile")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--lambdas", type=float, nargs="+", default=[0.0, 0.1, 1.0, 10.0, 100.0])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--simplex", default="vertex", choices=("vertex", "edge"),
                        help="the sweep's rows of this simplex (the plans run both for MLPs)")
    parser.add_argument("--no-darts", action="store_true", help="leave out the DARTS line")
    parser.add_argument("--relaxation", default="dirichlet", choices=("dirichlet", "gumbel"),
                        help="the plan's relnas rows of this relaxation (gumbel: variants that "
                             "set Dirichlet fields do not apply)")
    args = parser.parse_args(argv)
    print("| variant | lambda | H(mean) | E[H(draw)] | sum beta | margin | valid | params "
          "| params per seed |")
    print("|---|---|---|---|---|---|---|---|---|")
    # DARTS at the profile's arch_lr, not the Dirichlet's multiple
    darts = {"arch_lr": PROFILES[args.dataset]["default"]["arch_lr"]}
    rows = [] if args.no_darts else [("DARTS (softmax, per vertex)", 0.0, "softmax", darts, 0)]
    rows += [(VARIANTS[key][0], lam, args.relaxation, VARIANTS[key][1], WARMUP.get(key, 0))
             for key in args.variants for lam in args.lambdas]
    for name, lam, relaxation, over, warmup in rows:
        found = []
        for seed in args.seeds:
            searched = "dirichlet" if relaxation == "softmax" else relaxation
            cfg = next(c for c in plan(args.dataset, seeds=[seed], relaxations=(searched,),
                                       lambdas=[lam], learned_precision=(False,),
                                       include=("relnas",), conv_cell=False)
                       if c.simplex == args.simplex)
            cfg = make_config(**{**cfg.to_dict(), "relaxation": relaxation, **over})
            found.append(measure(cfg, warmup))

        def med(key):
            return statistics.median(f[key] for f in found)
        per_seed = " / ".join(f"{f['params']:,.0f}" for f in found)
        print(f"| {name} | {lam:g} | {med('entropy_norm'):.2f} | "
              f"{med('sample_entropy_norm'):.2f} | {med('sum_beta'):.1f} | "
              f"{med('margin_median'):.3f} | {med('valid'):.2f} | {med('params'):,.0f} | "
              f"{per_seed} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
