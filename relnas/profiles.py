"""Profile data: what each dataset runs at each scale, and the display name of each method.

A profile (``default``, ``smoke``, ``paper``) gives per dataset the config fields that differ
from ``relnas.config.Config``; ``SECOND_SPACE`` adds a second search space a profile also runs.
``method_label`` names the method of a config (the row of the tables, the legend of the
figures); every label string is made here, and the tables and figures read labels only through
the names below (``CELL_SUFFIX``, ``RELNAS_PREFIX``, ``label_base``).
"""
from __future__ import annotations

from typing import Any

from relnas import datasets
from relnas.config import Config, ConfigError

EXPERT_NAMES = {"mlp": "MLP 13-50-50-1", "lenet300": "LeNet-300-100", "lenet5": "LeNet-5",
                "darts_v2": "DARTS_V2 cell", "resnet": "ResNet-20"}

# The small conv cell of the CPU profiles (MNIST's second space, CIFAR-10's smoke and cpu): 4
# of the DARTS ops, one of them with weights
CELL_OPS = ("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3")
# Profiles: the fields that differ from relnas.config.Config per dataset and scale.
PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "boston": {
        # Full protocol of the notebook on 2 CPU cores in under 5 minutes. 160 structure steps
        # (32 epochs of 5 batches) instead of DARTS' ~20k, so arch_lr 0.1 instead of 3e-4: at
        # 3e-3 the entropy never left the uniform (method.md 3); 3 hidden vertices so that the
        # derived nets can differ (751 to 5,851 parameters). 40 epochs took 323 s from empty
        # results (BENCHMARKS.md), over the 5-minute budget. readout "sum": the head reads every
        # hidden vertex, so the per-vertex top-1 rule keeps one (edge, op) pair for each of
        # them and the prior decides how many of those are cheap (identity) or weighted layers;
        # with the head on the last vertex only, lambda 0 already derived the smallest net.
        "default": dict(space="mlp", readout="sum", n_hidden=3, width=50, batch_size=64,
                        epochs=32, w_lr=0.05, w_lr_min=0.005, arch_lr=0.1, weight_decay=1e-3,
                        retrain_epochs=200, retrain_batch=304, retrain_optimizer="adam",
                        retrain_lr=0.01, retrain_weight_decay=1e-4, random_samples=4, threads=1),
        "smoke": dict(space="mlp", readout="sum", n_hidden=2, width=8, batch_size=304, epochs=2,
                      w_lr=0.05, retrain_epochs=2, retrain_batch=304, retrain_optimizer="adam",
                      retrain_lr=0.01, random_samples=2, threads=1),
    },
    "mnist": {
        # The notebook's default run on 2 CPU cores: the search on the first 2,500 training
        # and 2,500 validation images (120 structure steps at arch_lr 0.1), every derived and
        # expert net retrained on all 50,000 training images for 8 epochs and evaluated on the
        # full validation and test sets (LeNet-300-100: 1.9 s an epoch, LeNet-5 18.6 s here).
        # 3 hidden vertices of 64 with the head on their sum: derived nets from 50,890 (one
        # hidden layer) to 151,370 parameters (three input layers); with 2 vertices the largest
        # was 101,130, so the smallest could not be half of it (method.md 3: a larger DAG).
        "default": dict(space="mlp", readout="sum", search_subset=2500, n_hidden=3, width=64,
                        batch_size=125, epochs=6, w_lr=0.05, arch_lr=0.1, retrain_epochs=8, retrain_batch=128,
                        retrain_optimizer="adam", retrain_lr=1e-3, retrain_weight_decay=0.0,
                        random_samples=3, threads=1),
        "smoke": dict(space="mlp", readout="sum", subset=256, n_hidden=1, width=8,
                      batch_size=128, epochs=1,
                      retrain_epochs=1, retrain_batch=128, retrain_optimizer="adam",
                      retrain_lr=1e-3, random_samples=2, threads=1, test_subset=1000),
        # DARTS conv cell for a GPU (device="cuda"): the search on 10,000 training + the 10,000
        # validation images, the derived network retrained on all 50,000 training images.
        # Sized without a GPU measurement (2026-11-28, estimate in BENCHMARKS.md): about 2 GPU
        # hours per seed with lambdas [0.1] and fixed A, 5-6 with the notebook's defaults (two
        # lambdas, fixed and learned A: learned A is second order). `python
        # benchmarks/plan_cost.py mnist --profile paper --device cuda` measures it.
        # arch_lr 3e-3: 10 epochs of 157 steps are about 1,600 structure steps, not DARTS'
        # ~20,000 at 3e-4 (method.md 3: a search must leave the uniform; unmeasured on a GPU).
        "paper": dict(space="conv", C=16, layers=5, batch_size=64, search_subset=10000,
                      arch_lr=3e-3,
                      epochs=10, retrain_epochs=20, retrain_batch=96, retrain_C=36,
                      retrain_layers=8, retrain_lr=0.025, cutout=0, drop_path=0.1,
                      auxiliary_weight=0.4, random_samples=4, threads=4, device="cuda"),
    },
    "cifar10": {
        # A few seconds on a CPU: the notebook's stored outputs for nbval.
        # Smoke profiles test on the first test images only (CIFAR-10: 500, all lossless):
        # they run the pipeline, they measure nothing (ResNet-20 on all 10,000 took most of a
        # smoke notebook's 2.5 minutes on an AVX2 CPU).
        "smoke": dict(space="conv", subset=64, C=4, layers=3, n_nodes=1, stem_stride=2,
                      ops=CELL_OPS, batch_size=32, epochs=1, arch_lr=0.05, retrain_C=4,
                      retrain_layers=3, retrain_epochs=1, retrain_batch=64,
                      retrain_optimizer="adam", retrain_lr=1e-3, random_samples=2, threads=1,
                      test_subset=500),
        # The honest small run of the whole protocol on 2 CPU cores (about 30 minutes from empty
        # results with the notebook's 2 seeds, 42 with 3; BENCHMARKS.md): a small cell (stem
        # stride 2, so 16 x 16 cells, C=8, 3 cells of 2 nodes, 4 DARTS ops; 0.38 s per
        # first-order step of 64 here) searched on 2,000 + 2,000 images for 4 epochs (128
        # structure steps at arch_lr 0.1; at 0.05, until 2026-11-30, the searches ended at
        # normalized entropy 0.66-0.89), every derived and expert net retrained on 4,000
        # images for 3 epochs (retraining is over half of the plan), crop + flip as DARTS.
        # Its accuracies are those of minutes of CPU training, far below the published ones.
        "cpu": dict(space="conv", augment="crop_flip", subset=4000, search_subset=2000, C=8,
                    layers=3, n_nodes=2, stem_stride=2, ops=CELL_OPS, batch_size=64,
                    epochs=4, w_lr=0.05, w_lr_min=0.005, arch_lr=0.1, retrain_C=16,
                    retrain_layers=3, retrain_epochs=3, retrain_batch=64,
                    retrain_optimizer="adam", retrain_lr=3e-3, retrain_weight_decay=1e-4,
                    random_samples=2, threads=1),
        # One GPU, search + retrain + test in about 8 minutes (aim: >= 93 %): the DARTS space at
        # 5 cells on 10,000 + 10,000 images, the fast path (bf16, channels_last); retrain 8 cells
        # of 36 channels for 30 epochs at batch 256 with cutout. Sized by estimate, not yet
        # measured on a GPU (benchmarks/gpu_check.sh measures it). Images resident as uint8.
        "quick": dict(space="conv", augment="crop_flip", search_subset=10000, C=16, layers=5,
                      batch_size=128, epochs=10, arch_lr=3e-3, retrain_C=36, retrain_layers=8,
                      retrain_epochs=30, retrain_batch=256, retrain_lr=0.1, cutout=16,
                      drop_path=0.1, auxiliary_weight=0.4, amp="bf16", channels_last=True,
                      resident="uint8", random_samples=2, threads=4, device="cuda"),
        # The DARTS CIFAR-10 protocol of method.md 5 (days of GPU time per seed; resumable
        # epoch by epoch): 8 cells of 16 channels searched 50 epochs on 25k + 25k, retrain 20
        # cells of 36 channels for 600 epochs, cutout 16, drop-path 0.2, auxiliary 0.4.
        "paper": dict(space="conv", augment="crop_flip", C=16, layers=8, batch_size=64,
                      epochs=50, retrain_C=36, retrain_layers=20, retrain_epochs=600,
                      retrain_batch=96, cutout=16, drop_path=0.2, auxiliary_weight=0.4,
                      resident="uint8", random_samples=4, threads=4, device="cuda"),
    },
}
# A second search space a profile also runs, beside its main one: a small DARTS-style conv cell
# on MNIST. Each of its searches costs more than an MLP search on 2 CPU cores, so it runs fewer
# methods: DARTS first order and relnas (fixed A, first order) per prior, at one lambda ("lam"),
# no random search and no pruning (the pruning budget comes from the main space).
SECOND_SPACE: dict[tuple[str, str], dict[str, Any]] = {
    # stem stride 2 (14x14 cells), C=8, 3 cells (normal, reduce, reduce), 2 nodes, 4 DARTS ops;
    # 64 structure steps (4 epochs of 16 batches of 32 on 500 + 500 images) at arch_lr 0.1:
    # with 8 steps (batch 128, 2 epochs, arch_lr 0.05, until 2026-11-30) the supernet's
    # validation loss stayed at chance (2.2-2.3, ln 10 = 2.30) and the entropy at 0.95-0.98
    ("mnist", "default"): dict(space="conv", subset=1000, C=8, layers=3, n_nodes=2,
                               stem_stride=2, ops=CELL_OPS, batch_size=32, epochs=4, w_lr=0.1,
                               w_lr_min=0.01, arch_lr=0.1, lam=0.1, retrain_C=8,
                               retrain_layers=3, retrain_epochs=3, retrain_batch=64,
                               retrain_optimizer="adam", retrain_lr=1e-2,
                               retrain_weight_decay=0.0, threads=1),
    ("mnist", "smoke"): dict(space="conv", subset=64, C=4, layers=3, n_nodes=1, stem_stride=2,
                             ops=CELL_OPS, batch_size=64, epochs=1, lam=0.1, retrain_C=4,
                             retrain_layers=3, retrain_epochs=1, retrain_batch=64,
                             retrain_optimizer="adam", retrain_lr=1e-3, threads=1,
                             test_subset=1000),
}
# The Dirichlet rows' structure lr as a multiple of the profile's arch_lr (that of DARTS and
# Gumbel). Its mean is softmax(theta) as theirs, but its pathwise gradient goes through a draw,
# and at their lr its searches stayed more spread: Boston, lambda 0, search only, seeds 0-2,
# normalized entropy of the mean 0.59 against DARTS' 0.46 and Gumbel's 0.33; at 3x 0.38. Chosen
# on that search diagnostic (issue 10: "enough steps and learning rate to leave the uniform"),
# not on test numbers: BENCHMARKS.md "The Dirichlet's structure lr".
DIRICHLET_ARCH_LR = 3.0
# The Dirichlet rows' relaxation and size prior (since 2026-11-30, session 11): the tempered
# concentration (draws from Dir(tau K softmax(theta)), tau annealed as the Gumbel's) and
# alpha = beta0 + prior_cost (1 - c) from 0.5 (the costliest op on an edge) to 1 (parameter-free
# ops), a prior whose density is largest at the cheapest corners. Before: concentration "exp"
# and alpha from 1 to 4, whose mode is inside the simplex; its searches let the concentration
# grow to 20-200 (draws = the mean) and ended spread (MNIST, lambda 1: normalized entropy
# 0.76-0.90). Chosen on search diagnostics (entropy, margins, the search's validation loss, the
# derived size per lambda), not on test numbers: BENCHMARKS.md "The tempered Dirichlet".
DIRICHLET_FIELDS = {"concentration": "tempered", "beta0": 0.5, "prior_cost": 0.5}


