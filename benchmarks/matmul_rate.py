"""How close the MNIST plan's matrix products run to this core's rate: GFLOP/s of one large
product, of one derived net's input layer, and of a population's batched input layer (forward
and weight gradient), against the same 25 products one by one.

    python benchmarks/matmul_rate.py [--threads 1] [--repeats 7] [--calls 40]

Shapes: a derived MLP net's 784 -> 64 input layer at the retrain batch (128); a population of
25 MNIST searches (``relnas.population``) at the search batch (125): ``bmm`` of
``[25, 125, 784] x [25, 784, 64]``, which the 12 input-edge ops of the supernet run each step.
Each row: median over ``--repeats`` of the rate over ``--calls`` calls (rows interleaved, so a
slow spell of a shared machine hits them alike). Compare within one run only.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch

from relnas.runtime import device_name

P, B, D, H = 25, 125, 784, 64  # members, search batch, MNIST pixels, hidden width


def cases() -> dict[str, tuple[Callable[[], object], float]]:
    """name -> (one call, its floating-point operations)."""
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    x, w = torch.randn(128, D), torch.randn(D, H)
    xs, ws, gs = torch.randn(P, B, D), torch.randn(P, D, H), torch.randn(P, B, H)
    xt, out, grad = xs.transpose(1, 2), torch.empty(P, B, H), torch.empty(P, D, H)
    pop = 2.0 * P * B * D * H
    return {
        "[1024, 1024] @ [1024, 1024]": (lambda: a @ b, 2.0 * 1024 ** 3),
        "[128, 784] @ [784, 64] (a derived net's input layer)": (lambda: x @ w, 2.0 * 128 * D * H),
        "bmm forward, population of 25": (lambda: torch.bmm(xs, ws), pop),
        "25 mm forward, one by one": (
            lambda: [torch.mm(xs[i], ws[i], out=out[i]) for i in range(P)], pop),
        "bmm weight gradient, population of 25": (lambda: torch.bmm(xt, gs), pop),
        "25 mm weight gradient, one by one": (
            lambda: [torch.mm(xt[i], gs[i], out=grad[i]) for i in range(P)], pop),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--calls", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    timed = cases()
    rates: dict[str, list[float]] = {name: [] for name in timed}
    for name, (call, _) in timed.items():  # warm up every case first
        call()
    for _ in range(args.repeats):
        for name, (call, flops) in timed.items():
            start = time.perf_counter()
            for _ in range(args.calls):
                call()
            rates[name].append(flops * args.calls / (time.perf_counter() - start) / 1e9)
    print(f"{device_name(torch.device('cpu'))}, torch {torch.__version__}, "
          f"{args.threads} thread(s); median of {args.repeats} x {args.calls} calls\n")
    print("| product | GFLOP/s |\n|---|---|")
    for name, values in rates.items():
        print(f"| {name} | {statistics.median(values):.1f} |")


if __name__ == "__main__":
    main()
