"""The grouped (GPU-style) path of region_aware_conv2d forced on CPU: exact to the reference in float64 through the
per-group loop and through the Triton kernels (in Triton's interpreter), close to it through torch._grouped_mm in
float32 and under bf16 autocast, no host synchronisation; and the rule by which "auto" picks an implementation."""

import warnings

import pytest
import torch
from _model_helpers import forbid_host_sync
from test_ops import IDS, SHAPES, make_inputs, run

import drconv_yolo.ops as ops
from drconv_yolo.ops import choose_impl, grouped, region_aware_conv2d, region_aware_conv2d_mixed, segment_mm

NAMES = ("output", "d_input", "d_weight", "d_guide", "d_bias")

# aligned for torch._grouped_mm (K = k*k*C_in and C_out multiples of 8): (B, C_in, C_out, H, W, k, s, p, d, m)
ALIGNED = [
    (2, 8, 16, 9, 7, 3, 1, 1, 1, 4),
    (1, 8, 8, 10, 10, 3, 2, 1, 1, 8),  # batch 1, stride 2
    (3, 16, 8, 6, 5, 1, 1, 0, 1, 3),  # 1x1
]


def close(got, ref, tol, names=NAMES):
    for name, a, b in zip(names, got, ref):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol, msg=lambda m, n=name: f"{n}: {m}")


@pytest.fixture
def grouped_mm_calls(monkeypatch):
    """Count the calls that reach torch._grouped_mm."""
    calls = []
    real = torch._grouped_mm

    def spy(*args, **kwargs):
        calls.append(args[0].dtype)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "_grouped_mm", spy)
    return calls


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_grouped_matches_reference_float64_output_and_all_grads(shape, device):
    x, w, guide, go, conf = make_inputs(shape, device=device)
    bias = torch.randn(shape[2], dtype=torch.float64).to(device)
    close(run("grouped", x, w, guide, go, conf, bias), run("reference", x, w, guide, go, conf, bias), 1e-10)


@pytest.mark.parametrize("shape", SHAPES[:2] + SHAPES[4:6], ids=IDS[:2] + IDS[4:6])
def test_grouped_mixed_matches_materialised_reference_float64_all_grads(shape, device):
    x, w, guide, go, conf = make_inputs(shape, device=device)
    B, m, C_out, C_in, k, _ = w.shape
    g = torch.Generator().manual_seed(1)
    coef = torch.rand(B, m, 3, generator=g, dtype=torch.float64).to(device)
    bases = (torch.randn(3, C_out, C_in, k, k, generator=g, dtype=torch.float64) / (C_in * k * k) ** 0.5).to(device)

    def grads(impl):
        leaves = [t.clone().requires_grad_(True) for t in (x, coef, bases, guide)]
        xx, cc, bb, gg = leaves
        if impl == "grouped":
            y = region_aware_conv2d_mixed(xx, cc, bb, gg, *conf, impl="grouped")
        else:
            y = region_aware_conv2d(xx, torch.einsum("bjn,nocuv->bjocuv", cc, bb), gg, *conf, impl="reference")
        return (y, *torch.autograd.grad(y, leaves, go))

    close(grads("grouped"), grads("reference"), 1e-10, ("output", "d_input", "d_coef", "d_bases", "d_guide"))


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_grouped_triton_kernels_match_reference_float64_output_and_all_grads(shape, triton_kernels):
    x, w, guide, go, conf = make_inputs(shape)
    bias = torch.randn(shape[2], dtype=torch.float64)
    close(run("grouped", x, w, guide, go, conf, bias), run("reference", x, w, guide, go, conf, bias), 1e-10)
    assert set(triton_kernels) == {"_triton_mm", "_triton_mm_tn"}  # forward, input and filter gradients