def relaxation_fields(relaxation: str, fields: dict[str, Any]) -> dict[str, Any]:
    """The config fields a relaxation's searches run with in place of the profile's
    ``fields``: the Dirichlet's structure lr (``DIRICHLET_ARCH_LR``) and ``DIRICHLET_FIELDS``
    where ``fields`` (a profile with its overrides) does not set them; none for the others."""
    if relaxation != "dirichlet":
        return {}
    lr = fields.get("arch_lr", Config.arch_lr) * DIRICHLET_ARCH_LR
    own = {k: fields.get(k, v) for k, v in DIRICHLET_FIELDS.items()}
    return {**own, "arch_lr": float(f"{lr:.12g}")}  # 0.3, not 0.30000000000000004


# The size prior's cost in the per-vertex simplex (since 2026-11-30, session 12): an entry's
# parameters over the most among its vertex's entries, not among its edge's ops (COST_SCOPES
# in relnas.relax). Per edge an MNIST input layer (50,240 weights) and a hidden one (4,160)
# both cost 1, and the Dirichlet's sparse prior made the searches commit early to input
# layers: 10 new seeds, lambda 0 / 0.1 / 1, median params 105,290 / 105,290 / 128,330 (larger
# with the prior); over the simplex 105,290 / 59,210 at 0.1 / 1, 57,130 at 10. Chosen on search
# diagnostics: BENCHMARKS.md "The size prior's cost over the vertex's simplex".
VERTEX_COST_SCOPE = "simplex"


