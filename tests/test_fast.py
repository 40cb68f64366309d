"""The GPU path, tested on the CPU against the plain path: device-side augmentation against a
per-image reference, host-sync-free steps against the synchronizing ones, bf16 autocast,
channels_last and torch.compile against float32 / NCHW / eager on fixed inputs."""
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from relnas import augment, fast, nets
from relnas.bilevel import BilevelOptimizer
from relnas.config import ConfigError, make_config
from relnas.prior import WeightPrior
from relnas.relax import Architecture, make_relaxation
from relnas.space import ConvSupernet, MLPSupernet
from relnas.train import NonFiniteError, epoch_generator, supervised_step, train_one_epoch

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def _reference_crop_flip(x, offsets, flips, pad, fill):
    """torchvision's RandomCrop(padding) + RandomHorizontalFlip, one image at a time."""
    out = []
    for img, (top, left), flip in zip(x, offsets.tolist(), flips.tolist()):
        padded = torch.stack([F.pad(ch, (pad,) * 4, value=float(v)) for ch, v in zip(img, fill)])
        crop = padded[:, top:top + x.shape[2], left:left + x.shape[3]]
        out.append(crop.flip(2) if flip else crop)
    return torch.stack(out)


def test_crop_flip_equals_the_per_image_reference():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, 8, 10, generator=g)
    fill = augment.fill_value(MEAN, STD, like=x)
    offsets = torch.randint(0, 9, (6, 2), generator=g)
    offsets[0] = torch.tensor([0, 0])  # corners of the padded image
    offsets[1] = torch.tensor([8, 8])
    flips = torch.tensor([True, False, True, False, True, True])
    got = augment.crop_flip(x, offsets, flips, pad=4, fill=fill)
    assert torch.equal(got, _reference_crop_flip(x, offsets, flips, 4, fill))
    # a black pixel normalized: the padding is what torchvision pads before Normalize
    assert torch.allclose(fill * torch.tensor(STD) + torch.tensor(MEAN), torch.zeros(3), atol=1e-6)


