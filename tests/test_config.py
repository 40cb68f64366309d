"""Config validation: every bad input is refused with a ConfigError naming the parameter,
before any compute and before anything is written; good inputs pass and round-trip."""
import json

import pytest
import torch

from relnas import experiment, plans, runtime, train
from relnas.config import Config, ConfigError, make_config
from relnas.plans import as_list, plan, run_experiment

# A tiny valid run (Boston is bundled with the package: no data root needed).
TINY = dict(dataset="boston", n_hidden=2, width=8, epochs=3, retrain_epochs=3, batch_size=64,
            retrain_batch=64, threads=1)


@pytest.fixture(autouse=True)
def _guard(monkeypatch):
    """One thread; no read-only results roots; any compute fails the test."""
    torch.set_num_threads(1)
    monkeypatch.delenv("RELNAS_RESULTS_READ", raising=False)

    def forbidden(*args, **kwargs):
        raise AssertionError("compute started although the input is invalid")

    for module, name in [(experiment, "compute"), (train, "Task"), (runtime, "setup"),
                         (plans, "run")]:
        monkeypatch.setattr(module, name, forbidden)


# (overrides, words the message must contain): wrong types as papermill ``-p`` passes them,
# sizes, names (with the allowed values or the closest valid name), ranges, cross-field rules.
BAD = {
    "seed as string": (dict(seed="3"), ["seed", "integer", "'3'"]),
    "fractional epochs": (dict(epochs=2.5), ["epochs", "integer", "2.5"]),
    "bool as string": (dict(relaxation="gumbel", hard="yes"), ["hard", "True or False"]),
    "lam as string": (dict(relaxation="dirichlet", lam="0.1"), ["lam", "number", "'0.1'"]),
    "order as string": (dict(order="2"), ["order", "integer"]),
    "bool for int": (dict(width=True), ["width", "integer"]),
    "zero width": (dict(width=0), ["width", ">= 1"]),
    "zero epochs": (dict(epochs=0), ["epochs", ">= 1"]),
    "negative batch": (dict(batch_size=-1), ["batch_size", ">= 1"]),
    "zero threads": (dict(threads=0), ["threads", ">= 1"]),
    "valid fraction too large": (dict(valid_fraction=0.95), ["valid_fraction", "<= 0.9"]),
    "unknown dataset": (dict(dataset="bostn"), ["dataset", "'boston'", "did you mean 'boston'"]),
    "unknown relaxation": (dict(relaxation="dirichlett"),
                           ["relaxation", "'gumbel'", "did you mean 'dirichlet'"]),
    "unknown method": (dict(method="serach"), ["method", "did you mean 'search'"]),
    "unknown op": (dict(ops=["linear", "linear_rleu"]),
                   ["ops", "linear_rleu", "linear_tanh", "did you mean 'linear_relu'"]),
    "ops not a list": (dict(ops=3), ["ops", "list of op names"]),
    "only zero ops": (dict(ops=["zero"]), ["ops", "zero"]),
    "duplicate ops": (dict(ops=["linear", "linear"]), ["ops", "duplicates"]),
    "unknown expert": (dict(method="expert", expert="lenet5"), ["expert", "allowed: mlp"]),
    "unknown key": (dict(lamda=0.1), ["lamda", "did you mean 'lam'"]),
    "negative lam": (dict(relaxation="dirichlet", lam=-0.1), ["lam", ">= 0"]),
    "zero tau_start": (dict(relaxation="gumbel", tau_start=0), ["tau_start", "> 0"]),
    "negative tau_start": (dict(relaxation="gumbel", tau_start=-1.0), ["tau_start", "> 0"]),
    "tau_end above tau_start": (dict(tau_start=0.5, tau_end=1.0), ["tau_end", "tau_start"]),
    "zero beta0": (dict(relaxation="dirichlet", beta0=0), ["beta0", "> 0"]),
    "top_k above in-degree": (dict(n_hidden=2, top_k=3), ["top_k", "in-degree"]),
    "learned A with order 1": (dict(relaxation="dirichlet", learned_precision=True, order=1),
                               ["learned_precision", "order=2"]),
    "order 2 with xi 0": (dict(order=2, xi=0), ["xi", "order"]),
    "xi with order 1": (dict(order=1, xi=0.01), ["xi", "order"]),
    "negative xi": (dict(order=2, xi=-0.1), ["xi", ">= 0"]),
    "lam with softmax": (dict(relaxation="softmax", lam=0.1), ["lam", "softmax"]),
    "hard with dirichlet": (dict(relaxation="dirichlet", hard=True), ["hard", "dirichlet"]),
    "prune without budget": (dict(method="prune"), ["prune", "param_budget"]),
    "conv space on boston": (dict(space="conv"), ["space", "boston"]),
    "w_lr_min above w_lr": (dict(w_lr=0.01, w_lr_min=0.1), ["w_lr_min", "w_lr"]),
    "unknown device": (dict(device="tpu"), ["device", "'cpu'"]),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_input_refused_before_compute(name, tmp_path):
    overrides, words = BAD[name]
    with pytest.raises(ConfigError) as info:
        make_config(**{**TINY, **overrides})
    for word in words:
        assert word in str(info.value), (word, str(info.value))
    # The same refusal through run(): nothing computed (the guard), nothing written.
    with pytest.raises(ConfigError):
        experiment.run({**TINY, **overrides}, results_dir=tmp_path / "results")
    assert not (tmp_path / "results").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_cuda_refused_on_cpu_only_machine(tmp_path):
    for device in ("cuda", "cuda:0"):
        with pytest.raises(ConfigError, match=r"device='cuda.*no CUDA GPU.*device='cpu'"):
            experiment.run({**TINY, "device": device}, results_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_config_built_directly_is_validated_by_run(tmp_path):
    """``Config(...)`` bypasses make_config; run() must not trust it (a hash of ``seed="3"``
    would differ from ``seed=3``, ``epochs=0`` would crash after the run folder exists)."""
    for bad in (Config(**{**TINY, "epochs": 0}), Config(**{**TINY, "seed": "3"})):
        with pytest.raises(ConfigError):
            experiment.run(bad, results_dir=tmp_path / "results")
    assert not (tmp_path / "results").exists()


def test_unwritable_results_folder_refused_before_compute(tmp_path):
    # A folder under a regular file: unwritable even for root (permission bits would not be).
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match="results_dir=.*a_file/results.*not writable"):
        experiment.run(TINY, results_dir=blocker / "results")
    with pytest.raises(ConfigError, match="results_dir"):
        run_experiment("boston", profile="smoke", seeds=[0], results_dir=blocker / "results")


# Notebook-level parameters (papermill -p): refused by run_experiment before the first run.
BAD_PLAN = {
    "empty seeds": (dict(seeds=[]), ["seeds", "empty"]),
    "empty seeds as YAML": (dict(seeds="[]"), ["seeds", "empty"]),
    "duplicate seeds as YAML": (dict(seeds="[0, 0]"), ["seeds", "duplicates"]),
    "seed as string in list": (dict(seeds=["1"]), ["seeds", "integer", "'1'"]),
    "negative seed": (dict(seeds=[-1]), ["seeds", ">= 0"]),
    "duplicate lambdas": (dict(lambdas=[0.1, 0.1]), ["lambdas", "duplicates"]),
    "empty lambdas": (dict(lambdas=[]), ["lambdas", "empty"]),
    "lambda as string": (dict(lambdas=["0.1"]), ["lambdas", "number", "'0.1'"]),
    "negative lambda": (dict(lambdas=[-1.0]), ["lambdas", ">= 0"]),
    "unknown relaxation": (dict(relaxations=["dirchlet"]), ["relaxations", "'dirichlet'"]),
    "softmax as prior": (dict(relaxations=["softmax"]), ["relaxations", "'gumbel'"]),
    "unknown profile": (dict(profile="papr"), ["profile", "default", "smoke"]),
    "unknown override": (dict(lamda=0.1), ["lamda", "did you mean 'lam'"]),
    "bad override value": (dict(epochs=0), ["epochs", ">= 1"]),
    "learned A not a bool": (dict(learned_precision="[yes, maybe]"), ["learned_precision"]),
    "seeds None": (dict(seeds=None), ["seeds", "list"]),
}


@pytest.mark.parametrize("name", sorted(BAD_PLAN))
def test_bad_plan_parameter_refused_before_any_run(name, tmp_path):
    overrides, words = BAD_PLAN[name]
    kwargs = {"profile": "smoke", "seeds": [0], **overrides}
    with pytest.raises(ConfigError) as info:
        run_experiment("boston", results_dir=tmp_path / "results", **kwargs)
    for word in words:
        assert word in str(info.value), (word, str(info.value))
    assert not (tmp_path / "results").exists()


def test_plan_refuses_unknown_dataset():
    with pytest.raises(ConfigError, match="dataset='cifar100'.*allowed: boston, mnist"):
        plan("cifar100", seeds=[0])


def test_valid_inputs_are_accepted_and_coerced():
    cfg = make_config(**{**TINY, "epochs": 4.0}, lam=1, relaxation="dirichlet", w_lr=1,
                      ops=["linear", "zero"], xi=None)
    assert cfg.lam == 1.0 and isinstance(cfg.lam, float)
    assert cfg.w_lr == 1.0 and isinstance(cfg.w_lr, float)
    assert cfg.epochs == 4 and isinstance(cfg.epochs, int)
    assert cfg.ops == ("linear", "zero") and cfg.op_names == ("linear", "zero")
    assert make_config(**TINY, ops="linear, zero").ops == ("linear", "zero")  # CLI / papermill
    assert make_config(**TINY, relaxation="gumbel", hard=True, order=2, xi=0.01).xi == 0.01
    assert make_config(**TINY, method="prune", param_budget=100).param_budget == 100
    assert make_config(**TINY, top_k=2).top_k == 2  # n_hidden=2: in-degree 2


def test_notebook_list_parameters_from_yaml_strings():
    assert as_list("seeds", "[0, 1, 2]") == [0, 1, 2]
    assert as_list("seeds", "3") == [3] and as_list("seeds", 3) == [3]
    assert as_list("lambdas", "[0.01, 1]") == [0.01, 1]
    assert as_list("relaxations", "dirichlet") == ["dirichlet"]
    assert as_list("seeds", (0, 1)) == [0, 1]
    configs = plan("boston", profile="smoke", seeds=as_list("seeds", "[0, 1]"),
                   lambdas=as_list("lambdas", "0.1"), relaxations=as_list("r", "gumbel"),
                   learned_precision=[False])
    assert {c.seed for c in configs} == {0, 1}
    assert {c.lam for c in configs if c.relaxation == "gumbel"} == {0.1}
    assert len(configs) == len(set(configs))  # distinct configs, distinct run folders


def test_valid_run_reaches_compute(tmp_path, monkeypatch):
    """The guard above is real: a valid config gets as far as compute (here a stub)."""
    calls = []

    def stub(cfg, folder, **kwargs):
        calls.append(cfg)
        return {"test_metric": 1.0}, [{"epoch": 1}]

    monkeypatch.setattr(experiment, "compute", stub)
    result = experiment.run({**TINY, "lam": 1, "relaxation": "dirichlet"}, results_dir=tmp_path)
    assert len(calls) == 1 and calls[0].lam == 1.0 and not result["cached"]
    assert result["config"] == calls[0].to_dict()
    # Config instances pass too, and hit the cache of the equal dict config.
    again = experiment.run(make_config(**TINY, lam=1.0, relaxation="dirichlet"),
                           results_dir=tmp_path)
    assert again["cached"] and len(calls) == 1


def test_json_round_trip():
    for cfg in (make_config(**TINY), make_config(**TINY, ops=["linear", "zero"], lam=0.5,
                                                 relaxation="gumbel", order=2, xi=0.02, hard=True),
                make_config(dataset="mnist", space="conv", subset=256, top_k=2)):
        assert Config.from_dict(cfg.to_dict()) == cfg
        assert Config.from_dict(json.loads(cfg.to_json())) == cfg
        assert cfg.replace() == cfg
        assert hash(Config.from_dict(json.loads(cfg.to_json()))) == hash(cfg)


def test_paper_profile_on_a_machine_without_gpu_is_refused_before_any_run(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the paper profile's device is valid here")
    with pytest.raises(ConfigError, match="device='cuda': no CUDA GPU.*'cpu'"):
        run_experiment("mnist", profile="paper", results_dir=tmp_path / "results")
    assert not (tmp_path / "results").exists()



@pytest.mark.parametrize("name,value", [("lam", float("nan")), ("tau_end", float("nan")),
                                        ("xi", float("nan")), ("weight_decay", float("inf")),
                                        ("prune_threshold", float("nan")),
                                        ("arch_lr", float("-inf"))])
def test_non_finite_numbers_are_refused_by_name(name, value):
    extra = {"order": 2} if name == "xi" else {}
    with pytest.raises(ConfigError, match=f"{name}=.*finite"):
        make_config(**{name: value}, **extra)


def test_seed_has_an_upper_bound_numpy_accepts():
    make_config(seed=2**31 - 1)
    with pytest.raises(ConfigError, match="seed=.*<="):
        make_config(seed=2**32)


@pytest.mark.parametrize("device", ["cuda:x", "cuda:-1", "cuda:0:0", "cuda0", "cuda:01"])
def test_malformed_cuda_devices_are_refused_whatever_the_machine(device):
    with pytest.raises(ConfigError, match="cuda:N"):
        make_config(device=device)


def test_thread_and_worker_counts_have_upper_bounds():
    with pytest.raises(ConfigError, match="threads=.*<= 256"):
        make_config(threads=100000)
    with pytest.raises(ConfigError, match="workers must be an integer from 1 to 64"):
        run_experiment("boston", profile="smoke", seeds=[0], workers=1000)


def test_a_dirichlet_run_gets_the_exp_concentration_unless_told_and_stored_runs_keep_theirs():
    assert make_config(**TINY, relaxation="dirichlet").concentration == "exp"
    assert make_config(**TINY, relaxation="dirichlet", concentration="elu1").concentration == "elu1"
    assert make_config(**TINY, relaxation="gumbel").concentration == "softplus"  # hash unchanged
    stored = make_config(**TINY, relaxation="dirichlet", concentration="softplus").to_dict()
    again = make_config(**stored)
    assert again.concentration == "softplus" and again.to_dict() == stored
