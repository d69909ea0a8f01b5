"""DRConv2d and DRConv: initial filter scale, parameter counts, fusing, serialisation, dtypes, errors."""

import copy
import io
import pickle

import pytest
import torch
import torch.nn as nn

from drconv_yolo.modules import DRConv, DRConv2d, GlobalAvgPool, he_std
from drconv_yolo.ops import release_scratch
from drconv_yolo.ops.workspace import scratch_bytes


def randomize_bn(bn: nn.BatchNorm2d) -> None:
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 2)
        bn.bias.uniform_(-1, 1)


@pytest.mark.parametrize("generator", ["official", "paper"])
@pytest.mark.parametrize("c1, k", [(16, 1), (16, 3), (256, 3)])
def test_generated_filters_start_at_he_scale(generator, c1, k):
    layer = DRConv2d(c1, 32, k, generator=generator)
    w = layer.generator(torch.randn(8, c1, 12, 12))
    assert w.shape == (8, 8, 32, c1, k, k)
    # within 25% of a He-initialised conv's std (the snippet's is ~0.3 whatever the fan-in: 10x too large at 256)
    assert 0.75 < w.std().item() / he_std(c1, k) < 1.25


@pytest.mark.parametrize("c1, c2, k", [(16, 32, 3), (64, 64, 1)])
def test_parameter_counts_match_documented_formulas(c1, c2, k):
    m, n = 8, 8
    official = DRConv2d(c1, c2, k, bias=False)
    paper = DRConv2d(c1, c2, k, bias=False, generator="paper")
    guide = m * c1 * k * k + m
    assert sum(p.numel() for p in official.parameters()) == guide + n * c2 * c1 * k * k + (c1 + 1) * m * n
    h = m * k * k
    assert sum(p.numel() for p in paper.parameters()) == guide + h * c2 * c1 + (c1 + 1) * h


