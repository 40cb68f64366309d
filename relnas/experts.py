"""Expert-designed reference models (method.md 5, baseline 1).

- ``mlp``: Boston 13-50-50-1 MLP with ReLU.
- ``lenet300``: LeNet-300-100 (784-300-100-10, ReLU), LeCun et al. 1998 / Han et al. 2015.
- ``lenet5``: LeNet-5 in the Caffe form (conv 20 5x5, pool, conv 50 5x5, pool, 500, 10) used by
  Han et al. 2015 and the sparse variational dropout paper (431k parameters).
- ``darts_v2``: the published DARTS_V2 cell (Liu et al. 2019), built as a retrain network.
- ``resnet``: a ResNet-20-style network (He et al. 2016) for CIFAR-10.
"""
from __future__ import annotations

from torch import nn
from torch.nn import functional as F

from relnas.derive import Genotype, build_network

# DARTS_V2 from the DARTS paper's genotypes.py, as (op, src, dst) with inputs 0, 1 and nodes 2..5.
DARTS_V2 = Genotype(
    space="conv", in_dim=3, out_dim=10, n_nodes=4, concat=(2, 3, 4, 5),
    cells=(("normal", (("sep_conv_3x3", 0, 2), ("sep_conv_3x3", 1, 2),
                       ("sep_conv_3x3", 0, 3), ("sep_conv_3x3", 1, 3),
                       ("sep_conv_3x3", 1, 4), ("skip_connect", 0, 4),
                       ("skip_connect", 0, 5), ("dil_conv_3x3", 2, 5))),
           ("reduce", (("max_pool_3x3", 0, 2), ("max_pool_3x3", 1, 2),
                       ("skip_connect", 2, 3), ("max_pool_3x3", 1, 3),
                       ("max_pool_3x3", 0, 4), ("skip_connect", 2, 4),
                       ("skip_connect", 2, 5), ("max_pool_3x3", 1, 5)))))


def mlp(in_dim: int, out_dim: int, hidden: tuple[int, ...] = (50, 50)) -> nn.Module:
    layers, dims = [], (in_dim, *hidden)
    for a, b in zip(dims, dims[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(nn.Flatten(), *layers, nn.Linear(dims[-1], out_dim))


class LeNet5(nn.Module):
    def __init__(self, in_channels: int = 1, n_classes: int = 10, size: int = 28):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 20, 5)
        self.conv2 = nn.Conv2d(20, 50, 5)
        side = ((size - 4) // 2 - 4) // 2
        self.fc1 = nn.Linear(50 * side * side, 500)
        self.fc2 = nn.Linear(500, n_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


class _Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.short = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.short = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                       nn.BatchNorm2d(c_out))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.short(x))


class ResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 images: three stages of ``n`` basic blocks, 16/32/64 channels."""

    def __init__(self, in_channels: int = 3, n_classes: int = 10, n: int = 3, width: int = 16):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU())
        blocks, c = [], width
        for stage in range(3):
            c_out = width * 2 ** stage
            for i in range(n):
                blocks.append(_Block(c, c_out, 2 if stage and i == 0 else 1))
                c = c_out
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(c, n_classes)

    def forward(self, x):
        x = self.blocks(self.stem(x))
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


def build_expert(name: str, in_shape: tuple[int, ...], out_dim: int, **conv_options) -> nn.Module:
    """The expert model ``name`` for inputs of ``in_shape`` (without batch) and ``out_dim`` outputs."""
    if name == "mlp":
        return mlp(in_shape[0], out_dim)
    if name == "lenet300":
        n_in = 1
        for d in in_shape:
            n_in *= d
        return mlp(n_in, out_dim, (300, 100))
    if name == "lenet5":
        return LeNet5(in_shape[0], out_dim, in_shape[-1])
    if name == "darts_v2":
        genotype = Genotype(**{**DARTS_V2.__dict__, "in_dim": in_shape[0], "out_dim": out_dim})
        return build_network(genotype, **conv_options)
    if name == "resnet":
        return ResNet(in_shape[0], out_dim)
    raise ValueError(f"unknown expert model {name!r}; allowed: mlp, lenet300, lenet5, darts_v2, resnet")