def cost_scope_fields(simplex: str, fields: dict[str, Any]) -> dict[str, Any]:
    """The ``cost_scope`` of a relnas search in ``simplex``: the profile's or an override's
    when ``fields`` set it, else ``VERTEX_COST_SCOPE`` per vertex (per edge both are one)."""
    if "cost_scope" in fields or simplex != "vertex":
        return {}
    return {"cost_scope": VERTEX_COST_SCOPE}


# The simplex of the relnas rows (an explicit `simplex` override wins): in the MLP DAG the
# paper's eq. 2, one distribution per vertex over all its incoming (edge, op) pairs, so that
# edges compete for a vertex; in conv cells the per-edge simplex of DARTS, whose top-2 rule
# picks the edges (method.md 1). DARTS rows always use their per-edge softmax.
RELNAS_SIMPLEX = {"mlp": "vertex", "conv": "edge"}
# The lambda sweep also runs in these further simplices (rows labelled " per edge"): in the MLP
# DAG the per-edge simplex drops an edge when its zero op wins (method.md 3's prototype), the
# per-vertex rule keeps one (edge, op) pair per vertex; both show what the size prior does.
EXTRA_SWEEP_SIMPLICES = {"mlp": ("edge",), "conv": ()}
EXPERTS_FOR = {("boston", "mlp"): ("mlp",), ("mnist", "mlp"): ("lenet300", "lenet5"),
               ("mnist", "conv"): ("lenet300", "lenet5"), ("cifar10", "conv"): ("darts_v2", "resnet")}
