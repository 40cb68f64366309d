"""One flat, primitive-typed config for every run, validated in one place before any compute.

The same dataclass serves the notebooks (papermill parameters), the CLI (``--set key=value``)
and the results store (its JSON is hashed into the run folder name). Every magic number is a
named field with its source in a comment.
"""
from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Mapping

from relnas.rules import EXPERTS, ConfigError, check_cross, suggest as _suggest  # noqa: F401 (API)

DATASETS = ("boston", "mnist", "cifar10")
METHODS = ("expert", "random", "prune", "search", "exhaustive")
SPACES = ("mlp", "conv")
RELAXATIONS = ("softmax", "gumbel", "dirichlet")
# the Dirichlet's maps of theta (relnas.relaxations)
CONCENTRATIONS = ("softplus", "elu1", "exp", "tempered")
# the structural prior's form (relnas.relaxations): -log p(gamma), KL(q || p), or the expected
# description length -sum_k gamma_k log P(op k occurs under p)
PRIOR_FORMS = ("logp", "kl", "code")


def _registry(space: str) -> dict:
    """The op registry of a space (``relnas.ops``, the only list of ops: an op added there with
    ``register_op`` is valid in ``ops``)."""
    from relnas import ops
    return ops.MLP_OPS if space == "mlp" else ops.CONV_OPS


def default_ops(space: str) -> tuple[str, ...]:
    """The ops a space searches when ``ops`` is empty (``relnas.ops``' primitives)."""
    from relnas import ops
    return ops.MLP_PRIMITIVES if space == "mlp" else ops.DARTS_PRIMITIVES


def _choice(*allowed: str) -> dict:
    return {"choices": allowed}


def _range(lo: float | None = None, *, gt: bool = False, hi: float | None = None) -> dict:
    return {"lo": lo, "gt": gt, "hi": hi}


# Fields added after runs were stored: left out of ``to_dict()`` (so of the stored config and of
# its hash, the run folder's name) while they hold their default, so that adding a field keeps
# every stored run. Never change the default of a field listed here: stored runs would be reused
# for the new default.
OPTIONAL_FIELDS = ("search_subset", "precision_update", "readout", "data_fingerprint", "augment",
                   "amp", "channels_last", "compile", "resident", "cost_scope", "test_subset",
                   "retrain")


DIRICHLET_CONCENTRATION = "exp"


