"""The diagnostic scripts under tools/ run and print what they say they print."""
import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dirichlet_decisiveness_prints_a_row_per_variant_and_lambda(capsys):
    tool = _load("dirichlet_decisiveness")
    assert tool.main(["--seeds", "0", "--lambdas", "0", "10", "--variants", "sparse"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[1:]]
    assert [(r[0].split(" (")[0], r[1]) for r in rows] == [
        ("DARTS", "0"), ("beta0 0.2, prior cost 0.6", "0"), ("beta0 0.2, prior cost 0.6", "10")]
    for name, lam, mean_h, draw_h, sum_beta, margin, valid, params, per_seed in rows:
        assert 0.0 <= float(mean_h) <= 1.0 and float(margin) >= 0 and float(valid) > 0
        assert int(params.replace(",", "")) >= 751  # Boston's smallest net
        assert per_seed == params  # one seed: its own size is the median
        # entropy is concave: a draw's expected entropy is at most that of the mean (Jensen;
        # 16 draws, so a little Monte-Carlo slack)
        assert float(draw_h) <= float(mean_h) + 0.02
        assert (sum_beta == "nan") == name.startswith("DARTS")


def test_dirichlet_decisiveness_runs_the_gumbel_rows_per_seed(capsys):
    tool = _load("dirichlet_decisiveness")
    assert tool.main(["--seeds", "0", "1", "--lambdas", "1", "--variants", "edge_cost",
                      "--relaxation", "gumbel", "--no-darts"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    (row,) = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[1:]]
    assert row[0].startswith("the profile, cost normalized per edge") and row[1] == "1"
    assert row[4] == "nan"  # no concentration: the Gumbel's rows
    sizes = [int(p.replace(",", "")) for p in row[8].split(" / ")]
    assert len(sizes) == 2 and min(sizes) <= int(row[7].replace(",", "")) <= max(sizes)


def test_dirichlet_decisiveness_searches_the_asked_simplex_and_variant(monkeypatch, capsys):
    tool = _load("dirichlet_decisiveness")
    seen = []

    def measure(cfg, warmup=0):
        seen.append((cfg.simplex, cfg.prior_form, cfg.beta0, cfg.prior_cost, cfg.lam))
        return dict(entropy_norm=0.5, sample_entropy_norm=0.4, sum_beta=1.0,
                    margin_median=0.5, valid=0.2, params=751)

    monkeypatch.setattr(tool, "measure", measure)
    for simplex in ("edge", "vertex"):
        assert tool.main(["--seeds", "0", "--lambdas", "1", "--variants", "code_wide",
                          "--no-darts", "--simplex", simplex]) == 0
    assert seen == [("edge", "code", 0.05, 1.0, 1.0), ("vertex", "code", 0.05, 1.0, 1.0)]
    assert "description-length prior" in capsys.readouterr().out


def test_dirichlet_prior_force_pushes_cheap_ops_first_then_the_leader(capsys):
    tool = _load("dirichlet_prior_force")
    assert tool.main([]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[1:]]
    assert len(rows) == 8 and lines[0].count("alpha") == 4
    for state, tau, big, hidden, identity, zero in rows:
        big, hidden, identity = float(big), float(hidden), float(identity)
        if state == "uniform":  # from the start: off the costly input layer, onto cheap ops
            assert big < 0 < hidden < identity
        else:  # once an input layer leads, the prior grows it most, whatever its cost
            assert big > hidden > 0 and big > identity


def test_dirichlet_decisiveness_warmup_takes_no_structure_step_in_its_epochs(tmp_path):
    import torch

    from relnas import runtime, search, train
    from relnas.config import make_config
    from relnas.profiles import PROFILES

    tool = _load("dirichlet_decisiveness")
    cfg = make_config(dataset="boston", relaxation="dirichlet", simplex="vertex", lam=1.0,
                      **{**PROFILES["boston"]["smoke"], "epochs": 2})
    device = runtime.setup(cfg)
    start = search.build_search(cfg, train.Task(cfg, device), device).arch.theta
    start = {k: v.detach().clone() for k, v in start.items()}

    def theta_after(warmup, folder):
        with tool.weights_first(warmup):
            done = search.run_search(cfg, train.Task(cfg, device), device, tmp_path / folder)
        return {k: v.detach() for k, v in done.arch.theta.items()}

    frozen, moved = theta_after(2, "all"), theta_after(1, "one")
    assert all(torch.equal(frozen[k], start[k]) for k in start)  # both epochs: no step
    assert any(not torch.equal(moved[k], start[k]) for k in start)  # the second one steps
    assert search._step.__name__ == "_step"  # restored on leaving