@pytest.mark.parametrize("k, s, d", [(1, 1, 1), (3, 1, 1), (3, 2, 1), (5, 2, 1), (3, 1, 2)])
def test_default_padding_is_same_as_autopad(k, s, d):
    y = DRConv2d(4, 6, k, s, d=d, regions=3)(torch.randn(2, 4, 13, 10))
    assert y.shape == (2, 6, -(-13 // s), -(-10 // s))


@pytest.mark.parametrize("generator", ["official", "paper"])
def test_fused_equals_unfused_in_eval(generator):
    layer = DRConv(16, 32, 3, 2, generator=generator).eval()
    randomize_bn(layer.bn)
    x = torch.randn(2, 16, 31, 17)
    with torch.no_grad():
        y = layer(x)
        fused = copy.deepcopy(layer).fuse()
        assert not hasattr(fused, "bn")
        torch.testing.assert_close(fused(x), y, rtol=1e-4, atol=1e-5)


def test_fuse_is_idempotent():
    layer = DRConv(8, 8, 3).eval()
    randomize_bn(layer.bn)
    x = torch.randn(1, 8, 9, 9)
    with torch.no_grad():
        once = layer.fuse()(x)
        torch.testing.assert_close(layer.fuse()(x), once)


def test_deepcopy_pickle_and_state_dict_round_trips_preserve_output():
    layer = DRConv(8, 16, 3, 2, regions=4).eval()
    randomize_bn(layer.bn)
    x = torch.randn(2, 8, 10, 10)
    with torch.no_grad():
        y = layer(x)
        torch.testing.assert_close(copy.deepcopy(layer)(x), y)
        torch.testing.assert_close(pickle.loads(pickle.dumps(layer))(x), y)
        buffer = io.BytesIO()
        torch.save(layer.state_dict(), buffer)
        buffer.seek(0)
        other = DRConv(8, 16, 3, 2, regions=4).eval()
        other.load_state_dict(torch.load(buffer, weights_only=True))
        torch.testing.assert_close(other(x), y)


def test_global_avg_pool_matches_adaptive_avg_pool_value_and_gradient():
    x = torch.randn(3, 5, 7, 4, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(3, 5, 1, 1, dtype=torch.float64)
    (GlobalAvgPool()(x) * weights).sum().backward()
    ours, x.grad = x.grad, None
    (nn.AdaptiveAvgPool2d(1)(x) * weights).sum().backward()
    torch.testing.assert_close(ours, x.grad, rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        torch.testing.assert_close(GlobalAvgPool()(x), nn.AdaptiveAvgPool2d(1)(x), rtol=1e-12, atol=1e-12)


def test_official_bases_stay_channels_last_through_copies_and_loading():
    # the fast op reads channels-last bases without a copy; any layout is still correct, only slower
    layer = DRConv2d(8, 16, 3)
    copies = [copy.deepcopy(layer), pickle.loads(pickle.dumps(layer)), layer.double()]
    other = DRConv2d(8, 16, 3)
    other.load_state_dict(layer.state_dict())
    for m in [layer, other, *copies]:
        assert m.generator.bases.is_contiguous(memory_format=torch.channels_last)


def test_state_dict_records_layout_version():
    meta = DRConv2d(4, 4, 3).state_dict()._metadata
    assert meta[""]["version"] == DRConv2d._version == 1


def test_state_dict_of_a_newer_layout_is_refused_by_name():
    block = torch.nn.Sequential(DRConv2d(4, 4, 3))
    state = block.state_dict()
    state._metadata["0"]["version"] = DRConv2d._version + 1
    with pytest.raises(RuntimeError, match=r"0: state-dict layout version 2 was written by a newer drconv-yolo"):
        torch.nn.Sequential(DRConv2d(4, 4, 3)).load_state_dict(state)


def test_half_module_forward_close_to_float32():
    layer = DRConv(8, 16, 3, regions=4).eval()
    x = torch.randn(2, 8, 12, 12)
    with torch.no_grad():
        y32 = layer(x)
        y16 = copy.deepcopy(layer).half()(x.half())
    assert y16.dtype == torch.float16
    torch.testing.assert_close(y16.float(), y32, rtol=2e-2, atol=2e-2)


def test_amp_forward_backward_finite_bf16_cpu():
    layer = DRConv(8, 16, 3, 2, regions=4).train()
    x = torch.randn(2, 8, 12, 12, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
        loss = y.float().square().mean()
    loss.backward()
    assert torch.isfinite(y.float()).all()
    grads = [p.grad for p in layer.parameters()] + [x.grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert layer.conv.guide.weight.grad.abs().sum() > 0  # the guide learns through the surrogate


def test_init_from_conv_reproduces_conv_output_for_every_region():
    conv = nn.Conv2d(8, 16, 3, 2, 1, bias=True)
    layer = DRConv2d(8, 16, 3, 2, regions=4)
    layer.init_from_conv_(conv)
    x = torch.randn(3, 8, 11, 11)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), conv(x), rtol=1e-5, atol=1e-5)
        w = layer.generator(x)
        torch.testing.assert_close(w, conv.weight.expand_as(w))


def test_paper_generator_refuses_pretrained_start_with_clear_error():
    layer = DRConv2d(8, 16, 3, generator="paper")
    with pytest.raises(NotImplementedError, match="generator='official'"):
        layer.init_from_conv_(nn.Conv2d(8, 16, 3))


def test_init_from_conv_rejects_wrong_shape():
    with pytest.raises(ValueError, match=r"weight shape \(16, 8, 1, 1\)"):
        DRConv2d(8, 16, 3).init_from_conv_(nn.Conv2d(8, 16, 1))


def test_regions_map_has_output_shape_and_valid_indices():
    layer = DRConv2d(4, 4, 3, 2, regions=5)
    r = layer.regions_map(torch.randn(2, 4, 9, 7))
    assert r.shape == (2, 5, 4) and r.min() >= 0 and r.max() < 5


def test_drconv_default_activation_is_silu_and_act_false_is_identity():
    assert isinstance(DRConv(4, 4).act, nn.SiLU)
    assert isinstance(DRConv(4, 4, act=False).act, nn.Identity)
    assert isinstance(DRConv(4, 4, act=nn.ReLU()).act, nn.ReLU)


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda: DRConv2d(4, 4, 2), ValueError, "kernel size k must be odd, got 2"),
        (lambda: DRConv2d(4, 4, 3, regions=0), ValueError, "regions must be an int >= 1, got 0"),
        (lambda: DRConv2d(0, 4, 3), ValueError, "c1 must be an int >= 1, got 0"),
        (lambda: DRConv2d(4, 4, 3, generator="snippet"), ValueError, "generator must be one of"),
        (lambda: DRConv2d(4, 4, 3, generator="paper", hidden=12, regions=8), ValueError, "multiple of regions=8"),
        (lambda: DRConv(4, 4, 3, g=2), ValueError, "groups g=2 is not supported"),
    ],
)
def test_bad_arguments_raise_clear_errors(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_channel_mismatch_raises_clear_error():
    with pytest.raises(ValueError, match=r"expected input \(B, 4, H, W\), got shape \(1, 3, 8, 8\)"):
        DRConv2d(4, 4, 3)(torch.randn(1, 3, 8, 8))


def export_onnx(layer: nn.Module, x: torch.Tensor, dynamic: bool) -> bytes:
    buffer = io.BytesIO()
    axes = {"x": {0: "b", 2: "h", 3: "w"}, "y": {0: "b", 2: "ho", 3: "wo"}} if dynamic else None
    torch.onnx.export(
        layer, x, buffer, opset_version=17, dynamo=False, input_names=["x"], output_names=["y"], dynamic_axes=axes
    )
    return buffer.getvalue()


@pytest.mark.parametrize("centred, fused", [(False, False), (True, False), (False, True)])
def test_onnx_export_uses_standard_ops_and_matches_pytorch_at_batch_1_and_4(centred, fused):
    # fused: nothing requires grad, as in `yolo export` (the inference-only branches must trace batch-size free)
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    layer = DRConv(8, 16, 3, 2, regions=4, centre_guide=centred).eval()
    randomize_bn(layer.bn)
    if fused:
        layer.fuse()
    release_scratch()
    model = export_onnx(layer, torch.randn(1, 8, 17, 12), dynamic=True)
    assert scratch_bytes() == 0  # a traced scratch buffer would be a constant of the traced batch size
    ops = {n.op_type for n in onnx.load_from_string(model).graph.node}
    assert ops <= {s.name for s in onnx.defs.get_all_schemas()}  # standard ONNX ops only
    assert "Corr" not in ops and "ArgMax" in ops
    session = ort.InferenceSession(model)
    for shape in [(1, 8, 17, 12), (4, 8, 17, 12), (2, 8, 33, 20)]:
        x = torch.randn(shape)
        with torch.no_grad():
            expected = layer(x).numpy()
        got = session.run(None, {"x": x.numpy()})[0]
        assert got.shape == expected.shape
        assert abs(got - expected).max() < 1e-4, shape


def test_layer_without_own_guide_needs_one_passed_in():
    layer = DRConv2d(4, 8, 1, own_guide=False)
    with pytest.raises(ValueError, match="no guide conv of its own \\(own_guide=False\\): pass guide="):
        layer(torch.randn(1, 4, 5, 5))
    assert layer(torch.randn(1, 4, 5, 5), torch.randn(1, 8, 5, 5)).shape == (1, 8, 5, 5)


def test_centred_guide_ignores_a_uniform_shift_of_one_region_logit():
    # the paper's mask collapses when one region's logit is raised everywhere; the centred mask does not see the shift
    torch.manual_seed(0)
    plain, centred = DRConv2d(4, 6, 3, regions=4), DRConv2d(4, 6, 3, regions=4, centre_guide=True)
    centred.load_state_dict(plain.state_dict())
    x = torch.randn(2, 4, 9, 7)
    with torch.no_grad():
        before = centred(x)
        for layer in (plain, centred):
            layer.guide.bias[2] += 50.0
    assert (plain.regions_map(x) == 2).all()  # collapsed
    assert centred.regions_map(x).unique().numel() == 4
    with torch.no_grad():
        torch.testing.assert_close(centred(x), before, rtol=1e-5, atol=1e-5)  # float32 rounding of the shift only


def test_centred_guide_gives_the_guide_bias_no_gradient():
    torch.manual_seed(0)
    layer = DRConv2d(4, 6, 3, regions=4, centre_guide=True).double()
    layer(torch.randn(2, 4, 9, 7, dtype=torch.float64)).square().sum().backward()
    assert layer.guide.weight.grad.abs().max() > 1e-3  # the guide still learns ...
    assert layer.guide.bias.grad.abs().max() < 1e-12  # ... but not a uniform offset (zero up to rounding)


def test_centre_guide_option_is_checked_and_shown():
    assert "centre_guide=True" in repr(DRConv(4, 6, 3, centre_guide=True))
    assert "centre_guide" not in repr(DRConv(4, 6, 3))
    with pytest.raises(ValueError, match="centre_guide must be true or false, got 1"):
        DRConv2d(4, 6, 3, centre_guide=1)


def test_module_pickled_before_centre_guide_existed_uses_the_papers_mask():
    layer = DRConv2d(4, 6, 3, regions=4)
    state = layer.__dict__.copy()
    del state["centre_guide"]  # what a module pickled before the option holds
    restored = DRConv2d.__new__(DRConv2d)
    restored.__dict__.update(state)  # as unpickling an old module: no instance attribute
    assert "centre_guide" not in restored.__dict__ and restored.centre_guide is False
    x = torch.randn(1, 4, 6, 6)
    assert torch.equal(restored.regions_map(x), layer.guide(x).argmax(1))
