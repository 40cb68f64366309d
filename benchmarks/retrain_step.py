"""Time one retraining step (``relnas.train.supervised_step``) of the MNIST nets, with the plain
(foreach) optimizer against ``relnas.fast.optimizer`` (torch's fused kernel), torch's gradient
clipping against ``relnas.fast.clip_grad_norm_`` (the same numbers, no product by one), and
LeNet-5's ReLU-then-pool against its pool-then-ReLU forward (the same numbers).

    python benchmarks/retrain_step.py [--threads 1] [--batch 128] [--repeats 7] [--steps 40]

Random inputs of MNIST's shape; the nets of the MNIST default profile: the largest derived MLP
(three 784 -> 64 input layers, head on their sum; 151,370 parameters), the smallest (one input
layer, 50,890), LeNet-300-100 and LeNet-5 (Adam, as the profile retrains). Each row: median
over ``--repeats`` of the mean ms per step over ``--steps`` steps (variants interleaved, so a
slow spell of a shared machine hits them alike), and the ratios: fused to plain Adam (both with
torch's clipping), relnas's clipping to torch's (both with fused Adam; relnas's is what runs).
Compare within one run only.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.nn import functional as F

from relnas import fast, nets
from relnas.genotype import Genotype
from relnas.runtime import device_name, place
from relnas.train import supervised_step


class ReluThenPool(nets.LeNet5):
    """LeNet-5 as it was until 2026-11-30 (session 13): ReLU, then pool."""

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


def mlp(edges) -> torch.nn.Module:
    return nets.build_network(Genotype(space="mlp", cells=(("dag", tuple(edges)),), in_dim=784,
                                       out_dim=10, n_hidden=3, width=64, readout="sum"))


NETS = {
    "MLP 151,370": lambda: mlp([("linear", 0, 1), ("linear", 0, 2), ("linear", 0, 3)]),
    "MLP 50,890": lambda: mlp([("linear", 0, 1), ("identity", 1, 2), ("identity", 1, 3)]),
    "LeNet-300-100": lambda: nets.build_expert("lenet300", (1, 28, 28), 10),
    "LeNet-5": lambda: nets.LeNet5(),
    "LeNet-5, ReLU then pool": lambda: ReluThenPool(),
}


def stepper(build, fused: bool, batch: int, clip=None):
    torch.manual_seed(0)
    model = place(build(), torch.device("cpu"))
    params = list(model.parameters())
    opt = fast.optimizer("adam", params, lr=1e-3) if fused else \
        torch.optim.Adam(params, lr=1e-3, foreach=True)
    step = supervised_step(model, opt, F.cross_entropy, grad_clip=5.0)
    x, y = torch.randn(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
    if clip is None:
        return lambda: step((x, y))

    def with_clip():  # the step with ``clip`` in place of relnas's
        saved, fast.clip_grad_norm_ = fast.clip_grad_norm_, clip
        try:
            return step((x, y))
        finally:
            fast.clip_grad_norm_ = saved
    return with_clip


VARIANTS = {"plain": dict(fused=False, clip=torch.nn.utils.clip_grad_norm_),
            "fused": dict(fused=True, clip=torch.nn.utils.clip_grad_norm_),
            "fused, relnas clip": dict(fused=True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    variants = {(name, kind): stepper(build, batch=args.batch, **options)
                for name, build in NETS.items() for kind, options in VARIANTS.items()}
    times: dict = {key: [] for key in variants}
    for step in variants.values():  # warm-up
        for _ in range(5):
            step()
    for _ in range(args.repeats):
        for key, step in variants.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            times[key].append((time.perf_counter() - start) / args.steps * 1e3)
    print(f"device: {device_name(torch.device('cpu'))}, torch {torch.__version__}, "
          f"batch {args.batch}\n")
    print("| net | plain Adam, ms/step | fused Adam, ms/step | fused Adam, relnas clip, ms/step "
          "| fused / plain | relnas clip / torch's |")
    print("|---|---|---|---|---|---|")
    ms = {key: statistics.median(v) for key, v in times.items()}
    for name in NETS:
        plain, fused, ours = (ms[(name, kind)] for kind in VARIANTS)
        print(f"| {name} | {plain:.2f} | {fused:.2f} | {ours:.2f} | {fused / plain:.2f} "
              f"| {ours / fused:.2f} |")
    new, old = ms[("LeNet-5", "fused, relnas clip")], ms[("LeNet-5, ReLU then pool",
                                                         "fused, relnas clip")]
    print(f"\nLeNet-5 pool-then-ReLU / ReLU-then-pool (fused Adam): {new / old:.2f}")


if __name__ == "__main__":
    main()