def test_random_crop_flip_replays_with_its_generator_and_moves_images():
    x = torch.randn(32, 3, 8, 8)
    fill = augment.fill_value(MEAN, STD, like=x)
    a = augment.random_crop_flip(x, fill=fill, generator=torch.Generator().manual_seed(1))
    b = augment.random_crop_flip(x, fill=fill, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == x.shape
    assert not torch.equal(a, x)  # 32 images: some shifted or flipped
    apply = augment.augmenter("crop_flip", MEAN, STD, torch.Generator().manual_seed(1))
    assert torch.equal(apply(x), a)
    assert augment.augmenter("none", MEAN, STD, None) is None


def test_epoch_generator_is_the_same_stream_on_any_device_argument():
    a = torch.rand(5, generator=epoch_generator(3, 2, 4))
    b = torch.rand(5, generator=epoch_generator(3, 2, 4, device="cpu"))
    assert torch.equal(a, b)


def test_numbers_reported_as_tensors_are_read_once_per_epoch():
    values = [1.0, 2.0, 4.0]
    as_floats = train_one_epoch(lambda v: {"loss": v}, values)
    as_tensors = train_one_epoch(lambda v: {"loss": torch.tensor(v)}, values)
    assert as_tensors == pytest.approx(as_floats) and as_floats["loss"] == pytest.approx(7 / 3)
    with pytest.raises(NonFiniteError, match="loss = nan at epoch 5, step 1"):
        train_one_epoch(lambda v: {"loss": torch.tensor(v)}, [1.0, math.nan, 2.0], epoch=5)


def _mlp_search(sync=True, order=1, seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    net = MLPSupernet(5, 1, n_hidden=2, width=6).to(dtype)
    arch = Architecture(net.arch_spec(), relaxation=make_relaxation("gumbel", cost_strength=3.0),
                        generator=torch.Generator().manual_seed(seed)).to(dtype)
    prior = WeightPrior.from_weight_decay(net.weight_groups(), weight_decay=1e-3, n_train=64)
    opt = BilevelOptimizer(net, arch, prior.to(dtype), F.mse_loss, n_train=64, lam=0.5,
                           order=order, w_lr=0.05, arch_lr=0.05, n_valid=32, sync=sync)
    g = torch.Generator().manual_seed(1)
    batches = [((torch.randn(16, 5, generator=g, dtype=dtype),
                 torch.randn(16, 1, generator=g, dtype=dtype)),
                (torch.randn(16, 5, generator=g, dtype=dtype),
                 torch.randn(16, 1, generator=g, dtype=dtype))) for _ in range(3)]
    return net, arch, opt, batches


def _state(net, arch):
    return torch.cat([p.detach().flatten() for p in [*net.parameters(), *arch.parameters()]])


@pytest.mark.parametrize("order", [1, 2])
def test_a_step_without_host_sync_equals_the_synchronizing_step(order):
    runs = []
    for sync in (True, False):
        net, arch, opt, batches = _mlp_search(sync=sync, order=order, dtype=torch.float64)
        stats = [opt.step(t, v, temperature=0.7) for t, v in batches]
        runs.append((_state(net, arch), stats))
    (state_a, stats_a), (state_b, stats_b) = runs
    assert all(isinstance(v, torch.Tensor) for v in stats_b[-1].values())
    assert torch.allclose(state_a, state_b, rtol=1e-10, atol=1e-12)
    for a, b in zip(stats_a, stats_b):
        assert a == pytest.approx({k: float(v) for k, v in b.items()}, rel=1e-9)


def test_bf16_autocast_step_stays_close_to_float32():
    cfg = make_config(dataset="mnist", amp="bf16")
    results = []
    for amp in (False, True):
        net, arch, opt, batches = _mlp_search()
        with fast.autocast(cfg, "cpu") if amp else torch.autograd.set_grad_enabled(True):
            stats = opt.step(*batches[0], temperature=0.7)
        results.append((_state(net, arch), stats))
    (plain, s_plain), (bf16, s_bf16) = results
    assert s_bf16["loss_valid"] == pytest.approx(s_plain["loss_valid"], rel=2e-2)
    assert s_bf16["loss_train"] == pytest.approx(s_plain["loss_train"], rel=2e-2)
    assert (bf16 - plain).abs().max() < 2e-2  # one step of lr 0.05 apart, bf16 inputs
    assert not torch.equal(bf16, plain)  # autocast did act


def test_supervised_step_under_autocast_and_without_sync_matches_the_plain_step():
    def one(**kw):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
        out = supervised_step(model, opt, F.cross_entropy, **kw)((x, y))
        return out, torch.cat([p.detach().flatten() for p in model.parameters()])
    (plain, w_plain), (lazy, w_lazy) = one(), one(sync=False)
    assert isinstance(lazy["loss"], torch.Tensor) and torch.equal(w_plain, w_lazy)
    cfg = make_config(dataset="mnist", amp="bf16")
    bf16, w_bf16 = one(autocast=lambda: fast.autocast(cfg, "cpu"))
    assert bf16["loss"] == pytest.approx(plain["loss"], rel=2e-2)
    assert (w_bf16 - w_plain).abs().max() < 1e-2


def test_channels_last_conv_supernet_equals_nchw():
    torch.manual_seed(0)
    net = ConvSupernet(3, 10, C=4, layers=3, n_nodes=1, stem_stride=2,
                       op_names=("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3")).eval()
    arch = Architecture(net.arch_spec(), relaxation="softmax")
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        plain = net(x, arch.mean())
        cl = net.to(memory_format=torch.channels_last)(
            x.contiguous(memory_format=torch.channels_last), arch.mean())
    assert torch.allclose(plain, cl, atol=1e-5)


def test_compiled_search_step_equals_the_eager_step():
    runs = []
    for compiled in (False, True):
        net, arch, opt, batches = _mlp_search()
        if compiled:
            net.compile()
        stats = [opt.step(t, v, temperature=0.7) for t, v in batches[:2]]
        runs.append((_state(net, arch), stats, sorted(net.state_dict())))
    (eager, s_eager, keys_eager), (comp, s_comp, keys_comp) = runs
    assert keys_comp == keys_eager  # checkpoints of the compiled net load into the eager one
    assert torch.allclose(comp, eager, atol=1e-5)
    assert s_comp[-1]["loss_valid"] == pytest.approx(s_eager[-1]["loss_valid"], rel=1e-5)


def test_fast_options_are_config_fields_with_their_rules():
    cfg = make_config(dataset="cifar10", space="conv", amp="bf16", channels_last=True,
                      compile=True, augment="crop_flip")
    assert {"amp", "channels_last", "compile", "augment"} <= set(cfg.to_dict())
    assert "amp" not in make_config(dataset="cifar10").to_dict()  # stored runs keep their hash
    with pytest.raises(ConfigError, match="double backward"):
        make_config(dataset="mnist", compile=True, order=2, hvp="exact")
    with pytest.raises(ConfigError, match="needs image data"):
        make_config(dataset="boston", augment="crop_flip")
    with pytest.raises(ConfigError, match="allowed values"):
        make_config(dataset="mnist", amp="fp16")


def test_flops_count_multiply_adds_twice():
    assert nets.count_flops(nn.Linear(10, 5), (10,)) == 2 * 10 * 5
    conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
    assert nets.count_flops(conv, (3, 8, 8)) == 2 * (8 * 8) * 8 * 3 * 9
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout())
    model.train()
    nets.count_flops(model, (4,))
    assert model.training  # the mode is restored


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without a GPU")
def test_gpu_profiles_are_refused_without_a_gpu_before_any_compute(tmp_path):
    from relnas.plans import plan, run_experiment
    for profile in ("quick", "paper"):
        with pytest.raises(ConfigError, match="no CUDA GPU.*device='cpu'"):
            run_experiment("cifar10", profile=profile, results_dir=tmp_path)
    assert not any(tmp_path.iterdir())
    forced = plan("cifar10", profile="quick", device="cpu", seeds=[0])  # the way to force it
    assert forced and all(c.device == "cpu" and c.augment == "crop_flip" for c in forced)


def test_a_matched_random_cell_is_drawn_within_its_budget():
    from relnas import experiment
    from relnas.profiles import base_config
    from relnas.train import build_derived

    cfg = make_config(**base_config("cifar10", "smoke"), method="random", param_budget=1500)
    supernet = ConvSupernet(3, 10, C=cfg.C, layers=cfg.layers, n_nodes=cfg.n_nodes,
                            op_names=cfg.op_names, stem_stride=cfg.stem_stride)
    genotype = experiment._random_genotype(cfg, supernet, supernet.arch_spec(),
                                           torch.Generator().manual_seed(0))
    assert nets.count_parameters(build_derived(cfg, genotype)) <= 1500
    with pytest.raises(ValueError, match="no random cell of at most 10 parameters"):
        experiment._random_genotype(cfg.replace(param_budget=10), supernet,
                                    supernet.arch_spec(), torch.Generator().manual_seed(0))



def test_uint8_resident_images_give_the_same_run_as_float32(tmp_path, data_dir, monkeypatch):
    """The raw uint8 copy, normalized (and cropped / flipped) batch by batch, trains exactly the
    net the normalized float32 copy trains: same metrics, same genotype."""
    from relnas.experiment import run
    from relnas.profiles import base_config
    from relnas.train import Task

    monkeypatch.setenv("RELNAS_DATA", str(data_dir))
    fields = dict(base_config("cifar10", "smoke"), augment="crop_flip", relaxation="gumbel",
                  lam=1.0)
    plain, raw = make_config(**fields), make_config(**fields, resident="uint8")
    task = Task(raw, torch.device("cpu"))
    x = task.sets["train"][0]
    assert x.dtype == torch.uint8
    assert torch.equal(task.inputs(x), Task(plain, torch.device("cpu")).sets["train"][0])
    a = run(plain, results_dir=tmp_path / "a")["metrics"]
    b = run(raw, results_dir=tmp_path / "b")["metrics"]
    for key in ("valid_metric", "test_metric", "test_exact_acc", "params", "genotype"):
        assert a[key] == b[key], key
    with pytest.raises(ConfigError, match="resident='uint8'"):
        make_config(dataset="boston", resident="uint8")


@pytest.mark.parametrize("name, options", [("sgd", dict(momentum=0.9, weight_decay=3e-4)),
                                           ("adam", dict(weight_decay=1e-4))])
def test_fused_optimizer_takes_the_plain_optimizers_steps(name, options):
    """fast.optimizer picks torch's fused kernel on the CPU; 30 steps on the same gradients
    end where the plain (foreach) optimizer's do, to float rounding."""
    torch.manual_seed(0)
    nets_ = [nn.Sequential(nn.Linear(7, 5), nn.ReLU(), nn.Linear(5, 3)) for _ in range(2)]
    nets_[1].load_state_dict(nets_[0].state_dict())
    fused = fast.optimizer(name, nets_[0].parameters(), lr=0.05, **options)
    plain = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}[name](
        nets_[1].parameters(), lr=0.05, foreach=True, **options)
    assert fused.defaults["fused"] and not plain.defaults["fused"]
    for _ in range(30):
        grads = [torch.randn_like(p) for p in nets_[0].parameters()]
        for net, opt in zip(nets_, (fused, plain)):
            for p, g in zip(net.parameters(), grads):
                p.grad = g.clone()
            opt.step()
    for a, b in zip(*(net.parameters() for net in nets_)):
        assert torch.allclose(a, b, atol=1e-6)
    moved = nets_[0][0].weight.detach() - nn.Linear(7, 5).weight  # not a no-op
    assert moved.abs().max() > 0.01
    with pytest.raises(ValueError, match="optimizer must be one of"):
        fast.optimizer("rmsprop", nets_[0].parameters(), lr=0.1)