@dataclass(frozen=True)
class Config:
    """A complete run: data, method, search space, relaxation, bilevel search, retraining."""
    # --- what is run ---
    dataset: str = "boston"             # built-in (DATASETS) or registered (relnas.datasets)
    data_fingerprint: str = ""          # a registered dataset's file checksum (make_config sets it)
    method: str = field(default="search", metadata=_choice(*METHODS))
    expert: str = "mlp"                 # expert model (method expert/prune), see EXPERTS
    space: str = field(default="mlp", metadata=_choice(*SPACES))
    seed: int = field(default=0, metadata=_range(0, hi=2**31 - 1))  # numpy seeds < 2**32
    # --- data ---
    subset: int = field(default=0, metadata=_range(0))            # 0 = all training examples
    valid_fraction: float = field(default=0.0, metadata=_range(0.0, hi=0.9))  # 0 = dataset default
    batch_size: int = field(default=64, metadata=_range(1))       # DARTS search batch 64
    search_subset: int = field(default=0, metadata=_range(0))     # 0 = search on all of train/valid
    test_subset: int = field(default=0, metadata=_range(0))       # 0 = test on all test examples
    # images, search and retrain: "crop_flip" = DARTS' random 32x32 crop of the 4-padded image and
    # horizontal flip, drawn on the data's device (relnas.augment)
    augment: str = field(default="none", metadata=_choice("none", "crop_flip"))
    # how built-in images stay in memory (on the run's device): normalized "float32", or raw
    # "uint8" (a quarter of the bytes), normalized batch by batch (relnas.train.Task.inputs)
    resident: str = field(default="float32", metadata=_choice("float32", "uint8"))
    # --- search space ---
    n_hidden: int = field(default=3, metadata=_range(1))          # MLP DAG hidden vertices
    width: int = field(default=50, metadata=_range(1))            # MLP vertex width (expert: 50)
    # MLP head input: "last" hidden vertex, or the "sum" of all hidden vertices (every vertex
    # then reaches the output, as a DARTS cell concatenates its nodes; method.md 1, 4)
    readout: str = field(default="last", metadata=_choice("last", "sum"))
    ops: tuple = ()                                               # () = the space's default ops
    C: int = field(default=16, metadata=_range(1))                # DARTS search: 16 channels
    layers: int = field(default=8, metadata=_range(1))            # DARTS search: 8 cells
    n_nodes: int = field(default=4, metadata=_range(1))           # DARTS: 4 intermediate nodes
    stem_multiplier: int = field(default=3, metadata=_range(1))   # DARTS: 3
    stem_stride: int = field(default=1, metadata=_choice(1, 2))   # DARTS: 1; 2 halves H, W first
    # --- relaxation and structural prior lambda * R(Gamma) ---
    relaxation: str = field(default="softmax", metadata=_choice(*RELAXATIONS))
    simplex: str = field(default="edge", metadata=_choice("edge", "vertex"))
    lam: float = field(default=0.0, metadata=_range(0.0))
    # Structural prior p (method.md 3): "logp" = -log p(gamma), the paper's product of
    # probabilities; "kl" = KL(q || p); "code" = -sum_k gamma_k log P(op k occurs under p), the
    # product of the ops' probabilities of occurrence weighted by gamma (the expected
    # description length of the structure; linear in gamma). Size prior: p's parameters from
    # each op's cost c in [0, 1] (parameters over the most on its edge): Concrete logits
    # -prior_cost * c, Dirichlet concentrations beta0 + prior_cost * (1 - c); prior_cost = 0 is
    # a symmetric prior (DrNAS: prior_form="kl", beta0=0.5). prior_cost 3 and beta0 1: the
    # prototype of method.md 3.
    prior_form: str = field(default="logp", metadata=_choice(*PRIOR_FORMS))
    prior_cost: float = field(default=3.0, metadata=_range(0.0))
    # the cost c is normalized per edge (method.md 3) or over the entry's simplex group (per
    # vertex: input and hidden layers compared by their weights; relnas.relax.COST_SCOPES)
    cost_scope: str = field(default="edge", metadata=_choice("edge", "simplex"))
    beta0: float = field(default=1.0, metadata=_range(0.0, gt=True))  # Dirichlet prior base
    # Dirichlet concentration map of theta; make_config gives a Dirichlet run "exp"
    # (DIRICHLET_CONCENTRATION) unless told: its mean is softmax(theta), as DARTS' and Gumbel's
    # structure, so arch_lr moves all three alike; the plans still give the Dirichlet 3x
    # (relnas.profiles.DIRICHLET_ARCH_LR: its gradient goes through a draw). softplus, the
    # default until 2026-11-30 and kept so stored runs keep their hash, moves the mean
    # additively and its searches stayed near uniform (BENCHMARKS.md "The Dirichlet's
    # concentration map").
    concentration: str = field(default="softplus", metadata=_choice(*CONCENTRATIONS))
    # Gumbel temperature; the tempered Dirichlet's concentration scale (relnas.relaxations)
    tau_start: float = field(default=1.0, metadata=_range(0.0, gt=True))
    tau_end: float = field(default=0.1, metadata=_range(0.0, gt=True))
    tau_schedule: str = field(default="exp", metadata=_choice("exp", "linear", "constant"))
    hard: bool = False                                            # straight-through Gumbel
    # --- bilevel search ---
    epochs: int = field(default=50, metadata=_range(1))           # DARTS: 50
    order: int = field(default=1, metadata=_choice(1, 2))
    hvp: str = field(default="finite", metadata=_choice("finite", "exact"))
    xi: float | None = None                                       # None = current inner lr (DARTS)
    fd_eps: float = field(default=0.01, metadata=_range(0.0, gt=True))  # DARTS eps = 0.01/||v||
    w_lr: float = field(default=0.025, metadata=_range(0.0, gt=True))     # DARTS
    w_lr_min: float = field(default=0.001, metadata=_range(0.0))          # DARTS cosine floor
    w_momentum: float = field(default=0.9, metadata=_range(0.0, hi=1.0))
    weight_decay: float = field(default=3e-4, metadata=_range(0.0, gt=True))  # DARTS; = A/n_train
    grad_clip: float = field(default=5.0, metadata=_range(0.0, gt=True))  # DARTS
    arch_lr: float = field(default=3e-4, metadata=_range(0.0, gt=True))   # DARTS Adam
    arch_beta1: float = field(default=0.5, metadata=_range(0.0, hi=1.0))
    arch_beta2: float = field(default=0.999, metadata=_range(0.0, hi=1.0))
    arch_weight_decay: float = field(default=1e-3, metadata=_range(0.0))
    learned_precision: bool = False                               # learn A on the outer level
    precision_lr: float = field(default=1e-2, metadata=_range(0.0, gt=True))
    # how learned A moves: "hypergradient" (outer level, needs order 2) or "evidence" (MacKay's
    # fixed point after every search epoch, any order; relnas.evidence)
    precision_update: str = field(default="hypergradient",
                                  metadata=_choice("hypergradient", "evidence"))
    # --- discretization ---
    # edge simplex: edges kept per vertex (0 = space default: mlp all that beat zero, conv 2);
    # vertex simplex: (edge, op) pairs kept per vertex (0 = 1), or keep_mass > 0: every pair with
    # at least that mass (method.md 1)
    top_k: int = field(default=0, metadata=_range(0))
    keep_mass: float = field(default=0.0, metadata=_range(0.0, hi=1.0))
    prune_threshold: float = field(default=0.0, metadata=_range(0.0, hi=1.0))
    param_budget: int = field(default=0, metadata=_range(0))      # 0 = no budget
    random_samples: int = field(default=8, metadata=_range(1))    # random search: architectures
    # --- retraining the derived network ---
    # False: a search that derives and counts its net, no retrain (claim 1's extra size seeds,
    # relnas.plans.plan's size_seeds): it has parameters and decisiveness, no test metric
    retrain: bool = True
    retrain_epochs: int = field(default=100, metadata=_range(1))
    retrain_lr: float = field(default=0.025, metadata=_range(0.0, gt=True))
    retrain_optimizer: str = field(default="sgd", metadata=_choice("sgd", "adam"))
    retrain_weight_decay: float = field(default=3e-4, metadata=_range(0.0))
    retrain_batch: int = field(default=96, metadata=_range(1))    # DARTS retrain: 96
    retrain_layers: int = field(default=20, metadata=_range(1))   # DARTS retrain: 20 cells
    retrain_C: int = field(default=36, metadata=_range(1))        # DARTS retrain: 36 channels
    cutout: int = field(default=0, metadata=_range(0))            # DARTS retrain: 16
    drop_path: float = field(default=0.0, metadata=_range(0.0, hi=0.99))  # DARTS retrain: 0.2
    auxiliary_weight: float = field(default=0.0, metadata=_range(0.0))    # DARTS retrain: 0.4
    precise_bn: bool = True         # BatchNorm statistics recomputed on train after retraining
    # --- execution ---
    device: str = "cpu"                                           # cpu | cuda | cuda:N | auto
    deterministic: bool = True
    # the fast path (relnas.fast): bf16 autocast, channels_last conv weights and activations,
    # torch.compile of the forward; each tested against the plain path on the CPU
    amp: str = field(default="none", metadata=_choice("none", "bf16"))
    channels_last: bool = False
    compile: bool = False
    threads: int = field(default=2, metadata=_range(1, hi=256))  # 1e5 threads segfault torch

    def to_dict(self) -> dict[str, Any]:
        """Every field (tuples as lists), except ``OPTIONAL_FIELDS`` at their default: what
        ``dataclasses.asdict`` gives for these immutable fields, without its deep copy of each
        (a third of reading a plan's stored runs)."""
        out = {}
        for k in FIELDS:
            v = getattr(self, k)
            if not (k in OPTIONAL_FIELDS and v == _DEFAULTS[k]):
                out[k] = list(v) if isinstance(v, tuple) else v
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Config":
        return make_config(**data)

    def replace(self, **changes: Any) -> "Config":
        return make_config(**{**self.to_dict(), **changes})

    @property
    def op_names(self) -> tuple[str, ...]:
        return tuple(self.ops) or default_ops(self.space)

    @property
    def raw_images(self) -> bool:
        """Whether the run keeps built-in images raw (uint8), each batch normalized on use (the
        same bits): with ``resident="uint8"``, and in a search that retrains nothing (claim 1's
        size seeds), which reads its search subset alone: converting all of MNIST to float took
        0.30 of such a resumed run's 0.41 s (2026-12-07)."""
        return self.resident == "uint8" or (self.method == "search" and not self.retrain
                                            and self.dataset in ("mnist", "cifar10"))


