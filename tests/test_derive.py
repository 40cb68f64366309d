"""Discretization, genotypes, discrete networks, relevance and pruning."""
import random

import pytest
import torch
from torch import nn

from relnas import ops
from relnas.derive import (connected, derive, edge_relevance, genotype_from_supernet,
                           load_from_supernet, prune, relevance, relevance_by_edge)
from relnas.genotype import Genotype
from relnas.nets import build_network, count_parameters
from relnas.space import ConvSupernet, MLPSupernet, one_hot_weights, uniform_weights

F64 = torch.float64


def _mlp_choices(spec, rng):
    """A random allowed op per edge, with at least one non-zero edge into every hidden vertex."""
    choices = []
    for e in range(spec.n_edges):
        allowed = [n for k, n in enumerate(spec.op_names) if spec.mask[e][k]]
        choices.append(rng.choice(allowed))
    for v in spec.dst_vertices:
        incoming = spec.incoming(v)
        if all(choices[e] == "zero" for e in incoming):
            choices[incoming[0]] = "linear_tanh"
    return choices


@pytest.mark.parametrize("readout", ["last", "sum"])
@pytest.mark.parametrize("seed", range(4))
def test_mlp_one_hot_supernet_equals_discrete_network(seed, readout):
    torch.manual_seed(seed)
    net = MLPSupernet(in_dim=5, out_dim=3, n_hidden=4, width=4, readout=readout).to(F64)
    specs = net.arch_spec()
    choices = _mlp_choices(specs["dag"], random.Random(seed))
    w = one_hot_weights(specs, {"dag": choices}, dtype=F64)
    g = genotype_from_supernet(net, w)
    assert all(op != "zero" for op, _, _ in g.edges("dag")) and g.readout == readout
    assert Genotype.from_json(g.to_json()) == g
    discrete = build_network(g).to(F64)
    load_from_supernet(discrete, net)
    x = torch.randn(6, 5, dtype=F64)
    assert torch.allclose(net(x, w), discrete(x), atol=1e-12)


def _conv_choices(spec, rng):
    """Per node two random incoming edges, non-zero ops in turn (all 7 used); ``none`` elsewhere."""
    choices, ops_left = ["none"] * spec.n_edges, []
    for v in spec.dst_vertices:
        for e in rng.sample(spec.incoming(v), 2):
            ops_left = ops_left or rng.sample(spec.op_names[1:], 7)
            choices[e] = ops_left.pop()
    return choices


@pytest.mark.parametrize("seed, stem_stride, size", [(0, 1, 16), (1, 1, 16), (0, 2, 28)])
def test_conv_one_hot_supernet_equals_discrete_network(seed, stem_stride, size):
    # stem stride 2 on 28x28 (the MNIST conv cell): cells at 14, 7 and (odd, rounded up) 4
    torch.manual_seed(seed)
    rng = random.Random(seed)
    net = ConvSupernet(C_in=3, n_classes=5, C=4, layers=3, affine=False,
                       stem_stride=stem_stride).to(F64)
    specs = net.arch_spec()
    w = one_hot_weights(specs, {k: _conv_choices(s, rng) for k, s in specs.items()}, dtype=F64)
    g = genotype_from_supernet(net, w)
    assert all(len(g.edges(k)) == 8 for k in ("normal", "reduce"))
    discrete = build_network(g, C=4, layers=3, affine=False, stem_stride=stem_stride).to(F64)
    load_from_supernet(discrete, net)
    x = torch.randn(2, 3, size, size, dtype=F64)
    net.train(), discrete.train()  # BN on batch statistics in both
    assert torch.allclose(net(x, w), discrete(x), atol=1e-10)


def test_genotype_json_round_trip_for_both_spaces():
    mlp = genotype_from_supernet(MLPSupernet(in_dim=5, out_dim=2, n_hidden=3, width=4),
                                 {"dag": torch.rand(6, 6)})
    conv_net = ConvSupernet(C_in=3, n_classes=10, C=4, layers=3)
    conv = genotype_from_supernet(conv_net, {k: torch.rand(14, 8) for k in ("normal", "reduce")})
    for g in (mlp, conv):
        again = Genotype.from_json(g.to_json())
        assert again == g and hash(again) == hash(g)
        assert Genotype.from_dict(g.to_dict()) == g
    assert conv.concat == (2, 3, 4, 5) and mlp.n_hidden == 3


def test_genotype_rejects_unknown_ops_and_spaces():
    good = Genotype("mlp", (("dag", (("linear", 0, 1),)),), in_dim=2, out_dim=1, width=2,
                    n_hidden=1)
    bad_op = good.to_json().replace('"linear"', '"eval(1)"')
    with pytest.raises(ValueError, match="allowed"):
        Genotype.from_json(bad_op)
    with pytest.raises(ValueError, match="space"):
        Genotype("rnn", (), in_dim=1, out_dim=1)


