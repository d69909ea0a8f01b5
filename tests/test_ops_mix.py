"""The "conv then mix" path of region_aware_conv2d_mixed: exact to the materialised reference in float64 for the
output and every gradient, ties and empty regions, bf16 autocast, no host synchronisation, its refusal of explicit
filters, and the rule by which "auto" picks it."""

import copy

import pytest
import torch
from _model_helpers import forbid_host_sync
from test_ops import IDS, SHAPES, make_inputs

import drconv_yolo.ops as ops
import drconv_yolo.ops.mixed_conv as mixed_conv
from drconv_yolo.measure import peak_mb
from drconv_yolo.modules import DRConv2d
from drconv_yolo.ops import MIX_MAX_BASES, choose_impl, region_aware_conv2d, region_aware_conv2d_mixed

NAMES = ("output", "d_input", "d_coef", "d_bases", "d_guide", "d_bias")
BASES = (1, 2, 3)


def mixed_inputs(shape, n, dtype=torch.float64, device="cpu", seed=1):
    """(x, coef (B, m, n), bases (n, C_out, C_in, k, k), guide, bias (C_out,), dL/dY, conf) on ``device``."""
    x, w, guide, go, conf = make_inputs(shape, dtype)
    B, m, C_out, C_in, k, _ = w.shape
    g = torch.Generator().manual_seed(seed)
    coef = torch.rand(B, m, n, generator=g, dtype=dtype)
    bases = torch.randn(n, C_out, C_in, k, k, generator=g, dtype=dtype) / (C_in * k * k) ** 0.5
    bias = torch.randn(C_out, generator=g, dtype=dtype)
    return (*(t.to(device) for t in (x, coef, bases, guide, bias, go)), conf)


def run_mixed(impl, x, coef, bases, guide, bias, go, conf):
    """Output and gradients to (x, coef, bases, guide, bias); ``"reference"`` materialises the filters first."""
    leaves = [t.detach().clone().requires_grad_(True) for t in (x, coef, bases, guide, bias)]
    xx, cc, bb, gg, bi = leaves
    if impl == "reference":
        y = region_aware_conv2d(xx, torch.einsum("bjn,nocuv->bjocuv", cc, bb), gg, *conf, bias=bi, impl=impl)
    else:
        y = region_aware_conv2d_mixed(xx, cc, bb, gg, *conf, bias=bi, impl=impl)
    return (y, *torch.autograd.grad(y, leaves, go))


@pytest.fixture
def called(monkeypatch):
    """The names of the implementations the op dispatches to, in call order."""
    names = []
    for name in ("fast_conv", "grouped_conv", "mix_conv"):
        real = getattr(ops, name)
        monkeypatch.setattr(ops, name, lambda *args, n=name, f=real: names.append(n) or f(*args))
    return names


def close(got, ref, tol=1e-10):
    for name, a, b in zip(NAMES, got, ref):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol, msg=lambda msg, n=name: f"{n}: {msg}")


@pytest.mark.parametrize("n", BASES)
@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_mix_matches_materialised_reference_float64_output_and_all_grads(shape, n, device):
    args = mixed_inputs(shape, n, device=device)
    close(run_mixed("mix", *args), run_mixed("reference", *args))


@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_mix_as_one_product_matches_materialised_reference_float64_output_and_all_grads(shape, n, monkeypatch):
    # the small maps of a training step take Z as unfolded patches times the bases; forced here on every shape
    monkeypatch.setattr(mixed_conv, "small_map", lambda *args: True)
    args = mixed_inputs(shape, n)
    close(run_mixed("mix", *args), run_mixed("reference", *args))


def test_mix_takes_one_product_on_small_maps_in_training_only(monkeypatch):
    unfolded = []  # the input sizes unfolded
    real = mixed_conv.F.unfold
    monkeypatch.setattr(mixed_conv.F, "unfold", lambda x, *a: unfolded.append(x.shape[-1]) or real(x, *a))
    layer = DRConv2d(32, 16, 3, 2, regions=4, bases=8, impl="mix")  # K = 288: 4 x 4 outputs fit the rule
    for size in (8, 40):  # small (4 x 4 output pixels), large (20 x 20)
        x = torch.randn(2, 32, size, size)
        with torch.no_grad():
            layer(x)
        layer(x).sum().backward()
    assert unfolded == [8]  # the small map's training step only


