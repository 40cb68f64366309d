"""Discrete networks: a ``Genotype`` rebuilt as an ``nn.Module``, and the expert models.

- ``build_network(genotype)`` -> ``MLPNet`` (the MLP DAG) or ``ConvNet`` (the DARTS evaluation
  network of a conv cell) with a plain ``forward(x)``.
- Expert-designed reference models (method.md 5, baseline 1), built by ``build_expert``:
  ``mlp``: Boston 13-50-50-1 MLP with ReLU; ``lenet300``: LeNet-300-100 (784-300-100-10, ReLU),
  LeCun et al. 1998 / Han et al. 2015; ``lenet5``: LeNet-5 in the Caffe form (conv 20 5x5, pool,
  conv 50 5x5, pool, 500, 10) used by Han et al. 2015 and the sparse variational dropout paper
  (431k parameters); ``darts_v2``: the published DARTS_V2 cell (Liu et al. 2019), built as a
  retrain network; ``resnet``: a ResNet-20-style network (He et al. 2016) for CIFAR-10.
- ``count_parameters`` / ``count_flops`` (the paper's size criterion and FLOPs per image), and
  ``recalibrate_batchnorm`` (precise BatchNorm statistics after a retraining).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from relnas import ops
from relnas.data import batches
from relnas.genotype import Genotype, KeptEdge
from relnas.space import preprocess, reduction_layers, stem


def count_parameters(module: nn.Module) -> int:
    """Number of scalar parameters of the model used for prediction (shared tensors counted
    once). The DARTS auxiliary head only serves training, so it is not counted (as in DARTS)."""
    return sum(p.numel() for name, p in module.named_parameters()
               if not name.startswith("auxiliary_head."))


def count_flops(model: nn.Module, in_shape: tuple[int, ...]) -> int:
    """Floating-point operations of one forward pass of one example in eval mode, as torch's
    ``FlopCounterMode`` counts them: convolutions and matrix products, a multiply-add = 2
    (elementwise ops, pooling and BatchNorm are not counted). The model's mode is restored;
    ``forward`` is called directly, past a ``torch.compile`` of the module's call."""
    from torch.utils.flop_counter import FlopCounterMode
    param = next(model.parameters())
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model.forward(torch.zeros((1, *in_shape), dtype=param.dtype, device=param.device))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def _check_computable(edges: Sequence[KeptEdge], inputs: set[int]) -> None:
    dsts = {dst for _, _, dst in edges}
    for op, src, dst in edges:
        if src not in inputs and src not in dsts:
            raise ValueError(f"edge {op}: {src} -> {dst} reads vertex {src}, which has no input")


class MLPNet(nn.Module):
    """The MLP of a genotype: ``v_i = sum_{(op, j, i) kept} f_op(v_j)``, head on the last vertex
    (``readout="last"``) or on the sum of the hidden vertices with an input (``"sum"``)."""

    def __init__(self, genotype: Genotype):
        super().__init__()
        self.genotype = genotype
        self.kept = tuple(sorted(genotype.edges("dag"), key=lambda t: (t[2], t[1])))
        _check_computable(self.kept, {0})
        reached = {dst for _, _, dst in self.kept}
        self.outputs = (genotype.n_hidden,) if genotype.readout == "last" else \
            tuple(sorted(v for v in reached if 1 <= v <= genotype.n_hidden))
        if not self.outputs or not set(self.outputs) <= reached:
            raise ValueError(f"no edge reaches the output vertex {genotype.n_hidden}" if
                             genotype.readout == "last" else "no edge reaches a hidden vertex")
        self.edges = nn.ModuleList(
            ops.build_mlp_op(op, genotype.in_dim if src == 0 else genotype.width, genotype.width)
            for op, src, _ in self.kept)
        self.head = nn.Linear(genotype.width, genotype.out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        states = {0: x.flatten(1)}
        for (_, src, dst), op in zip(self.kept, self.edges):
            h = op(states[src])
            states[dst] = states[dst] + h if dst in states else h
        return self.head(sum(states[v] for v in self.outputs))


def drop_path(x: torch.Tensor, p: float) -> torch.Tensor:
    """Zero whole samples with probability ``p`` and rescale the rest by ``1 / (1 - p)``."""
    keep = 1.0 - p
    mask = torch.empty(x.shape[0], *(1,) * (x.dim() - 1), dtype=x.dtype, device=x.device)
    return x * mask.bernoulli_(keep) / keep


class DiscreteCell(nn.Module):
    """A DARTS evaluation cell: each kept edge ``(op, src, dst)`` adds ``f_op(state_src)`` to node
    ``dst``; a node without edges is zero; output = concat of ``concat`` nodes."""

    def __init__(self, edges: Sequence[KeptEdge], concat: Sequence[int], C_pp: int, C_p: int,
                 C: int, reduction: bool, reduction_prev: bool, affine: bool):
        super().__init__()
        self.reduction, self.concat = reduction, tuple(concat)
        self.kept = tuple(sorted(edges, key=lambda t: (t[2], t[1])))
        _check_computable(self.kept, {0, 1})
        self.preprocess0, self.preprocess1 = preprocess(C_pp, C_p, C, reduction_prev, affine)
        self.edges = nn.ModuleList(
            ops.build_conv_op(op, C, 2 if reduction and src < 2 else 1, affine)
            for op, src, _ in self.kept)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float = 0.0) -> torch.Tensor:
        states = {0: self.preprocess0(s0), 1: self.preprocess1(s1)}
        for (_, src, dst), op in zip(self.kept, self.edges):
            h = op(states[src])
            if self.training and drop_prob > 0 and not isinstance(op, nn.Identity):
                h = drop_path(h, drop_prob)
            states[dst] = states[dst] + h if dst in states else h
        step = 2 if self.reduction else 1
        zeros = torch.zeros_like(states[1][:, :, ::step, ::step])
        return torch.cat([states.get(v, zeros) for v in self.concat], dim=1)