def test_grouped_triton_kernels_mixed_filters_and_empty_regions_float64(triton_kernels):
    x, w, guide, go, conf = make_inputs((3, 3, 4, 7, 9, 3, 1, 1, 1, 6))
    guide = guide.clone()
    guide[:, 4:] = -100.0  # regions 4 and 5 empty in every sample
    guide[0, 2] = 100.0  # sample 0 entirely in region 2
    g = torch.Generator().manual_seed(1)
    coef = torch.rand(3, 6, 3, generator=g, dtype=torch.float64)
    bases = torch.randn(3, 4, 3, 3, 3, generator=g, dtype=torch.float64) / 27**0.5

    def grads(impl):
        leaves = [t.clone().requires_grad_(True) for t in (x, coef, bases, guide)]
        y = region_aware_conv2d_mixed(*leaves, *conf, impl=impl)
        return (y, *torch.autograd.grad(y, leaves, go))

    close(grads("grouped"), grads("reference"), 1e-10, ("output", "d_input", "d_coef", "d_bases", "d_guide"))
    assert set(triton_kernels) == {"_triton_mm", "_triton_mm_tn"}


def test_grouped_triton_kernels_never_read_tensors_back_to_the_host(triton_kernels, monkeypatch):
    # the path a GPU takes in float32 and float16 (Ultralytics' AMP): the group sizes stay on the device
    x, w, guide, go, conf = make_inputs(SHAPES[0])
    leaves = [t.clone().requires_grad_(True) for t in (x, w, guide)]
    with forbid_host_sync(monkeypatch, "the grouped path's Triton kernels"):
        y = region_aware_conv2d(*leaves, *conf, impl="grouped")
        grads = torch.autograd.grad(y, leaves, go)
        with torch.no_grad():
            y_infer = region_aware_conv2d(x, w, guide, *conf, impl="grouped")
    assert triton_kernels.count("_triton_mm") >= 3 and "_triton_mm_tn" in triton_kernels
    close((y, *grads, y_infer), (*run("reference", x, w, guide, go, conf), y), 1e-10, NAMES[:4] + ("inference",))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("autocast", [False, True], ids=["float32", "float16-autocast"])
