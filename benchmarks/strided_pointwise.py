"""Time a strided 1x1 convolution (forward and backward) as ``nn.Conv2d(stride=2)`` against
``relnas.ops.StridedPointwise`` (every second pixel, stride 1: the same function), at the shapes
of the CIFAR-10 ``cpu`` profile's FactorizedReduce (channels-last batches, as its crop-and-flip
augmentation gives them), and report the largest relative error of each one's weight gradient
against float64.

    python benchmarks/strided_pointwise.py [--threads 1] [--repeats 7] [--steps 50]

Each row: median over ``--repeats`` of the mean ms per forward + backward over ``--steps``,
variants interleaved. Rows with fewer input channels than the CPU's oneDNN block (8 on AVX2)
are left out of the timing: there the plain convolution's gradient is wrong or crashes.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from relnas.ops import StridedPointwise
from relnas.runtime import device_name

SHAPES = [(16, 8, 16), (32, 16, 16), (32, 16, 8), (64, 32, 8)]  # (C_in, C_out, H = W), batch 64


def _step(conv, x):
    conv.zero_grad(set_to_none=True)
    conv(x).square().mean().backward()


def _time(conv, x, steps):
    start = time.perf_counter()
    for _ in range(steps):
        _step(conv, x)
    return (time.perf_counter() - start) / steps * 1e3


def weight_error(conv, x) -> float:
    """Largest relative error of the float32 weight gradient against float64."""
    _step(conv, x)
    got = conv.weight.grad.double()
    ref = type(conv)(*_args(conv), bias=False).double()
    ref.load_state_dict(conv.state_dict())
    _step(ref, x.double())
    want = ref.weight.grad
    return float((got - want).abs().max() / want.abs().max())


def _args(conv):
    if isinstance(conv, StridedPointwise):
        return conv.in_channels, conv.out_channels, conv.step
    return conv.in_channels, conv.out_channels, 1, 2


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"device: {device_name(torch.device('cpu'))}, torch {torch.__version__}, "
          f"batch {args.batch}, channels last\n")
    print("| C_in -> C_out, H | Conv2d(stride=2), ms | StridedPointwise, ms | ratio "
          "| weight grad error: Conv2d / StridedPointwise |")
    print("|---|---|---|---|---|")
    for c_in, c_out, h in SHAPES:
        x = torch.randn(args.batch, c_in, h, h).contiguous(memory_format=torch.channels_last)
        plain = nn.Conv2d(c_in, c_out, 1, stride=2, bias=False)
        mine = StridedPointwise(c_in, c_out, 2)
        mine.load_state_dict(plain.state_dict())
        errors = [weight_error(plain, x), weight_error(mine, x)]
        for conv in (plain, mine):  # warm up
            _time(conv, x, 5)
        times = {0: [], 1: []}
        for _ in range(args.repeats):
            for i, conv in enumerate((plain, mine)):
                times[i].append(_time(conv, x, args.steps))
        a, b = statistics.median(times[0]), statistics.median(times[1])
        print(f"| {c_in} -> {c_out}, {h} | {a:.3f} | {b:.3f} | {b / a:.2f} "
              f"| {errors[0]:.1e} / {errors[1]:.1e} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