PRUNED_EXPERT = {"boston": "mlp", "mnist": "lenet300", "cifar10": "resnet"}


# The profiles at the default scale of their dataset: their runs live in the results root and
# their files carry the bare dataset name (relnas.runs). Each dataset has one: `default` for
# Boston and MNIST, `cpu` for CIFAR-10 (whose protocol at full scale needs a GPU).
DEFAULT_SCALE = ("default", "cpu")


def base_config(dataset: str, profile: str = "default", **overrides: Any) -> dict[str, Any]:
    """The profile's fields for ``dataset`` with ``overrides`` (None values are ignored); a
    registered dataset takes those of the built-in one it is ``like`` (``relnas.datasets``)."""
    kind = datasets.like(dataset)
    if kind not in PROFILES:
        raise ConfigError(f"dataset={dataset!r} has no plans; allowed: "
                          + ", ".join(n for n in datasets.names() if datasets.like(n) in PROFILES))
    if profile not in PROFILES[kind]:
        raise ConfigError(f"profile={profile!r} is not defined for {dataset}; allowed: "
                          + ", ".join(PROFILES[kind]))
    fields = {"dataset": dataset, **PROFILES[kind][profile]}
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return fields


def profile_names() -> list[str]:
    """Every profile defined for some dataset, sorted."""
    return sorted({name for profiles in PROFILES.values() for name in profiles})