def test_grouped_on_cuda_runs_the_triton_kernels_without_host_sync_close_to_reference(autocast, monkeypatch):
    # a GPU's float32 and Ultralytics' float16 AMP, which torch._grouped_mm does not take
    if not segment_mm.triton_available():
        pytest.skip("needs Triton 3")
    monkeypatch.setattr(segment_mm, "_triton_failed", [])
    launches = []
    real = segment_mm._launch
    monkeypatch.setattr(segment_mm, "_launch", lambda run, *args: launches.append(run.__name__) or real(run, *args))
    x, w, guide, go, conf = make_inputs(SHAPES[0])
    exact = run("reference", x, w, guide, go, conf)
    cuda = [t.to("cuda", torch.float32) for t in (x, w, guide, go)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the fallback to the loop warns
        with torch.autocast("cuda", dtype=torch.float16, enabled=autocast):
            with forbid_host_sync(monkeypatch, "the grouped path on CUDA"):
                got = run("grouped", *cuda, conf)
    assert set(launches) == {"_triton_mm", "_triton_mm_tn"}
    tol = 0.01 if autocast else 1e-4
    for name, a, b in zip(NAMES, got, exact):
        assert (a.double().cpu() - b).abs().max() <= tol * b.abs().max() + tol, name


@pytest.mark.parametrize("kernel", ["loop", "triton"])
def test_grouped_backward_in_several_row_blocks_matches_reference_float64(kernel, request, monkeypatch):
    # large maps go through backward in blocks of rows taken at the same positions of every sample's sorted rows,
    # each with its own group ends; a block size of ceil(L/m) rows makes m blocks even at this test's sizes
    if kernel == "triton":
        request.getfixturevalue("triton_kernels")
    monkeypatch.setattr(grouped, "GUIDE_BLOCK_ROWS", 1)
    x, w, guide, go, conf = make_inputs((3, 3, 4, 9, 11, 3, 1, 1, 1, 5))
    guide = guide.clone()
    guide[1, 3] = 100.0  # sample 1 entirely in region 3: its other groups are empty in every block
    bias = torch.randn(4, dtype=torch.float64)
    close(run("grouped", x, w, guide, go, conf, bias), run("reference", x, w, guide, go, conf, bias), 1e-10)


@pytest.mark.parametrize("batch", [1, 3])
def test_grouped_with_empty_regions_and_a_sample_in_one_region(batch, device):
    x, w, guide, go, conf = make_inputs((batch, 3, 4, 7, 9, 3, 1, 1, 1, 6), device=device)
    guide = guide.clone()
    guide[:, 4:] = -100.0  # regions 4 and 5 empty in every sample
    guide[0, 2] = 100.0  # sample 0 entirely in region 2
    got, ref = run("grouped", x, w, guide, go, conf), run("reference", x, w, guide, go, conf)
    close(got, ref, 1e-10)
    assert torch.count_nonzero(got[2][:, 4:]) == 0  # an empty group's filter gradient is exactly zero


@pytest.mark.parametrize("shape", ALIGNED)
def test_grouped_mm_kernel_path_float32_matches_fallback_and_reference(shape, grouped_mm_calls, monkeypatch):
    x, w, guide, go, conf = make_inputs(shape, torch.float32)
    bias = torch.randn(shape[2])
    kernel = run("grouped", x, w, guide, go, conf, bias)
    assert grouped_mm_calls, "the aligned float32 case should reach torch._grouped_mm"
    close(kernel, run("reference", x, w, guide, go, conf, bias), 1e-4)
    monkeypatch.setattr(segment_mm, "grouped_mm_supported", lambda device, dtype: False)
    close(kernel, run("grouped", x, w, guide, go, conf, bias), 1e-4)


def test_grouped_bf16_autocast_cpu_close_to_float32(grouped_mm_calls):
    x, w, guide, go, conf = make_inputs(ALIGNED[0], torch.float32)
    full = run("grouped", x, w, guide, go, conf)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = run("grouped", x, w, guide, go, conf)
    assert low[0].dtype == torch.bfloat16 and torch.bfloat16 in grouped_mm_calls
    for name, a, b in zip(NAMES, low, full):
        assert torch.isfinite(a).all(), name
        assert (a.float() - b).abs().max() <= 0.05 * b.abs().max() + 1e-3, name


def test_grouped_triton_kernels_float16_autocast_close_to_float32(triton_kernels):
    # float16 operands, float32 accumulation, float16 results: what Ultralytics' AMP hands the kernels on a GPU
    x, w, guide, go, conf = make_inputs(SHAPES[0], torch.float32)
    full = run("grouped", x, w, guide, go, conf)
    with torch.autocast("cpu", dtype=torch.float16):
        low = run("grouped", x, w, guide, go, conf)
    assert low[0].dtype == torch.float16 and set(triton_kernels) == {"_triton_mm", "_triton_mm_tn"}
    for name, a, b in zip(NAMES, low, full):
        assert torch.isfinite(a).all(), name
        assert (a.float() - b).abs().max() <= 0.01 * b.abs().max() + 1e-3, name


def test_grouped_forward_and_backward_never_read_tensors_back_to_the_host(grouped_mm_calls, monkeypatch):
    # everything that copies a tensor's values to Python (a device synchronisation on a GPU) raises during the call
    x, w, guide, go, conf = make_inputs(ALIGNED[0], torch.float32)
    coef, bases = torch.rand(2, 4, 3, requires_grad=True), torch.randn(3, 16, 8, 3, 3, requires_grad=True)
    leaves = [t.clone().requires_grad_(True) for t in (x, w, guide)]

    with forbid_host_sync(monkeypatch, "the grouped path"):
        y = region_aware_conv2d(*leaves, *conf, impl="grouped")
        grads = torch.autograd.grad(y, leaves, go)
        ym = region_aware_conv2d_mixed(leaves[0], coef, bases, leaves[2], *conf, impl="grouped")
        grads_mixed = torch.autograd.grad(ym, (leaves[0], coef, bases, leaves[2]), go)
    assert len(grouped_mm_calls) >= 6  # forward, filter and input gradients, both filter descriptions
    assert all(torch.isfinite(g).all() for g in (*grads, *grads_mixed))


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_grouped_inference_never_reads_tensors_back_to_the_host(mode, grouped_mm_calls, monkeypatch):
    # the forward-only branch (no autograd node, scratch buffers, cached aranges) is the GPU path's inference too
    x, w, guide, go, conf = make_inputs(ALIGNED[0], torch.float32)
    coef, bases = torch.rand(2, 4, 3), torch.randn(3, 16, 8, 3, 3)
    context = torch.no_grad if mode == "no_grad" else torch.inference_mode
    with context(), forbid_host_sync(monkeypatch, "the grouped path's inference"):
        y = region_aware_conv2d(x, w, guide, *conf, impl="grouped")
        ym = region_aware_conv2d_mixed(x, coef, bases, guide, *conf, impl="grouped")
    assert len(grouped_mm_calls) == 2 and y.grad_fn is None
    with context():
        ref = region_aware_conv2d(x, w, guide, *conf, impl="reference")
        ref_mixed = region_aware_conv2d_mixed(x, coef, bases, guide, *conf, impl="reference")
    close((y, ym), (ref, ref_mixed), 1e-4, ("output", "output_mixed"))


@pytest.mark.parametrize(
    "device, batch, training, expected",
    [
        ("cpu", 1, False, "grouped"),
        ("cpu", 1, True, "fast"),
        ("cpu", 8, False, "fast"),
        ("cpu", 8, True, "fast"),
        ("cuda", 1, True, "grouped"),
        ("cuda", 8, False, "grouped"),
    ],
)
def test_auto_rule_grouped_off_the_cpu_and_for_single_sample_inference(device, batch, training, expected):
    assert choose_impl(torch.device(device), batch, training) == expected


def test_auto_dispatches_by_the_rule(monkeypatch):
    called = []
    for name in ("fast_conv", "grouped_conv"):
        real = getattr(ops, name)
        monkeypatch.setattr(ops, name, lambda *args, n=name, f=real: called.append(n) or f(*args))
    x, w, guide, _, conf = make_inputs(SHAPES[1])  # batch 1
    y = region_aware_conv2d(x, w, guide, *conf)
    region_aware_conv2d(x, w.requires_grad_(True), guide, *conf)  # training
    with torch.no_grad():
        region_aware_conv2d(x, w, guide, *conf)  # inference again
    assert called == ["grouped_conv", "fast_conv", "grouped_conv"]
    x, w, guide, _, conf = make_inputs(SHAPES[0])  # batch 2
    region_aware_conv2d(x, w, guide, *conf)
    assert called[-1] == "fast_conv"
    monkeypatch.setattr(ops, "choose_impl", lambda *args: "grouped")  # GPU
    torch.testing.assert_close(
        region_aware_conv2d(x, w, guide, *conf), region_aware_conv2d(x, w, guide, *conf, impl="fast")
    )
    assert called[-2:] == ["grouped_conv", "fast_conv"]
    assert y.shape[0] == 1


def test_grouped_training_after_inference_mode_call_of_the_same_geometry():
    # the patch offsets (per geometry) and the plan's small aranges (per size) are cached: made under inference_mode,
    # they must still serve autograd
    x, w, guide, go, conf = make_inputs(SHAPES[1])
    with torch.inference_mode():
        region_aware_conv2d(x, w, guide, *conf, impl="grouped")
    close(run("grouped", x, w, guide, go, conf), run("reference", x, w, guide, go, conf), 1e-10)