FIELDS = {f.name: f for f in dataclasses.fields(Config)}
_DEFAULTS = {name: FIELDS[name].default for name in OPTIONAL_FIELDS}
_HINTS = typing.get_type_hints(Config)


def _coerce(name: str, value: Any) -> Any:
    """Check the type of one value (papermill and YAML give ints for floats, lists for tuples)."""
    hint = _HINTS[name]
    if hint is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{name} must be a list of op names, got {value!r}")
        return tuple(value)
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType)
    if optional:
        if value is None:
            return None
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
        if not math.isfinite(value):
            raise ConfigError(f"{name}={value!r} must be a finite number")
        return float(value)
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be a string, got {value!r} ({type(value).__name__})")
    return value


def _check_field(name: str, value: Any) -> None:
    meta = FIELDS[name].metadata
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(f"{name}={value!r} is not allowed; allowed values: "
                          + ", ".join(map(repr, meta["choices"])) + _suggest(value, meta["choices"]))
    lo, hi = meta.get("lo"), meta.get("hi")
    if value is None or lo is None and hi is None:
        return
    if lo is not None and (value < lo or (meta["gt"] and value == lo)):
        raise ConfigError(f"{name}={value!r} must be {'>' if meta['gt'] else '>='} {lo}")
    if hi is not None and value > hi:
        raise ConfigError(f"{name}={value!r} must be <= {hi}")


def make_config(**values: Any) -> Config:
    """Build a validated :class:`Config`; unknown keys are refused with the closest valid name.
    A registered dataset gets its files' ``data_fingerprint`` unless a stored one is given."""
    for key in values:
        if key not in FIELDS:
            raise ConfigError(f"unknown parameter {key!r}" + _suggest(key, FIELDS)
                              + "; see relnas.config.Config for the fields")
    if values.get("relaxation") == "dirichlet" and "concentration" not in values:
        values = {**values, "concentration": DIRICHLET_CONCENTRATION}
    coerced = {k: _coerce(k, v) for k, v in values.items()}
    for key, value in coerced.items():
        _check_field(key, value)
    cfg = Config(**coerced)
    check_cross(cfg, _registry(cfg.space))
    if not cfg.data_fingerprint and cfg.dataset not in DATASETS:
        from relnas import datasets
        cfg = dataclasses.replace(cfg, data_fingerprint=datasets.fingerprint(cfg.dataset))
    return cfg
