"""region_aware_conv2d: every implementation against the plain reference, the surrogate gradient, dtypes, errors."""

import pytest
import torch
import torch.nn.functional as F

from drconv_yolo.ops import argmax_regions, fast, output_size, region_aware_conv2d, region_aware_conv2d_mixed
from drconv_yolo.ops.common import sort_keys

# (B, C_in, C_out, H, W, k, stride, padding, dilation, m)
SHAPES = [
    (2, 3, 4, 7, 9, 3, 1, 1, 1, 4),  # non-square, odd
    (1, 4, 5, 8, 5, 3, 2, 1, 1, 3),  # batch 1, stride 2
    (2, 3, 2, 1, 6, 1, 1, 0, 1, 2),  # 1-pixel-tall, 1x1
    (3, 2, 3, 1, 5, 3, 2, 1, 1, 8),  # 1-pixel-tall, stride 2, padding
    (2, 3, 4, 9, 9, 5, 2, 2, 1, 4),  # k5
    (2, 3, 4, 9, 10, 3, 1, 2, 2, 4),  # dilation 2
    (2, 5, 3, 11, 7, 3, 2, 0, 1, 5),  # no padding, odd size, stride 2
    (2, 4, 6, 6, 6, 1, 2, 0, 1, 3),  # 1x1 stride 2
]
IDS = [f"B{s[0]}-c{s[1]}-{s[2]}-{s[3]}x{s[4]}-k{s[5]}s{s[6]}p{s[7]}d{s[8]}-m{s[9]}" for s in SHAPES]


@pytest.fixture(params=["packed", "padded"])
def row_layout(request, monkeypatch):
    """Run a test with the fast forward's rows packed (one mm per region) and padded (one bmm), whatever the counts."""
    monkeypatch.setattr(fast, "PAD_LIMIT", -1.0 if request.param == "packed" else float("inf"))
    return request.param


def make_inputs(shape, dtype=torch.float64, seed=0, spread=1.0, device="cpu"):
    """(x, weight, guide, dL/dY, (stride, padding, dilation)) on ``device``, the same numbers on every device."""
    B, C, Co, H, W, k, s, p, d, m = shape
    g = torch.Generator().manual_seed(seed)
    Ho, Wo = output_size(H, k, s, p, d), output_size(W, k, s, p, d)
    x = torch.randn(B, C, H, W, generator=g, dtype=dtype)
    w = torch.randn(B, m, Co, C, k, k, generator=g, dtype=dtype) / (C * k * k) ** 0.5
    guide = torch.randn(B, m, Ho, Wo, generator=g, dtype=dtype) * spread
    go = torch.randn(B, Co, Ho, Wo, generator=g, dtype=dtype)
    return (*(t.to(device) for t in (x, w, guide, go)), (s, p, d))


def run(impl, x, w, guide, go, conf, bias=None):
    """Output and gradients to (input, weight, guide[, bias])."""
    leaves = [t.detach().clone().requires_grad_(True) for t in (x, w, guide)]
    if bias is not None:
        leaves.append(bias.detach().clone().requires_grad_(True))
    y = region_aware_conv2d(*leaves[:3], *conf, bias=leaves[3] if bias is not None else None, impl=impl)
    grads = torch.autograd.grad(y, leaves, go, allow_unused=True)
    return (y, *grads)


def explicit(x, w, guide, conf):
    """Per-pixel definition: each output pixel uses the filter of argmax(guide) at that pixel."""
    s, p, d = conf
    B, m = w.shape[:2]
    region = guide.argmax(1)  # (B, Ho, Wo)
    out = torch.zeros(B, w.shape[2], *guide.shape[2:], dtype=x.dtype, device=x.device)
    for b in range(B):
        for j in range(m):
            full = F.conv2d(x[b : b + 1], w[b, j], None, s, p, d)[0]
            out[b] += full * (region[b] == j)
    return out