def test_derive_conv_keeps_top2_edges_by_best_non_zero_op():
    spec = ConvSupernet(C_in=3, n_classes=2, C=4, layers=3).arch_spec()["normal"]
    w = torch.full((14, 8), 0.01)
    w[:, 0] = 5.0  # `none` dominates everywhere and must never be chosen
    sep3, dil5 = spec.op_names.index("sep_conv_3x3"), spec.op_names.index("dil_conv_5x5")
    e23, e13, e03 = spec.edge_index(2, 3), spec.edge_index(1, 3), spec.edge_index(0, 3)
    w[e23, sep3], w[e13, dil5], w[e03, sep3] = 0.9, 0.8, 0.7
    kept = derive({"normal": spec}, {"normal": w}, top_k=2)["normal"]
    assert all(op != "none" for op, _, _ in kept)
    assert [sum(1 for _, _, d in kept if d == v) for v in (2, 3, 4, 5)] == [2, 2, 2, 2]
    into3 = {(op, s) for op, s, d in kept if d == 3}
    assert into3 == {("sep_conv_3x3", 2), ("dil_conv_5x5", 1)}


def test_derive_mlp_drops_edges_where_zero_wins_and_never_picks_masked_ops():
    spec = MLPSupernet(in_dim=5, out_dim=1, n_hidden=2, width=4).arch_spec()["dag"]
    names = spec.op_names
    w = torch.zeros(3, len(names))
    w[0, names.index("identity")] = 9.0  # masked: 0 -> 1 has different dims
    w[0, names.index("linear_relu")] = 0.3
    w[0, names.index("zero")] = 0.5  # zero wins on 0 -> 1 but vertex 1 has no other edge
    w[1, names.index("zero")], w[1, names.index("linear")] = 0.6, 0.4  # 0 -> 2 dropped
    w[2, names.index("identity")], w[2, names.index("zero")] = 0.7, 0.3  # 1 -> 2 kept
    kept = derive({"dag": spec}, {"dag": w})["dag"]
    assert kept == (("linear_relu", 0, 1), ("identity", 1, 2))


def test_mlp_derive_removes_vertices_not_feeding_the_head():
    net = MLPSupernet(in_dim=3, out_dim=1, n_hidden=3, width=3)
    spec = net.arch_spec()["dag"]
    # 0->1, 0->2, 0->3 linear; 1->2 linear; everything else zero: vertex 2 does not feed vertex 3
    chosen = {(0, 1), (0, 2), (0, 3), (1, 2)}
    w = one_hot_weights({"dag": spec}, {"dag": ["linear" if e in chosen else "zero"
                                                for e in spec.edges]})
    g = genotype_from_supernet(net, w)
    assert g.edges("dag") == (("linear", 0, 3),)
    assert build_network(g)(torch.randn(2, 3)).shape == (2, 1)


def test_relevance_is_a_distribution_per_vertex():
    spec = MLPSupernet(in_dim=5, out_dim=1, n_hidden=3, width=4).arch_spec()["dag"]
    w = torch.rand(spec.n_edges, spec.n_ops, dtype=F64)
    r = relevance(spec, w)
    assert torch.all(r[~spec.mask_tensor()] == 0)
    for v in spec.dst_vertices:
        assert torch.isclose(r[list(spec.incoming(v))].sum(), torch.tensor(1.0, dtype=F64))
    er = edge_relevance(spec, w)
    assert torch.allclose(er, r.sum(dim=1) - r[:, spec.zero_index])
    w_zero = w.clone()
    w_zero[:, spec.zero_index] *= 10
    assert torch.all(edge_relevance(spec, w_zero) < er)


def _dense_mlp_genotype(net):
    """A genotype keeping every edge (linear ops win, zero loses), and random relevances."""
    specs = net.arch_spec()
    w = one_hot_weights(specs, {"dag": ["linear"] * specs["dag"].n_edges})
    g = genotype_from_supernet(net, w)
    rel = relevance_by_edge(specs, {"dag": torch.rand(specs["dag"].n_edges, specs["dag"].n_ops,
                                                      generator=torch.Generator().manual_seed(0))})
    return g, rel


