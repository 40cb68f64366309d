"""Runs the configs of tests/test_distributed.py: ``python tests/ddp_worker.py RESULTS [--float64]``
in one process, or under ``torchrun --nproc_per_node 2`` in two (not a test file itself).

``--float64``: networks, structure and data in double precision, so that the comparison of
one and two processes sees the algorithm, not float32 rounding (which the BatchNorm backward of
a tiny conv net amplifies to about 1e-4 of a gradient norm after a step).
"""
import sys

import torch

from relnas import distributed, experiment, train

# A tiny MLP DAG on Boston and a tiny conv cell on 64 MNIST images. Batches that do not divide
# the splits (Boston: 301 / 101 examples in batches of 64; MNIST: 51 / 13 in batches of 20), so
# the last batch of an epoch is shared unequally; cutout and crop_flip draw on the global batch.
MLP = dict(dataset="boston", space="mlp", readout="sum", n_hidden=2, width=8, batch_size=64,
           epochs=2, w_lr=0.05, arch_lr=0.05, retrain_epochs=2, retrain_batch=100,
           retrain_optimizer="adam", retrain_lr=0.01, threads=1)
CONV = dict(dataset="mnist", space="conv", subset=64, C=2, layers=3, n_nodes=2,
            stem_multiplier=1, stem_stride=2, ops=["none", "max_pool_3x3", "skip_connect",
                                                    "sep_conv_3x3"],
            batch_size=20, epochs=2, arch_lr=0.05, retrain_C=4, retrain_layers=3,
            retrain_epochs=2, retrain_batch=20, cutout=8, threads=1)
CONFIGS = {
    "mlp-1st": dict(MLP, relaxation="gumbel", lam=0.1, order=1),
    "mlp-2nd": dict(MLP, relaxation="dirichlet", lam=0.1, order=2, learned_precision=True),
    "mlp-expert": dict(MLP, method="expert"),
    "mlp-prune": dict(MLP, method="prune", param_budget=400),  # from the expert's weights
    "mlp-random": dict(MLP, method="random", random_samples=2),
    "conv-1st": dict(CONV, relaxation="softmax", order=1, augment="crop_flip"),
    "conv-2nd": dict(CONV, relaxation="dirichlet", lam=0.1, order=2, hvp="exact",
                     learned_precision=True, epochs=1, retrain_epochs=1),  # double backward
}


def double_precision() -> None:
    """Default dtype float64, and every split of a run converted to it."""
    torch.set_default_dtype(torch.float64)
    init = train.Task.__init__

    def task(self, cfg, device):
        init(self, cfg, device)
        self.sets = {k: (x.double(), y) for k, (x, y) in self.sets.items()}
    train.Task.__init__ = task


if __name__ == "__main__":
    if "--float64" in sys.argv:
        double_precision()
    try:
        for name, cfg in CONFIGS.items():
            result = experiment.run(cfg, results_dir=sys.argv[1])
            if distributed.is_main():
                print(name, result["dir"], flush=True)
    finally:
        distributed.close()
