"""Time one bilevel search step (arch step + weight step) for the MLP and conv spaces.

    python benchmarks/search_step.py [--device cpu|cuda] [--batch 64] [--repeats 10] [--threads 2]
        [--spaces mlp,conv] [--variants 0,1,2] [--warmup 2] [--relaxation softmax] [--stat median]
        [--paths plain,fast,compiled] [--batches 64,256] [--json out.json]

``--paths`` (issue 13) times the same step along the plain path (float32, a host read of every
reported number per step) and the fast path of ``relnas.fast`` (bf16 autocast, channels_last,
no host synchronization inside the step; both paths draw crop + flip on the device each step;
``compiled``: the same under ``torch.compile``, its compile time reported apart). Those rows time
``--repeats`` steps back to back with one device synchronization at the end, and add training
images per second and the seconds of a DARTS search epoch (25k + 25k images at that batch).

Random inputs of the real shapes (MNIST-MLP: 784 -> 3 vertices of width 128 -> 10; CIFAR-10
DARTS supernet: 8 cells, C=16, 32x32x3 -> 10; ``boston``: 13 -> 2 vertices of width 50 -> 1 with
the MSE loss, the Boston profile; ``cell``: the MNIST default profile's small conv cell, 28x28x1,
stem stride 2, C=8, 3 cells of 2 nodes, 4 ops); prints a Markdown table (ms per step, median or
minimum of --repeats after --warmup steps, peak memory on CUDA). Compare variants within one
run only; ``--stat min`` is steadier on a shared machine.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.nn import functional as F

from relnas.bilevel import BilevelOptimizer
from relnas.prior import WeightPrior
from relnas.runtime import device_name
from relnas.relax import Architecture
from relnas.space import ConvSupernet, MLPSupernet

VARIANTS = [("order 1", dict(order=1)), ("order 2, finite HVP", dict(order=2, hvp="finite")),
            ("order 2, exact HVP", dict(order=2, hvp="exact")),
            ("order 2, finite HVP, learned A", dict(order=2, hvp="finite", learned=True))]


CELL_OPS = ("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3")


def build(space: str, device, relaxation: str, channels_last: bool = False, **options):
    loss, classes = F.cross_entropy, 10
    if space == "mlp":
        net, shape = MLPSupernet(784, 10, n_hidden=3, width=128), (784,)
    elif space == "boston":
        net, shape, classes = MLPSupernet(13, 1, n_hidden=2, width=50), (13,), 0
        loss = F.mse_loss
    elif space == "cell":
        net = ConvSupernet(1, 10, C=8, layers=3, n_nodes=2, op_names=CELL_OPS, stem_stride=2)
        shape = (1, 28, 28)
    else:
        net, shape = ConvSupernet(3, 10, C=16, layers=8), (3, 32, 32)
    net = net.to(device)
    if channels_last:  # what relnas.runtime.place does for conv nets on the CPU
        net = net.to(memory_format=torch.channels_last)
    learned = options.get("order") == 2 and options.pop("learned", False)
    arch = Architecture(net.arch_spec(), relaxation=relaxation,
                        generator=torch.Generator().manual_seed(0)).to(device)
    prior = WeightPrior.from_weight_decay(net.weight_groups(), weight_decay=3e-4, n_train=25000,
                                          learned=learned).to(device)
    lam = 0.0 if relaxation == "softmax" else 0.1
    opt = BilevelOptimizer(net, arch, prior, loss, n_train=25000, lam=lam, **options)
    return opt, shape, classes


def time_steps(opt, shape, classes, batch, repeats, device, warmup=2, stat="median"):
    def batch_of():
        x = torch.randn(batch, *shape, device=device)
        if classes == 0:
            return x, torch.randn(batch, 1, device=device)
        return x, torch.randint(0, classes, (batch,), device=device)
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
    return 1000 * (min(times) if stat == "min" else statistics.median(times))


def time_path(opt, shape, classes, batch, repeats, device, warmup, path):
    """ms per step over ``repeats`` steps run back to back (one synchronization at the end), and
    the seconds of the first step (the compile, for ``compiled``)."""
    from relnas import augment
    x = torch.randn(batch, *shape, device=device)
    y = torch.randint(0, max(classes, 1), (batch,), device=device) if classes else \
        torch.randn(batch, 1, device=device)
    fast = path != "plain"
    opt.sync = not fast
    images = len(shape) == 3
    if fast and images:
        x = x.contiguous(memory_format=torch.channels_last)
    fill = augment.fill_value((0.5,) * shape[0], (0.25,) * shape[0], like=x) if images else None
    generator = torch.Generator(device=device).manual_seed(0)

    def step():
        xt, xv = x, x
        if images:  # crop + flip of both batches on the device, as a CIFAR-10 run does
            xt = augment.random_crop_flip(x, fill=fill, generator=generator)
            xv = augment.random_crop_flip(x, fill=fill, generator=generator)
        ctx = torch.autocast(device.type, dtype=torch.bfloat16) if fast else torch.enable_grad()
        with ctx:
            return opt.step((xt, y), (xv, y), temperature=1.0)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()
    start = time.perf_counter()
    step()
    sync()
    first = time.perf_counter() - start
    for _ in range(warmup):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        stats = step()
    sync()
    ms = 1000 * (time.perf_counter() - start) / max(repeats, 1)
    float(next(iter(stats.values())))  # the step really ran (a device number is read once)
    return ms, first


def main_paths(args, device) -> None:
    import json
    rows = []
    print("| space | order | batch | path | ms / step | train images/s | s per 25k+25k epoch "
          "| peak MiB | first step s |\n|---|---|---|---|---|---|---|---|---|")
    batches = [int(b) for b in (args.batches or str(args.batch)).split(",")]
    for space in args.spaces.split(","):
        for label, options in (VARIANTS[int(i)] for i in args.variants.split(",")):
            for batch in batches:
                for path in args.paths.split(","):
                    if device.type == "cuda":
                        torch.cuda.reset_peak_memory_stats(device)
                    torch.manual_seed(0)
                    opt, shape, classes = build(space, device, args.relaxation,
                                                channels_last=path != "plain", **dict(options))
                    if path == "compiled":
                        opt.net.compile()
                    ms, first = time_path(opt, shape, classes, batch, args.repeats, device,
                                          args.warmup, path)
                    peak = torch.cuda.max_memory_allocated(device) / 2**20 \
                        if device.type == "cuda" else float("nan")
                    row = {"space": space, "variant": label, "batch": batch, "path": path,
                           "ms_per_step": ms, "images_per_s": 1000 * batch / ms,
                           "epoch_s": 25000 / batch * ms / 1000, "peak_mib": peak,
                           "first_step_s": first, "device": device_name(device),
                           "torch": torch.__version__}
                    rows.append(row)
                    print(f"| {space} | {label} | {batch} | {path} | {ms:.1f} | "
                          f"{row['images_per_s']:.0f} | {row['epoch_s']:.0f} | {peak:.0f} | "
                          f"{first:.1f} |", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--spaces", default="mlp,conv")
    parser.add_argument("--variants", default="0,1,2", help="indices into VARIANTS")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--relaxation", default="softmax", choices=("softmax", "gumbel", "dirichlet"))
    parser.add_argument("--stat", default="median", choices=("median", "min"))
    parser.add_argument("--layouts", default="nchw",
                        help="comma list of nchw, channels_last: each conv variant in each layout")
    parser.add_argument("--paths", default="",
                        help="comma list of plain, fast, compiled (relnas.fast); see the docstring")
    parser.add_argument("--batches", default="", help="comma list of batch sizes (--paths rows)")
    parser.add_argument("--json", default="", help="write the --paths rows here")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"device: {device_name(device)}, torch {torch.__version__}, batch {args.batch}, "
          f"relaxation {args.relaxation}, {args.stat} of {args.repeats} steps\n")
    if args.paths:
        return main_paths(args, device)
    print("| space | variant | layout | ms / step | peak MiB |\n|---|---|---|---|---|")
    for space in args.spaces.split(","):
        layouts = args.layouts.split(",") if space in ("conv", "cell") else ["nchw"]
        for label, options in (VARIANTS[int(i)] for i in args.variants.split(",")):
            for layout in layouts:
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                opt, shape, classes = build(space, device, args.relaxation,
                                            channels_last=layout == "channels_last", **dict(options))
                ms = time_steps(opt, shape, classes, args.batch, args.repeats, device,
                                args.warmup, args.stat)
                peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" \
                    else float("nan")
                print(f"| {space} | {label} | {layout} | {ms:.1f} | {peak:.0f} |", flush=True)


if __name__ == "__main__":
    main()