def test_prune_mlp_to_a_parameter_budget():
    net = MLPSupernet(in_dim=6, out_dim=2, n_hidden=3, width=8)
    g, rel = _dense_mlp_genotype(net)
    full = count_parameters(build_network(g))
    budget = full // 2
    small = prune(g, rel, param_budget=budget)
    model = build_network(small)
    assert count_parameters(model) <= budget < full
    assert set(small.edges("dag")) < set(g.edges("dag"))
    assert any(dst == 3 for _, _, dst in small.edges("dag")), "output vertex disconnected"
    assert model(torch.randn(4, 6)).shape == (4, 2)
    with pytest.raises(ValueError, match="cannot reach"):
        prune(g, rel, param_budget=1)


def test_prune_by_threshold_drops_weak_edges_but_keeps_the_output():
    net = MLPSupernet(in_dim=6, out_dim=2, n_hidden=3, width=8)
    g, rel = _dense_mlp_genotype(net)
    threshold = sorted(rel["dag"].values())[3]
    pruned = prune(g, rel, threshold=threshold)
    remaining = pruned.edges("dag")
    assert len(remaining) < len(g.edges("dag"))
    assert any(dst == 3 for _, _, dst in remaining)
    # an edge below the threshold survives only if removing it would cut the output
    for edge in remaining:
        if rel["dag"][edge[1:]] < threshold:
            rest = [e for e in remaining if e != edge]
            assert not connected(pruned.with_edges({"dag": rest})).edges("dag")
    everything = prune(g, rel, threshold=2.0)
    assert len(everything.edges("dag")) >= 1
    assert build_network(everything)(torch.randn(3, 6)).shape == (3, 2)


def test_prune_conv_to_a_parameter_budget():
    net = ConvSupernet(C_in=3, n_classes=4, C=4, layers=3)
    specs = net.arch_spec()
    gen = torch.Generator().manual_seed(1)
    w = {k: torch.rand(14, 8, generator=gen) for k in specs}
    g = genotype_from_supernet(net, w)
    options = dict(C=4, layers=3)
    full = count_parameters(build_network(g, **options))
    budget = int(full * 0.7)
    small = prune(g, relevance_by_edge(specs, w), param_budget=budget, **options)
    model = build_network(small, **options)
    assert count_parameters(model) <= budget
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 4)


def test_count_parameters_of_known_nets():
    assert count_parameters(nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))) == 3 * 4 + 4 + 4 * 2 + 2
    shared = nn.Linear(3, 3)
    assert count_parameters(nn.Sequential(shared, shared)) == 3 * 3 + 3
    g = Genotype("mlp", (("dag", (("linear", 0, 1), ("identity", 1, 2), ("zero", 0, 2))),),
                 in_dim=5, out_dim=2, width=4, n_hidden=2)
    assert count_parameters(build_network(g)) == (5 * 4 + 4) + (4 * 2 + 2)


@pytest.mark.parametrize("C_in,size", [(3, 32), (1, 28)])
def test_conv_network_auxiliary_head_and_drop_path(C_in, size):
    net = ConvSupernet(C_in=C_in, n_classes=10, C=4, layers=3)
    g = genotype_from_supernet(net, {k: torch.rand(14, 8) for k in ("normal", "reduce")})
    model = build_network(g, C=4, layers=3, auxiliary=True, drop_path_prob=0.3)
    x = torch.randn(2, C_in, size, size)
    logits, aux = model.train()(x)
    assert logits.shape == aux.shape == (2, 10)
    model.eval()
    assert model(x).shape == (2, 10)
    assert torch.equal(model(x), model(x)), "drop path must be off in eval mode"
    plain = build_network(g, C=4, layers=3)
    # the auxiliary head trains only: it has parameters but is not counted (as in DARTS)
    assert count_parameters(plain) == count_parameters(model) < sum(
        p.numel() for p in model.parameters())
    assert isinstance(plain.train()(x), torch.Tensor)


def test_drop_path_drops_whole_samples_in_training():
    net = ConvSupernet(C_in=3, n_classes=2, C=4, layers=3)
    g = genotype_from_supernet(net, {k: torch.rand(14, 8) for k in ("normal", "reduce")})
    model = build_network(g, C=4, layers=3, drop_path_prob=0.5).train()
    torch.manual_seed(0)
    x = torch.randn(4, 3, 8, 8)
    assert not torch.equal(model(x), model(x))
    model.drop_path_prob = 0.0
    assert torch.allclose(model(x), model(x))


def test_load_from_supernet_requires_matching_depth():
    net = ConvSupernet(C_in=3, n_classes=2, C=4, layers=3)
    g = genotype_from_supernet(net, {k: torch.rand(14, 8) for k in ("normal", "reduce")})
    with pytest.raises(ValueError, match="cells"):
        load_from_supernet(build_network(g, C=4, layers=4, affine=False), net)