def test_lenet5_pools_before_its_relu_with_the_same_numbers():
    """LeNet-5 pools, then applies ReLU (fewer values): the forward pass equals ReLU-then-pool
    exactly, and so do the gradients at the same weights (double precision)."""
    torch.manual_seed(0)
    net = nets.LeNet5().double()
    x = torch.randn(4, 1, 28, 28, dtype=torch.double)

    def reference(x):
        x = F.max_pool2d(F.relu(net.conv1(x)), 2)
        x = F.max_pool2d(F.relu(net.conv2(x)), 2)
        return net.fc2(F.relu(net.fc1(x.flatten(1))))

    grads = []
    for forward in (net, reference):
        net.zero_grad()
        out = forward(x)
        out.square().sum().backward()
        grads.append([p.grad.clone() for p in net.parameters()])
        assert torch.equal(out, reference(x))
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("scale, max_norm", [(1e-3, 5.0), (10.0, 5.0), (1.0, math.inf),
                                             (math.nan, 5.0), (math.inf, 5.0)])
def test_clip_grad_norm_equals_torchs_bit_for_bit(scale, max_norm):
    """fast.clip_grad_norm_ (no product by a factor of 1 on the CPU) returns torch's norm and
    leaves torch's gradients, to the bit, whether it clips or not, and for a NaN or infinite
    gradient; parameters without a gradient are skipped, as torch skips them."""
    torch.manual_seed(0)
    shapes = [(64, 13), (64,), (7, 64), (7,), (3, 3)]
    grads = [torch.randn(s) * scale for s in shapes[:4]]
    sides = []
    for clip in (fast.clip_grad_norm_, nn.utils.clip_grad_norm_):
        params = [nn.Parameter(torch.zeros(s)) for s in shapes]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        sides.append((clip(params, max_norm), [p.grad for p in params]))
    (norm, ours), (ref_norm, theirs) = sides
    assert torch.equal(norm, ref_norm) or (norm.isnan() and ref_norm.isnan())
    assert ours[4] is None and theirs[4] is None
    for a, b in zip(ours[:4], theirs[:4]):
        assert torch.equal(a, b) or torch.equal(a.isnan(), b.isnan()) and a.isnan().all()
    if scale == 10.0:  # it did clip: the gradients' norm is max_norm now
        assert math.isclose(float(nn.utils.get_total_norm(ours[:4])), max_norm, rel_tol=1e-5)