@pytest.mark.parametrize("n", [1, 3])
def test_mix_channels_last_input_matches_reference(n, device):
    x, *rest = mixed_inputs(SHAPES[0], n, device=device)
    x = x.contiguous(memory_format=torch.channels_last)
    got = run_mixed("mix", x, *rest)
    assert got[0].is_contiguous(memory_format=torch.channels_last)  # the conv's layout, as the fast path's output
    close(got, run_mixed("reference", x, *rest))


@pytest.mark.parametrize("n", [1, 2])
def test_mix_ties_resolve_as_torch_argmax(n, device):
    x, coef, bases, guide, bias, go, conf = mixed_inputs(SHAPES[0], n, device=device)
    guide = torch.zeros_like(guide)
    guide[0, 2, 0, 0] = 1.0  # one pixel picks region 2; every other pixel is a full tie -> region 0
    args = (x, coef, bases, guide, bias, go, conf)
    close(run_mixed("mix", *args), run_mixed("reference", *args))


@pytest.mark.parametrize("batch", [1, 3])
def test_mix_with_empty_regions_and_a_sample_in_one_region(batch, device):
    x, coef, bases, guide, bias, go, conf = mixed_inputs((batch, 3, 4, 7, 9, 3, 1, 1, 1, 6), 2, device=device)
    guide = guide.clone()
    guide[:, 4:] = -100.0  # regions 4 and 5 empty in every sample
    guide[0, 2] = 100.0  # sample 0 entirely in region 2
    got = run_mixed("mix", x, coef, bases, guide, bias, go, conf)
    close(got, run_mixed("reference", x, coef, bases, guide, bias, go, conf))
    assert torch.count_nonzero(got[2][:, 4:]) == 0  # an empty region's coefficients get exactly zero gradient


def test_mix_gradcheck_with_fixed_argmax_float64():
    # guide logits far apart: finite differences never flip a region, so the gradient is the true one
    x, coef, bases, guide, bias, _, conf = mixed_inputs(SHAPES[1], 2)
    guide = guide * 50.0
    leaves = tuple(t.clone().requires_grad_(True) for t in (x, coef, bases, bias))
    assert torch.autograd.gradcheck(
        lambda x, c, b, bi: region_aware_conv2d_mixed(x, c, b, guide, *conf, bias=bi, impl="mix"),
        leaves,
        eps=1e-6,
        atol=1e-7,
    )


def test_mix_bf16_autocast_cpu_close_to_float32():
    args = mixed_inputs(SHAPES[0], 2, torch.float32)
    full = run_mixed("mix", *args)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = run_mixed("mix", *args)
    assert low[0].dtype == torch.bfloat16
    for name, a, b in zip(NAMES, low, full):
        assert a.dtype == (torch.bfloat16 if name == "output" else torch.float32), name  # leaves keep their dtype
        assert torch.isfinite(a).all(), name
        # bf16 has an 8-bit mantissa: compare with a tolerance scaled to the tensor's magnitude
        assert (a.float() - b).abs().max() <= 0.05 * b.abs().max() + 1e-3, name


@pytest.mark.parametrize("dtype, tol", [(torch.float16, 0.01), (torch.bfloat16, 0.05)])
def test_mix_half_inputs_close_to_float32(dtype, tol):
    args = mixed_inputs(SHAPES[0], 2, torch.float32)
    full = run_mixed("mix", *args)
    low = run_mixed("mix", *(t.to(dtype) if torch.is_tensor(t) else t for t in args))
    for name, a, b in zip(NAMES, low, full):
        assert a.dtype == dtype and torch.isfinite(a).all(), name
        assert (a.float() - b).abs().max() <= tol * b.abs().max() + 1e-3, name


