"""Time one bilevel search step (arch step + weight step) for the MLP and conv spaces.

    python benchmarks/search_step.py [--device cpu|cuda] [--batch 64] [--repeats 10] [--threads 2]
        [--spaces mlp,conv] [--variants 0,1,2] [--warmup 2]

Random inputs of the real shapes (MNIST-MLP: 784 -> 3 vertices of width 128 -> 10; CIFAR-10
DARTS supernet: 8 cells, C=16, 32x32x3 -> 10); prints a Markdown table (ms per step, median of
--repeats after --warmup steps, peak memory on CUDA). Compare variants within one run only.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.nn import functional as F

from relnas.bilevel import BilevelOptimizer, WeightPrior
from relnas.phases import device_name
from relnas.relax import Architecture
from relnas.space import ConvSupernet, MLPSupernet

VARIANTS = [("order 1", dict(order=1)), ("order 2, finite HVP", dict(order=2, hvp="finite")),
            ("order 2, exact HVP", dict(order=2, hvp="exact"))]


def build(space: str, device, relaxation: str, **options):
    if space == "mlp":
        net, shape = MLPSupernet(784, 10, n_hidden=3, width=128), (784,)
    else:
        net, shape = ConvSupernet(3, 10, C=16, layers=8), (3, 32, 32)
    net = net.to(device)
    arch = Architecture(net.arch_spec(), relaxation=relaxation).to(device)
    prior = WeightPrior.from_weight_decay(net.weight_groups(), weight_decay=3e-4, n_train=25000).to(device)
    opt = BilevelOptimizer(net, arch, prior, F.cross_entropy, n_train=25000, **options)
    return opt, shape


def time_steps(opt, shape, batch, repeats, device, warmup=2):
    def batch_of():
        return torch.randn(batch, *shape, device=device), torch.randint(0, 10, (batch,), device=device)
    train, valid = batch_of(), batch_of()
    times = []
    for i in range(repeats + warmup):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        opt.step(train, valid, temperature=1.0)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--spaces", default="mlp,conv")
    parser.add_argument("--variants", default="0,1,2", help="indices into VARIANTS")
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"device: {device_name(device)}, torch {torch.__version__}, batch {args.batch}\n")
    print("| space | variant | ms / step | peak MiB |\n|---|---|---|---|")
    for space in args.spaces.split(","):
        for label, options in (VARIANTS[int(i)] for i in args.variants.split(",")):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            opt, shape = build(space, device, "softmax", **options)
            ms = time_steps(opt, shape, args.batch, args.repeats, device, args.warmup)
            peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
            print(f"| {space} | {label} | {ms:.1f} | {peak:.0f} |", flush=True)


if __name__ == "__main__":
    main()
