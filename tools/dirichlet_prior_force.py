"""Where the Dirichlet size prior pushes a vertex's structure (issue 10): the descent direction
``-d/d theta`` of the prior's expectation over the draws, ``E[-log Dir(gamma; alpha)] = const -
sum_k (alpha_k - 1) (digamma(tau beta_k) - digamma(tau sum beta))`` with ``beta = K
softmax(theta)`` (the tempered concentration the profiles use; the profile's one-draw estimate
has this expectation, up to the float floor of a draw), on the MNIST MLP space's last vertex
(per-vertex simplex, cost over the simplex: alpha 0.5 for an input layer, 0.96 for a hidden
layer, 1 for parameter-free ops).

One row per state: the uniform start, then states where one input layer leads and one hidden
layer holds a smaller mass (the rest spread evenly), at the first and last temperature. A
positive number grows the entry's mass under gradient descent, a negative one shrinks it.

    python tools/dirichlet_prior_force.py
"""
from __future__ import annotations

import argparse
import sys

import torch

from relnas.profiles import DIRICHLET_FIELDS
from relnas.relax import Architecture
from relnas.relaxations import Dirichlet
from relnas.space import MLPSupernet

SHOWN = {"input layer": (3, "linear_relu"), "hidden layer": (5, "linear_relu"),
         "identity": (5, "identity"), "zero": (5, "zero")}  # (edge, op): edge 3 is input -> 3, edge 5 is 2 -> 3


def vertex(n_in: int = 784, width: int = 64):
    """The last vertex's entries ``[(edge, op)]`` and prior concentrations ``alpha``."""
    net = MLPSupernet(n_in, 10, n_hidden=3, width=width, readout="sum")
    relax = Dirichlet(beta0=DIRICHLET_FIELDS["beta0"], concentration="tempered", prior="logp",
                      cost_strength=DIRICHLET_FIELDS["prior_cost"])
    arch = Architecture(net.arch_spec(), relaxation=relax, simplex="vertex", cost_scope="simplex")
    spec, bucket = arch.specs["dag"], arch._buckets[-1]
    index = getattr(arch, f"index_{bucket.key}")[-1]
    entries = [(int(i) // len(spec.op_names), spec.op_names[int(i) % len(spec.op_names)])
               for i in index]
    alpha = relax.prior_params(None, getattr(arch, f"cost_{bucket.key}")[-1:])[0]
    return entries, alpha.double()


def force(alpha: torch.Tensor, mass: torch.Tensor, tau: float) -> torch.Tensor:
    """``-d/d theta`` of the prior's expectation at ``theta = log mass``."""
    theta = mass.log().requires_grad_()
    k = len(mass)
    beta = k * torch.softmax(theta, -1)
    total = torch.tensor(tau * k, dtype=mass.dtype)
    value = -((alpha - 1) * (torch.digamma(tau * beta) - torch.digamma(total))).sum()
    (grad,) = torch.autograd.grad(value, theta)
    return -grad


def states(entries):
    k = len(entries)
    yield "uniform", torch.full((k,), 1.0 / k, dtype=torch.float64)
    lead, second = entries.index(SHOWN["input layer"]), entries.index(SHOWN["hidden layer"])
    for big, small in ((0.5, 0.3), (0.7, 0.1), (0.9, 0.02)):
        mass = torch.full((k,), (1.0 - big - small) / (k - 2), dtype=torch.float64)
        mass[lead], mass[second] = big, small
        yield f"input layer {big:g}, hidden layer {small:g}", mass


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--taus", type=float, nargs="+", default=[1.0, 0.1])
    args = parser.parse_args(argv)
    entries, alpha = vertex()
    cols = list(SHOWN)
    print("| state | tau | " + " | ".join(f"{c} (alpha {alpha[entries.index(SHOWN[c])]:.2f})"
                                         for c in cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    for name, mass in states(entries):
        for tau in args.taus:
            f = force(alpha, mass, tau)
            print(f"| {name} | {tau:g} | "
                  + " | ".join(f"{f[entries.index(SHOWN[c])]:+.3f}" for c in cols) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