def test_region_plan_pads_rows_only_within_the_limit_and_maps_every_pixel_to_its_row():
    # sample 0: regions of 6 and 4 pixels (padding to 2 x 6 rows wastes 20%); sample 1: 8 and 2 (it would waste 60%)
    region = torch.tensor([[0, 1, 0, 1, 0, 1, 0, 1, 0, 0], [0] * 8 + [1] * 2])  # (B=2, L=10)
    guide = torch.nn.functional.one_hot(region, 2).permute(0, 2, 1).reshape(2, 2, 2, 5).double()
    plan = fast._RegionPlan(guide)
    assert plan.counts == [[6, 4], [8, 2]]
    assert plan.padded == [True, False] and plan.rows == [12, 10]
    for b in range(2):
        assert torch.equal(plan.src[b].gather(0, plan.pos[b]), torch.arange(10))  # pixel p sits in row pos[p]
    assert torch.equal(region[0][plan.src[0, :10]], torch.tensor([0] * 6 + [1] * 4))  # region j from row 6*j
    assert torch.equal(region[1][plan.src[1, :10]], torch.tensor([0] * 8 + [1] * 2))  # packed


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_reference_forward_equals_per_pixel_definition(shape, device):
    x, w, guide, _, conf = make_inputs(shape, device=device)
    y = region_aware_conv2d(x, w, guide, *conf, impl="reference")
    torch.testing.assert_close(y, explicit(x, w, guide, conf), rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_fast_matches_reference_float64_output_and_all_grads(shape, row_layout, device):
    x, w, guide, go, conf = make_inputs(shape, device=device)
    bias = torch.randn(shape[2], dtype=torch.float64).to(device)
    ref, fast = run("reference", x, w, guide, go, conf, bias), run("fast", x, w, guide, go, conf, bias)
    for name, a, b in zip(("output", "d_input", "d_weight", "d_guide", "d_bias"), fast, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=lambda m, n=name: f"{n}: {m}")


def test_fast_guide_term_in_several_row_blocks_matches_reference_float64(monkeypatch):
    # the backward's guide term takes max(L/m, GUIDE_BLOCK_ROWS) rows at a time; at 1, a 9 x 11 map takes 5 blocks
    monkeypatch.setattr(fast, "GUIDE_BLOCK_ROWS", 1)
    x, w, guide, go, conf = make_inputs((2, 3, 4, 9, 11, 3, 1, 1, 1, 5))
    got, ref = run("fast", x, w, guide, go, conf), run("reference", x, w, guide, go, conf)
    for name, a, b in zip(("output", "d_input", "d_weight", "d_guide"), got, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_mixed_fast_matches_materialised_reference_float64_all_grads(shape, row_layout, device):
    # the official generator's filters, weight[b, j] = sum_n coef[b, j, n] * bases[n], mixed inside the fast op
    x, w, guide, go, conf = make_inputs(shape, device=device)
    B, m, C_out, C_in, k, _ = w.shape
    g = torch.Generator().manual_seed(1)
    coef = torch.rand(B, m, 3, generator=g, dtype=torch.float64)
    bases = torch.randn(3, C_out, C_in, k, k, generator=g, dtype=torch.float64) / (C_in * k * k) ** 0.5
    bias = torch.randn(C_out, generator=g, dtype=torch.float64)
    coef, bases, bias = coef.to(device), bases.to(device), bias.to(device)

    def grads(impl):
        leaves = [t.clone().requires_grad_(True) for t in (x, coef, bases, guide, bias)]
        xx, cc, bb, gg, bi = leaves
        if impl == "mixed":
            y = region_aware_conv2d_mixed(xx, cc, bb, gg, *conf, bias=bi, impl="fast")
        else:
            weight = torch.einsum("bjn,nocuv->bjocuv", cc, bb)
            y = region_aware_conv2d(xx, weight, gg, *conf, bias=bi, impl="reference")
        return (y, *torch.autograd.grad(y, leaves, go))

    names = ("output", "d_input", "d_coef", "d_bases", "d_guide", "d_bias")
    for name, a, b in zip(names, grads("mixed"), grads("reference")):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=lambda msg, n=name: f"{n}: {msg}")


def test_mixed_rejects_mismatched_coef_and_bases():
    x, guide = torch.randn(1, 3, 8, 8), torch.randn(1, 4, 8, 8)
    with pytest.raises(ValueError, match=r"coef must be \(B, m, n\) and bases \(n, C_out, C_in, k, k\)"):
        region_aware_conv2d_mixed(x, torch.rand(1, 4, 3), torch.randn(2, 5, 3, 3, 3), guide, padding=1)


@pytest.mark.parametrize("shape", SHAPES[:4], ids=IDS[:4])
def test_fast_matches_reference_float32(shape):
    x, w, guide, go, conf = make_inputs(shape, torch.float32)
    for a, b in zip(run("fast", x, w, guide, go, conf), run("reference", x, w, guide, go, conf)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_onnx_path_matches_reference_forward_and_input_weight_grads(shape, device):
    x, w, guide, go, conf = make_inputs(shape, device=device)
    onnx, ref = run("onnx", x, w, guide, go, conf), run("reference", x, w, guide, go, conf)
    for a, b in zip(onnx[:3], ref[:3]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    assert onnx[3] is None  # the traceable path is for inference: no surrogate gradient to the guide


@pytest.mark.parametrize("impl", ["fast", "grouped", "reference"])
def test_gradcheck_input_and_weight_with_fixed_argmax_float64(impl, device):
    # guide logits far apart: finite differences never flip a region, so the gradient is the true one
    x, w, guide, _, conf = make_inputs(SHAPES[1], spread=50.0, device=device)
    x.requires_grad_(True)
    w.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda x, w: region_aware_conv2d(x, w, guide, *conf, impl=impl), (x, w), eps=1e-6, atol=1e-7
    )


@pytest.mark.parametrize("impl", ["fast", "grouped", "reference"])
@pytest.mark.parametrize("shape", [SHAPES[0], SHAPES[4]], ids=[IDS[0], IDS[4]])
def test_guide_gradient_is_softmax_surrogate(impl, shape, device):
    # the paper's surrogate is the exact gradient of the soft assignment sum_j softmax(guide)_j * (W_j conv x)
    x, w, guide, go, conf = make_inputs(shape, device=device)
    s, p, d = conf
    responses = torch.stack(
        [
            torch.stack([F.conv2d(x[b : b + 1], w[b, j], None, s, p, d)[0] for j in range(w.shape[1])])
            for b in range(len(x))
        ]
    )  # (B, m, C_out, Ho, Wo)
    g = guide.clone().requires_grad_(True)
    soft = (torch.softmax(g, 1).unsqueeze(2) * responses).sum(1)
    (expected,) = torch.autograd.grad(soft, g, go)
    got = run(impl, x, w, guide, go, conf)[3]
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_gradients_flow_only_through_selected_region(device):
    x, w, guide, go, conf = make_inputs(SHAPES[0], device=device)
    guide = guide.clone()
    guide[:, 1] = 100.0  # region 1 everywhere
    _, _, dw, _ = run("fast", x, w, guide, go, conf)
    assert dw[:, 1].abs().sum() > 0
    assert torch.count_nonzero(dw[:, [0, 2, 3]]) == 0


@pytest.mark.parametrize("impl", ["fast", "grouped", "reference", "onnx"])
def test_ties_resolve_as_torch_argmax(impl, device):
    x, w, guide, _, conf = make_inputs(SHAPES[0], device=device)
    guide = torch.zeros_like(guide)
    guide[0, 2, 0, 0] = 1.0  # one pixel picks region 2; every other pixel is a full tie -> region 0
    y = region_aware_conv2d(x, w, guide, *conf, impl=impl)
    torch.testing.assert_close(y, explicit(x, w, guide, conf), rtol=0, atol=1e-12)
    assert torch.equal(argmax_regions(guide), guide.argmax(1))


def test_argmax_regions_matches_torch_argmax_on_random_logits():
    guide = torch.randn(3, 8, 5, 7)
    assert torch.equal(argmax_regions(guide), guide.argmax(1))


@pytest.mark.parametrize(
    "B, m, dtype", [(1, 8, torch.uint8), (32, 8, torch.uint8), (33, 8, torch.int16), (4097, 8, torch.int32)]
)
def test_sort_keys_take_the_narrowest_dtype_and_sort_as_int64_keys(B, m, dtype):
    region = torch.randint(0, m, (B, 3))
    region[-1] = m - 1  # the largest key, B*m - 1, must fit
    keys = sort_keys(region, m)
    wide = (region + torch.arange(B).view(B, 1) * m).flatten()
    assert keys.dtype == dtype and torch.equal(keys.long(), wide)
    assert torch.equal(torch.sort(keys, stable=True).indices, torch.sort(wide, stable=True).indices)


def test_bf16_autocast_cpu_forward_backward_close_to_float32():
    x, w, guide, go, conf = make_inputs(SHAPES[0], torch.float32)
    full = run("fast", x, w, guide, go, conf)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = run("fast", x, w, guide, go, conf)
    assert low[0].dtype == torch.bfloat16
    for name, a, b in zip(("output", "d_input", "d_weight", "d_guide"), low, full):
        assert torch.isfinite(a).all(), name
        # bf16 has an 8-bit mantissa: compare with a tolerance scaled to the tensor's magnitude
        assert (a.float() - b).abs().max() <= 0.05 * b.abs().max() + 1e-3, name


def test_guide_softmax_runs_in_float32_for_half_logits():
    x, w, guide, go, conf = make_inputs(SHAPES[0], torch.float32)
    guide16 = (guide * 8).to(torch.bfloat16)  # large logits: a bf16 softmax would lose the small probabilities
    d16 = run("fast", x, w, guide16, go, conf)[3]
    d32 = run("fast", x, w, guide16.float(), go, conf)[3]
    assert d16.dtype == torch.bfloat16
    torch.testing.assert_close(d16.float(), d32, rtol=1e-2, atol=1e-2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fp16_autocast_cuda_matches_float32():
    x, w, guide, go, conf = make_inputs(SHAPES[0], torch.float32, device="cuda")
    full = run("fast", x, w, guide, go, conf)
    with torch.autocast("cuda", dtype=torch.float16):
        low = run("fast", x, w, guide, go, conf)
    assert low[0].dtype == torch.float16
    for a, b in zip(low, full):
        assert torch.isfinite(a).all()
        assert (a.float() - b).abs().max() <= 0.01 * b.abs().max() + 1e-3


@pytest.mark.parametrize("impl", ["fast", "grouped"])
def test_fast_output_is_channels_last_with_same_values(impl, device):
    x, w, guide, _, conf = make_inputs(SHAPES[0], torch.float32, device=device)
    y = region_aware_conv2d(x, w, guide, *conf, impl=impl)
    assert y.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("impl", ["fast", "grouped"])
@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_channels_last_input_read_in_place_matches_reference(shape, impl, row_layout, device):
    # DRConv2d passes a channels-last input: the patch rows are then strided views of its memory, sample by sample
    x, w, guide, go, conf = make_inputs(shape, device=device)
    x = x.contiguous(memory_format=torch.channels_last)
    for a, b in zip(run(impl, x, w, guide, go, conf), run("reference", x, w, guide, go, conf)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_auto_picks_onnx_path_while_tracing():
    x, w, guide, _, conf = make_inputs(SHAPES[0], torch.float32)
    traced = torch.jit.trace(lambda x, w, g: region_aware_conv2d(x, w, g, *conf), (x, w, guide))
    graph = str(traced.graph)
    assert "aten::matmul" in graph and "aten::argmax" in graph
    torch.testing.assert_close(traced(x, w, guide), region_aware_conv2d(x, w, guide, *conf), rtol=1e-5, atol=1e-5)


def bad(**over):
    x, w, guide = torch.randn(2, 3, 8, 8), torch.randn(2, 4, 5, 3, 3, 3), torch.randn(2, 4, 8, 8)
    args = {"input": x, "weight": w, "guide": guide, "padding": 1, **over}
    return lambda: region_aware_conv2d(**args)


@pytest.mark.parametrize(
    "over, message",
    [
        ({"input": torch.randn(3, 8, 8)}, r"input must be \(B, C_in, H, W\)"),
        ({"weight": torch.randn(2, 4, 5, 3, 3)}, r"weight must be \(B, m, C_out, C_in, k, k\)"),
        ({"guide": torch.randn(2, 4, 8)}, r"guide must be \(B, m, H_out, W_out\)"),
        ({"weight": torch.randn(1, 4, 5, 3, 3, 3)}, "batch sizes differ: input 2, weight 1"),
        ({"weight": torch.randn(2, 4, 5, 2, 3, 3)}, "weight has C_in=2 but input has 3 channels"),
        ({"guide": torch.randn(2, 3, 8, 8)}, "weight has m=4 regions but guide has 3 channels"),
        ({"weight": torch.randn(2, 4, 5, 3, 2, 2)}, "kernel size must be odd, got 2x2"),
        ({"guide": torch.randn(2, 4, 4, 4)}, r"guide is \(4, 4\) but the output is \(8, 8\)"),
        ({"stride": 0}, "need stride >= 1"),
        ({"impl": "cuda"}, "impl must be one of"),
        ({"bias": torch.randn(4)}, r"bias must have shape \(5,\)"),
    ],
)
def test_bad_input_raises_clear_error(over, message):
    with pytest.raises(ValueError, match=message):
        bad(**over)()


@pytest.mark.parametrize("impl", ["fast", "grouped"])
def test_fast_output_can_be_modified_in_place_like_a_conv_output(impl, device):
    # a fused DRConv feeds its output straight into SiLU(inplace=True)
    x, w, guide, _, conf = make_inputs(SHAPES[0], torch.float32, device=device)
    w.requires_grad_(True)
    y = region_aware_conv2d(x, w, guide, *conf, impl=impl)
    expected = torch.nn.functional.silu(y.detach())
    torch.nn.functional.silu(y, inplace=True).sum().backward()
    torch.testing.assert_close(y.detach(), expected)
    assert w.grad is not None and torch.isfinite(w.grad).all()


@pytest.mark.parametrize("impl", ["fast", "grouped", "mix", "reference", "onnx"])
def test_activation_is_applied_to_the_biased_output_by_every_impl(impl):
    x, w, guide, _, conf = make_inputs(SHAPES[1])
    g = torch.Generator().manual_seed(3)
    coef = torch.rand(w.shape[0], w.shape[1], 2, generator=g, dtype=x.dtype)
    bases = torch.randn(2, *w.shape[2:], generator=g, dtype=x.dtype)
    bias = torch.randn(w.shape[2], generator=g, dtype=x.dtype)
    args = (x, coef, bases, guide, *conf, bias, impl)
    plain = region_aware_conv2d_mixed(*args)
    activated = region_aware_conv2d_mixed(*args, activation=torch.nn.SiLU())
    torch.testing.assert_close(activated, F.silu(plain), rtol=1e-12, atol=1e-12)