# The fields that tell a second-space search from a search in the same space of another
# profile (the MNIST `paper` profile's DARTS cell, CIFAR-10).
_SPACE_FIELDS = ("space", "C", "layers", "n_nodes", "stem_stride", "ops")


def is_second_space(cfg: Config) -> bool:
    """Whether ``cfg`` searches the search space of one of the ``SECOND_SPACE`` entries."""
    return any(datasets.like(cfg.dataset) == dataset
               and all(getattr(cfg, k) == fields[k] for k in _SPACE_FIELDS)
               for (dataset, _), fields in SECOND_SPACE.items())


# Notebook overrides that also reach the second space; the others (subset, batch_size, lrs, ...)
# are tuned for the main space and stay there.
CELL_OVERRIDES = ("epochs", "retrain_epochs", "device", "threads", "deterministic")


# ---------------------------------------------------------------------------- method labels
CELL_SUFFIX = " (conv cell)"  # searches in a profile's second space (the MNIST conv cell)
RELNAS_PREFIX = "relnas-"  # the searches with a prior (lambda applies to them only)
RANDOM_LABEL, PRUNE_LABEL = "Random search", "Magnitude pruning"
# random search with a parameter budget: run at each size the lambda sweep derived
RANDOM_MATCHED_LABEL = "Random search (matched size)"
EXHAUSTIVE_LABEL = "Exhaustive (best on validation)"  # every architecture of the space trained


def expert_label(expert: str) -> str:
    return f"Expert {EXPERT_NAMES[expert]}"


def darts_label(order: int) -> str:
    return f"DARTS {'1st' if order == 1 else '2nd'} order"


SIMPLEX_SUFFIX = {"edge": " per edge", "vertex": " per vertex"}


def relnas_label(relaxation: str, learned_precision: bool, order: int = 1,
                 simplex_suffix: str = "", precision_update: str = "hypergradient") -> str:
    """A prior row; learned A by the hypergradient is always second order, its fixed-A twin
    says "2nd order"; A by the evidence fixed point says "evidence A"; a row in another simplex
    than its space's default (``RELNAS_SIMPLEX``) says which."""
    name = RELNAS_PREFIX + relaxation.capitalize() + simplex_suffix
    if learned_precision:
        return name + (" + evidence A" if precision_update == "evidence" else " + learned A")
    return name + (" 2nd order" if order == 2 else "")


def method_label(cfg: Config) -> str:
    """The display name of a config's method (the row of the tables). Searches in a profile's
    second space (the MNIST small conv cell, ``SECOND_SPACE``) end in " (conv cell)"."""
    if cfg.method == "expert":
        return expert_label(cfg.expert)
    if cfg.method == "prune":
        return f"{PRUNE_LABEL} ({EXPERT_NAMES[cfg.expert]})"
    if cfg.method == "exhaustive":
        return EXHAUSTIVE_LABEL
    suffix = CELL_SUFFIX if is_second_space(cfg) else ""
    if cfg.method == "random":
        return (RANDOM_MATCHED_LABEL if cfg.param_budget > 0 else RANDOM_LABEL) + suffix
    if cfg.relaxation == "softmax" and cfg.lam == 0:
        return darts_label(cfg.order) + suffix
    simplex = "" if cfg.simplex == RELNAS_SIMPLEX[cfg.space] else SIMPLEX_SUFFIX[cfg.simplex]
    return relnas_label(cfg.relaxation, cfg.learned_precision, cfg.order, simplex,
                        cfg.precision_update) + suffix


def label_base(label: str) -> tuple[str, bool]:
    """``(method, conv cell)`` of a label: without the conv-cell suffix, and a pruning label
    without its expert's name (``PRUNE_LABEL``)."""
    cell = label.endswith(CELL_SUFFIX)
    base = label[:-len(CELL_SUFFIX)] if cell else label
    return (PRUNE_LABEL if base.startswith(PRUNE_LABEL) else base), cell