class AuxiliaryHead(nn.Module):
    """DARTS AuxiliaryHeadCIFAR: ReLU, avg-pool 5 stride 3, 1x1 conv 128, BN, ReLU, 2x2 conv 768,
    BN, ReLU, linear. Exact for 8x8 maps (CIFAR); for other sizes the pooled map is resized to 2x2
    (adaptive average pooling), so 7x7 maps (MNIST) work too."""

    def __init__(self, C: int, n_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(C, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(),
            nn.Conv2d(128, 768, 2, bias=False), nn.BatchNorm2d(768), nn.ReLU())
        self.classifier = nn.Linear(768, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(x)
        if min(x.shape[-2:]) >= 5:
            x = nn.functional.avg_pool2d(x, 5, stride=3, count_include_pad=False)
        x = nn.functional.adaptive_avg_pool2d(x, 2)
        return self.classifier(self.features(x).flatten(1))


class ConvNet(nn.Module):
    """The DARTS evaluation network for a conv genotype.

    ``forward(x)`` returns logits, or ``(logits, aux_logits)`` in training mode when
    ``auxiliary``. ``drop_path_prob`` is a public attribute a training loop may schedule.
    """

    def __init__(self, genotype: Genotype, C: int = 36, layers: int = 20, stem_multiplier: int = 3,
                 affine: bool = True, auxiliary: bool = False, drop_path_prob: float = 0.0,
                 stem_stride: int = 1):
        super().__init__()
        if genotype.space != "conv":
            raise ValueError(f"ConvNet needs a conv genotype, got {genotype.space!r}")
        self.genotype, self.drop_path_prob = genotype, drop_path_prob
        C_curr = stem_multiplier * C
        self.stem = stem(genotype.in_dim, C_curr, stem_stride)
        C_pp, C_p, C_curr = C_curr, C_curr, C
        self.cells = nn.ModuleList()
        reduction_prev = False
        self.aux_layer = reduction_layers(layers)[1] if auxiliary else None
        for layer in range(layers):
            reduction = layer in reduction_layers(layers)
            C_curr = C_curr * 2 if reduction else C_curr
            edges = genotype.edges("reduce" if reduction else "normal")
            self.cells.append(DiscreteCell(edges, genotype.concat, C_pp, C_p, C_curr, reduction,
                                           reduction_prev, affine))
            reduction_prev = reduction
            C_pp, C_p = C_p, len(genotype.concat) * C_curr
            if layer == self.aux_layer:
                self.auxiliary_head = AuxiliaryHead(C_p, genotype.out_dim)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_p, genotype.out_dim)

    def forward(self, x: torch.Tensor):
        s0 = s1 = self.stem(x)
        aux_logits = None
        for layer, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if layer == self.aux_layer and self.training:
                aux_logits = self.auxiliary_head(s1)
        logits = self.classifier(self.pool(s1).flatten(1))
        return logits if aux_logits is None else (logits, aux_logits)


def build_network(genotype: Genotype, **options) -> nn.Module:
    """``MLPNet(genotype)`` (no options) or ``ConvNet(genotype, **options)`` (C, layers,
    stem_multiplier, affine, auxiliary, drop_path_prob, stem_stride)."""
    if genotype.space == "mlp":
        if options:
            raise TypeError(f"an mlp genotype takes no build options, got {sorted(options)}")
        return MLPNet(genotype)
    return ConvNet(genotype, **options)



# ---------------------------------------------------------------------------- expert models
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
        # pool, then ReLU (monotone): ReLU-then-pool's numbers, a step 20-30 % faster on CPU
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2(x), 2))
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
            self.short = nn.Sequential(ops.StridedPointwise(c_in, c_out, stride),
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
        return mlp(int(torch.Size(in_shape).numel()), out_dim, (300, 100))
    if name == "lenet5":
        return LeNet5(in_shape[0], out_dim, in_shape[-1])
    if name == "darts_v2":
        genotype = Genotype(**{**DARTS_V2.__dict__, "in_dim": in_shape[0], "out_dim": out_dim})
        return build_network(genotype, **conv_options)
    if name == "resnet":
        return ResNet(in_shape[0], out_dim)
    raise ValueError(f"unknown expert model {name!r}; allowed: mlp, lenet300, lenet5, darts_v2, resnet")


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                          batch_size: int, shard: Callable | None = None) -> int:
    """Precise BatchNorm statistics (pycls' PreciseBN; Wu & Johnson 2021): reset the running
    mean and variance of every BatchNorm layer and set them to the average of the batch
    statistics over ``x`` (in order, batches of ``batch_size``), with the weights fixed.
    The moving average of training lags behind weights that move fast (short trainings).
    Drop-path is off during the pass; the model is left in eval mode. Returns the layer count.
    ``shard(x, y)``: each batch cut to this process's slice first (``relnas.distributed``).
    """
    layers = [m for m in model.modules()
              if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not layers:
        return 0
    momenta = [m.momentum for m in layers]
    drop = getattr(model, "drop_path_prob", None)
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches of this pass
    try:
        if drop is not None:
            model.drop_path_prob = 0.0
        model.train()
        for xb, yb in batches(x, y, batch_size, shuffle=False):
            model(xb if shard is None else shard(xb, yb)[0])
    finally:
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum
        if drop is not None:
            model.drop_path_prob = drop
        model.eval()
    return len(layers)
