"""Time the bilevel step of a population of searches against the same searches one by one.

    python benchmarks/population_step.py [--spaces boston,mnist] [--orders 1,2]
        [--sizes 1,5,25] [--paths reference,eager,compiled] [--relaxation gumbel]
        [--repeats 20] [--warmup 3] [--threads 1] [--device cpu] [--json out.json]

Per space (``boston``: 13 -> 3 vertices of width 50 -> 1, batch 64, the Boston profile;
``mnist``: 784 -> 3 vertices of width 64 -> 10, batch 125, the MNIST profile), order and
population size P, in one run:

- ``reference``: P separate ``BilevelOptimizer`` searches, one step of each, one after the other
  (what a plan does today);
- ``eager``: one ``relnas.population.Population`` step of the P members (torch.func vmap);
- ``compiled``: the same under ``torch.compile`` (its compile time reported apart).

Prints a Markdown table: ms per member-step (median of ``--repeats`` rounds after ``--warmup``),
the ratio of the reference's to it, compile seconds, and the memory of the population's state
(on CUDA: the peak allocated during the timed steps). Random inputs of the real shapes; every
member draws its own Gamma. Compare rows within one run only.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch.nn import functional as F

from relnas.bilevel import BilevelOptimizer
from relnas.population import Population
from relnas.prior import WeightPrior
from relnas.relax import Architecture, make_relaxation
from relnas.runtime import device_name
from relnas.space import MLPSupernet

SPACES = {"boston": dict(n_in=13, n_out=1, width=50, batch=64, n_train=304),
          "mnist": dict(n_in=784, n_out=10, width=64, batch=125, n_train=2500)}


def loss_for(space: str):
    if SPACES[space]["n_out"] == 1:
        return lambda out, y: F.mse_loss(out.reshape(y.shape), y)
    return F.cross_entropy


def members(space: str, size: int, relaxation: str, order: int, device):
    s = SPACES[space]
    out = []
    for seed in range(size):
        torch.manual_seed(seed)
        net = MLPSupernet(s["n_in"], s["n_out"], 3, s["width"], readout="sum").to(device)
        arch = Architecture(net.arch_spec(), relaxation=make_relaxation(relaxation),
                            simplex="vertex", generator=torch.Generator().manual_seed(seed)
                            ).to(device)
        prior = WeightPrior.from_weight_decay(net.weight_groups(), weight_decay=1e-3,
                                              n_train=s["n_train"]).to(device)
        out.append((net, arch, prior))
    return out


def batches(space: str, size: int, device):
    s = SPACES[space]
    x = torch.randn(2, size, s["batch"], s["n_in"], device=device)
    if s["n_out"] == 1:
        y = torch.randn(2, size, s["batch"], device=device)
    else:
        y = torch.randint(0, s["n_out"], (2, size, s["batch"]), device=device)
    return (x[0], y[0]), (x[1], y[1])


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeats: int, warmup: int) -> tuple[float, float]:
    """(median seconds of one call after ``warmup`` calls, seconds of the first call)."""
    times = []
    for _ in range(warmup + repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times[warmup:]), times[0]


def measure(space, order, size, path, args, device):
    s = SPACES[space]
    lam = 0.0 if args.relaxation == "softmax" else 0.1
    loss = loss_for(space)
    built = members(space, size, args.relaxation, order, device)
    train, valid = batches(space, size, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    if path == "reference":
        opts = [BilevelOptimizer(n, a, p, loss, n_train=s["n_train"], n_valid=s["n_train"],
                                 w_lr=0.05, arch_lr=0.1, lam=lam, order=order,
                                 sync=device.type != "cuda") for n, a, p in built]

        def round_():
            for i, opt in enumerate(opts):
                opt.step((train[0][i], train[1][i]), (valid[0][i], valid[1][i]))
        seconds, first = timed(round_, device, args.repeats, args.warmup)
        state_mb = None
    else:
        net, arch, prior = built[0]
        pop = Population(net, arch, prior, loss, n_train=s["n_train"], n_valid=s["n_train"],
                         arch_lr=0.1, regularized=lam > 0, order=order,
                         compile=path == "compiled")
        state = pop.stack(*zip(*built))
        gens = [torch.Generator(device=device).manual_seed(i) for i in range(size)]
        lams = torch.full((size,), lam, device=device)
        lr = torch.full((size,), 0.05, device=device)
        box = [state]

        def round_():
            box[0], _ = pop.step(box[0], train, valid, lam=lams, lr=lr, temperature=1.0,
                                 generators=gens)
        seconds, first = timed(round_, device, args.repeats, args.warmup)
        state_mb = sum(t.numel() * t.element_size() for part in state.values()
                       if isinstance(part, dict) for t in part.values()) / 2 ** 20
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else None
    return {"space": space, "order": order, "P": size, "path": path,
            "ms_per_member_step": 1e3 * seconds / size,
            "compile_s": first - seconds if path == "compiled" else None,
            "state_mb": state_mb, "peak_mb": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spaces", default="boston,mnist")
    parser.add_argument("--orders", default="1,2")
    parser.add_argument("--sizes", default="1,5,25")
    parser.add_argument("--paths", default="reference,eager,compiled")
    parser.add_argument("--relaxation", default="gumbel",
                        choices=["softmax", "gumbel", "dirichlet"])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = []
    for space in args.spaces.split(","):
        for order in map(int, args.orders.split(",")):
            for size in map(int, args.sizes.split(",")):
                ref = None
                for path in args.paths.split(","):
                    row = measure(space, order, size, path, args, device)
                    ref = row["ms_per_member_step"] if path == "reference" else ref
                    row["ratio"] = ref / row["ms_per_member_step"] if ref else None
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    print(f"\n{device_name(device)}, torch {torch.__version__}, relaxation {args.relaxation}, "
          f"{args.repeats} rounds after {args.warmup}\n")
    print("| space | order | P | path | ms / member-step | ratio to reference | compile s | "
          "state MB | peak MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    for r in rows:
        print(f"| {r['space']} | {r['order']} | {r['P']} | {r['path']} | "
              f"{r['ms_per_member_step']:.2f} | {fmt(r['ratio'], '.1f')} | "
              f"{fmt(r['compile_s'], '.0f')} | {fmt(r['state_mb'], '.2f')} | "
              f"{fmt(r['peak_mb'], '.0f')} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": device_name(device), "torch": torch.__version__,
                       "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