def test_mlp_build_options_are_rejected_and_unknown_ops_listed():
    g = Genotype("mlp", (("dag", (("linear", 0, 1),)),), in_dim=2, out_dim=1, width=2, n_hidden=1)
    with pytest.raises(TypeError, match="layers"):
        build_network(g, layers=3)
    with pytest.raises(ValueError, match=r"nope.*linear"):
        ops.get_op(ops.MLP_OPS, "nope")


def test_mlp_ties_go_to_zero_so_uniform_weights_give_the_shortest_path():
    net = MLPSupernet(in_dim=3, out_dim=1, n_hidden=3, width=3)
    g = genotype_from_supernet(net, uniform_weights(net.arch_spec()))
    assert [e[1:] for e in g.edges("dag")] == [(0, 3)]


# --- per-vertex discretization (simplex="vertex", method.md 1) ---------------------------------
def _vertex_weights(net, masses):
    """Dense weights with the given ``{(src, dst, op): mass}``, the rest 0."""
    spec = net.arch_spec()["dag"]
    w = torch.zeros(spec.n_edges, spec.n_ops)
    for (src, dst, op), mass in masses.items():
        w[spec.edge_index(src, dst), spec.op_names.index(op)] = mass
    return {"dag": w}


def test_vertex_rule_keeps_the_highest_mass_pair_per_vertex_never_zero():
    net = MLPSupernet(5, 1, n_hidden=2, width=4)
    # vertex 2: zero on 1->2 has the most mass, then identity on 1->2, then linear on 0->2
    weights = _vertex_weights(net, {(0, 1, "linear_tanh"): 0.9, (0, 1, "linear_relu"): 0.1,
                                    (1, 2, "zero"): 0.5,
                                    (1, 2, "identity"): 0.3, (0, 2, "linear"): 0.2})
    g = genotype_from_supernet(net, weights, simplex="vertex")
    assert g.edges("dag") == (("linear_tanh", 0, 1), ("identity", 1, 2))
    assert g.rule == "vertex-top1"
    assert Genotype.from_json(g.to_json()) == g
    # the per-edge rule on the same weights keeps 0->2 as well (its best op beats its zero)
    assert ("linear", 0, 2) in genotype_from_supernet(net, weights).edges("dag")
    # top 2 pairs per vertex, or every pair with mass >= a threshold (at least the best)
    two = genotype_from_supernet(net, weights, simplex="vertex", top_k=2)
    assert set(two.edges("dag")) == {("linear_tanh", 0, 1), ("linear_relu", 0, 1),
                                     ("identity", 1, 2), ("linear", 0, 2)}
    assert two.rule == "vertex-top2"
    assert genotype_from_supernet(net, weights, simplex="vertex", threshold=0.25).edges("dag") \
        == (("linear_tanh", 0, 1), ("identity", 1, 2))
    built = build_network(two)
    assert built(torch.randn(3, 5)).shape == (3, 1)


def test_vertex_rule_two_ops_on_one_edge_sum_in_the_discrete_net():
    net = MLPSupernet(4, 1, n_hidden=1, width=3)
    weights = _vertex_weights(net, {(0, 1, "linear"): 0.6, (0, 1, "linear_relu"): 0.4})
    g = genotype_from_supernet(net, weights, simplex="vertex", top_k=2)
    assert g.edges("dag") == (("linear", 0, 1), ("linear_relu", 0, 1))
    assert count_parameters(build_network(g)) == 2 * (4 * 3 + 3) + 3 + 1


def test_sum_readout_keeps_every_hidden_vertex_with_an_input():
    edges = {"dag": [("linear", 0, 1), ("linear", 0, 2)]}
    last = Genotype("mlp", (("dag", ()),), 3, 1, width=4, n_hidden=2).with_edges(edges)
    summed = Genotype("mlp", (("dag", ()),), 3, 1, width=4, n_hidden=2,
                      readout="sum").with_edges(edges)
    assert connected(last).edges("dag") == (("linear", 0, 2),)
    assert connected(summed).edges("dag") == (("linear", 0, 1), ("linear", 0, 2))
    n_last, n_sum = (count_parameters(build_network(connected(g))) for g in (last, summed))
    assert n_sum - n_last == 3 * 4 + 4  # the second input layer
    with pytest.raises(ValueError, match="readout"):
        Genotype("mlp", (), 3, 1, width=4, n_hidden=2, readout="mean")


def test_vertex_rule_with_sum_readout_keeps_one_pair_per_hidden_vertex():
    net = MLPSupernet(in_dim=3, out_dim=1, n_hidden=3, width=4, readout="sum")
    specs = net.arch_spec()
    g = genotype_from_supernet(net, uniform_weights(specs), simplex="vertex")
    assert sorted(dst for *_, dst in g.edges("dag")) == [1, 2, 3]
