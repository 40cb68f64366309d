"""Training helpers: precise BatchNorm statistics after retraining."""
import torch
from torch import nn

from relnas.nets import recalibrate_batchnorm


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm1d(3)
        self.drop_path_prob = 0.3
        self.seen_drop = []

    def forward(self, x):
        self.seen_drop.append(self.drop_path_prob)
        return self.bn(x)


def test_recalibration_averages_the_batch_statistics_of_the_data():
    torch.manual_seed(0)
    net = _Net()
    net.bn.running_mean.fill_(5.0)  # stale statistics from "training"
    x = torch.randn(40, 3) * 2 + 1
    y = torch.zeros(40)
    assert recalibrate_batchnorm(net, x, y, batch_size=10) == 1
    means = torch.stack([x[i:i + 10].mean(0) for i in range(0, 40, 10)]).mean(0)
    variances = torch.stack([x[i:i + 10].var(0) for i in range(0, 40, 10)]).mean(0)
    torch.testing.assert_close(net.bn.running_mean, means)
    torch.testing.assert_close(net.bn.running_var, variances)
    assert net.bn.momentum == 0.1 and net.drop_path_prob == 0.3 and not net.training
    assert set(net.seen_drop) == {0.0}, "no drop-path while the statistics are collected"


def test_recalibration_leaves_weights_and_bn_free_models_alone():
    mlp = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    before = [p.clone() for p in mlp.parameters()]
    assert recalibrate_batchnorm(mlp, torch.randn(8, 3), torch.zeros(8), batch_size=4) == 0
    assert all(torch.equal(a, b) for a, b in zip(before, mlp.parameters()))
    net = _Net()
    weight = net.bn.weight.clone()
    recalibrate_batchnorm(net, torch.randn(8, 3), torch.zeros(8), batch_size=4)
    assert torch.equal(net.bn.weight, weight)
