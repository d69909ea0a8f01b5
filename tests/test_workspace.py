"""Scratch memory of the inference paths: reused from call to call, never aliased by a result, per autograd mode."""

import pytest
import torch
from test_ops import IDS, SHAPES, make_inputs

from drconv_yolo.modules import DRConv2d
from drconv_yolo.ops import region_aware_conv2d, region_aware_conv2d_mixed, release_scratch
from drconv_yolo.ops.workspace import scratch, scratch_bytes

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _empty_scratch():
    release_scratch()
    yield
    release_scratch()


def test_scratch_reuses_a_slot_and_grows_it_for_a_larger_request():
    a = scratch("a", (4, 5), torch.float32, CPU)
    assert scratch("a", (2, 3), torch.float32, CPU).data_ptr() == a.data_ptr()  # smaller: the same memory
    b = scratch("a", (10, 10), torch.float32, CPU)
    assert b.shape == (10, 10) and b.is_contiguous()
    assert scratch_bytes() == 100 * 4  # the grown buffer replaced the first


def test_scratch_gives_each_slot_and_dtype_its_own_memory():
    a = scratch("a", (8,), torch.float32, CPU)
    b = scratch("b", (8,), torch.float32, CPU)
    c = scratch("a", (8,), torch.float64, CPU)
    assert len({a.data_ptr(), b.data_ptr(), c.data_ptr()}) == 3


def test_release_scratch_frees_every_buffer():
    scratch("a", (1000,), torch.float32, CPU)
    assert scratch_bytes() == 4000
    release_scratch()
    assert scratch_bytes() == 0


def test_scratch_made_in_inference_mode_is_not_reused_outside_it():
    # an inference tensor cannot be written outside inference mode: a no_grad call after predict must still work
    with torch.inference_mode():
        a = scratch("a", (8,), torch.float32, CPU)
    with torch.no_grad():
        b = scratch("a", (8,), torch.float32, CPU)
        b.fill_(1.0)
    assert a.is_inference() and not b.is_inference()


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
@pytest.mark.parametrize("impl", ["fast", "grouped"])
@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_inference_forward_matches_reference_float64(shape, impl, mode):
    # the forward-only branch (nothing recorded): scratch memory for the patch rows, padded copy and mixed filters
    x, w, guide, _, conf = make_inputs(shape)
    B, m, C_out, C_in, k, _ = w.shape
    coef, bases = torch.rand(B, m, 3, dtype=torch.float64), torch.randn(3, C_out, C_in, k, k, dtype=torch.float64)
    context = torch.no_grad if mode == "no_grad" else torch.inference_mode
    with context():
        got = region_aware_conv2d(x, w, guide, *conf, impl=impl)
        got_mixed = region_aware_conv2d_mixed(x, coef, bases, guide, *conf, impl=impl)
        want = region_aware_conv2d(x, w, guide, *conf, impl="reference")
        want_mixed = region_aware_conv2d_mixed(x, coef, bases, guide, *conf, impl="reference")
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(got_mixed, want_mixed, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("impl", ["fast", "grouped"])
def test_inference_output_survives_later_calls(impl):
    # a result must never be scratch memory: the next call (larger, so the buffers grow) leaves it as it was
    first, second = make_inputs(SHAPES[0]), make_inputs(SHAPES[4], seed=1)
    with torch.no_grad():
        y = region_aware_conv2d(*first[:3], *first[4], impl=impl)
        kept = y.clone()
        region_aware_conv2d(*second[:3], *second[4], impl=impl)
        region_aware_conv2d(*first[:3], *first[4], impl=impl)
    assert torch.equal(y, kept)


def test_drconv2d_inference_with_scratch_input_copy_matches_channels_last_input():
    # an NCHW input is copied to channels-last in scratch memory; two layers in a row share that slot
    torch.manual_seed(0)
    a, b = DRConv2d(4, 6, 3, 2, regions=4).double().eval(), DRConv2d(6, 5, 3, 1, regions=3).double().eval()
    x = torch.randn(2, 4, 11, 10, dtype=torch.float64)
    with torch.no_grad():
        want = b(a(x.contiguous(memory_format=torch.channels_last)).contiguous(memory_format=torch.channels_last))
        got = b(a(x).contiguous())  # both inputs NCHW: each is copied into the same scratch slot
    assert scratch_bytes() > 0
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_drconv2d_training_input_copy_is_not_scratch():
    # the channels-last copy is saved for backward by the guide conv and the op: it must be a fresh tensor
    layer = DRConv2d(4, 6, 3, 1, regions=4).double()
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    layer(x).sum().backward()
    assert scratch_bytes() == 0