def test_mix_float32_close_to_reference():
    args = mixed_inputs(SHAPES[4], 3, torch.float32)
    close(run_mixed("mix", *args), run_mixed("reference", *args), tol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_mix_fp16_autocast_cuda_close_to_float32():
    args = mixed_inputs(SHAPES[0], 2, torch.float32, device="cuda")
    full = run_mixed("mix", *args)
    with torch.autocast("cuda", dtype=torch.float16):
        low = run_mixed("mix", *args)
    assert low[0].dtype == torch.float16
    for a, b in zip(low, full):
        assert torch.isfinite(a).all()
        assert (a.float() - b).abs().max() <= 0.01 * b.abs().max() + 1e-3


def test_mix_forward_and_backward_never_read_tensors_back_to_the_host(monkeypatch):
    # everything that copies a tensor's values to Python (a device synchronisation on a GPU) raises during the call
    x, coef, bases, guide, bias, go, conf = mixed_inputs(SHAPES[0], 2, torch.float32)
    leaves = [t.clone().requires_grad_(True) for t in (x, coef, bases, guide, bias)]

    with forbid_host_sync(monkeypatch, "the mix path"):
        y = region_aware_conv2d_mixed(*leaves[:4], *conf, bias=leaves[4], impl="mix")
        grads = torch.autograd.grad(y, leaves, go)
    assert all(torch.isfinite(g).all() for g in grads)


def test_mix_refuses_explicit_filters():
    x, w, guide, _, conf = make_inputs(SHAPES[0])
    with pytest.raises(ValueError, match=r'impl="mix" needs mixed filters'):
        region_aware_conv2d(x, w, guide, *conf, impl="mix")


def test_mix_export_of_one_base_traces_to_one_conv_and_a_mix():
    x, coef, bases, guide, _, _, conf = mixed_inputs(SHAPES[0], 1, torch.float32)
    traced = torch.jit.trace(
        lambda x, c, b, g: region_aware_conv2d_mixed(x, c, b, g, *conf, impl="mix"), (x, coef, bases, guide)
    )
    graph = str(traced.graph)
    assert "aten::_convolution" in graph and "aten::argmax" in graph and "aten::nonzero" not in graph
    torch.testing.assert_close(traced(x, coef, bases, guide), region_aware_conv2d_mixed(x, coef, bases, guide, *conf))


@pytest.mark.parametrize("device_type", ["cpu", "cuda"])
@pytest.mark.parametrize("batch, training", [(1, False), (1, True), (8, False), (8, True)])
def test_auto_rule_mix_for_few_bases_only(device_type, batch, training):
    device = torch.device(device_type)
    assert choose_impl(device, batch, training, bases=1) == "mix"
    assert choose_impl(device, batch, training, bases=MIX_MAX_BASES) == "mix"
    few_bases_rule = choose_impl(device, batch, training, bases=8)
    assert few_bases_rule == choose_impl(device, batch, training) != "mix"  # as for explicit filters


@pytest.mark.parametrize("device_type", ["cpu", "cuda"])
def test_auto_rule_mix_for_many_bases_on_small_maps_only(device_type):
    device, m, n, K = torch.device(device_type), 8, 8, 2304  # a 256-channel 3x3 layer (the memory bound holds)
    train_max, infer_max = ops.MIX_SMALL_MAP_TRAIN * m * n, ops.MIX_SMALL_MAP_INFER * m * n
    assert choose_impl(device, 8, True, n, m, train_max, K) == "mix"
    assert choose_impl(device, 8, True, n, m, train_max + 1, K) == choose_impl(device, 8, True, n) != "mix"
    assert choose_impl(device, 1, True, n, m, train_max, K) == "mix"
    assert choose_impl(device, 8, False, n, m, infer_max, K) == "mix"
    assert choose_impl(device, 8, False, n, m, infer_max + 1, K) == choose_impl(device, 8, False, n) != "mix"
    assert choose_impl(device, 1, False, n, m, 1, K) == choose_impl(device, 1, False, n) != "mix"  # one sample


@pytest.mark.parametrize("training", [False, True])
def test_auto_rule_keeps_many_bases_off_mix_where_its_responses_outweigh_the_filters(training):
    device, m, n, L = torch.device("cpu"), 8, 8, 16
    K = ops.MIX_FILTERS_VS_RESPONSES * n * L // m  # n * L * MIX_FILTERS_VS_RESPONSES == m * K: just fits
    assert choose_impl(device, 8, training, n, m, L, K) == "mix"
    assert choose_impl(device, 8, training, n, m, L, K - 1) == choose_impl(device, 8, training, n) != "mix"


def test_auto_dispatches_mix_for_many_bases_on_a_small_map(called):
    layer = DRConv2d(32, 16, 3, 2, regions=4, bases=8)  # K = 288
    for size in (8, 40):  # 4 x 4 output pixels (mix), 20 x 20 (too many)
        x = torch.randn(2, 32, size, size)
        with torch.no_grad():
            layer(x)
        layer(x).sum().backward()
    assert called == ["mix_conv", "mix_conv", "fast_conv", "fast_conv"]


def test_auto_dispatches_mix_for_bases_1_and_not_for_bases_8(called):
    x = torch.randn(2, 8, 12, 12)
    for bases in (1, 8):
        layer = DRConv2d(8, 16, 3, 2, regions=4, bases=bases)
        with torch.no_grad():
            layer(x)
        layer(x).sum().backward()
    assert called == ["mix_conv", "mix_conv", "fast_conv", "fast_conv"]


@pytest.mark.parametrize(
    "c1, c2, bases, size",
    [(6, 8, 2, (11, 9)), (32, 16, 8, (8, 7))],  # few bases; many bases on a map small enough for the rule
    ids=["few-bases", "many-bases-small-map"],
)
def test_drconv2d_layer_mix_matches_fast_in_float64(c1, c2, bases, size):
    torch.manual_seed(0)
    layer = DRConv2d(c1, c2, 3, 2, regions=4, bases=bases, impl="fast").double()
    x = torch.randn(2, c1, *size, dtype=torch.float64, requires_grad=True)
    outs = []
    for impl in ("fast", "mix"):
        layer.op.impl = impl
        layer.zero_grad()
        x.grad = None
        y = layer(x)
        y.square().sum().backward()
        outs.append((y, x.grad, *(p.grad for p in layer.parameters())))
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


# a training step of the mix path may use at most this fraction of the reference op's peak memory, wherever the rule
# takes it
MIX_PEAK_VS_REFERENCE = 0.5


def assert_peak_at_most_half_the_reference(mix, ref, x):
    """A training step of ``mix`` on x peaks at most MIX_PEAK_VS_REFERENCE times ``ref``'s (CPU allocator)."""

    def step(module):
        def run():
            module.zero_grad(set_to_none=True)
            x.grad = None
            module(x).sum().backward()

        return run

    peaks = {name: peak_mb(step(module), torch.device("cpu")) for name, module in (("mix", mix), ("ref", ref))}
    assert peaks["mix"] <= MIX_PEAK_VS_REFERENCE * peaks["ref"], peaks


@pytest.mark.parametrize("n", sorted({1, MIX_MAX_BASES}))
def test_mix_training_step_peak_memory_at_most_half_the_reference(n):
    # Z is n times the output; the reference keeps all m = 8 responses
    torch.manual_seed(0)
    mix = DRConv2d(16, 32, 3, 2, regions=8, bases=n, impl="mix")
    ref = copy.deepcopy(mix)
    ref.op.impl = "reference"
    x = torch.randn(2, 16, 32, 32, requires_grad=True)
    assert_peak_at_most_half_the_reference(mix, ref, x)


def test_mix_training_step_peak_memory_at_most_half_the_reference_on_a_small_map_the_rule_picks():
    # n = 8 bases: Z is as large as the reference's m = 8 responses, but the rule takes mix only where the
    # reference's materialised filters (and their gradient) outweigh it; near the rule's memory bound here
    torch.manual_seed(0)
    C_in, size, m, n, batch = 64, 16, 8, 8, 8
    L, K = (size // 2) ** 2, C_in * 9
    assert choose_impl(torch.device("cpu"), batch, True, n, m, L, K) == "mix"
    mix = DRConv2d(C_in, 64, 3, 2, regions=m, bases=n, impl="mix")
    ref = copy.deepcopy(mix)
    ref.op.impl = "reference"
    x = torch.randn(batch, C_in, size, size, requires_grad=True)
    assert_peak_at_most_half_the_reference(mix, ref, x)
