"""Region-aware convolution, the core op of DRConv, as a function of tensors.

``region_aware_conv2d(input, weight, guide)`` convolves each output pixel with the filter of the region its guide
logits select (argmax over the ``m`` guide channels) and, in backward, replaces the hard argmax by the paper's
softmax surrogate so the guide is learned from the task loss (Chen et al., "Dynamic Region-Aware Convolution",
CVPR 2021, Sec. 3.1).

Three implementations stand behind the one call and agree to floating-point tolerance:

``reference``
    The definition, kept readable for tests: computes all ``m`` responses with ``F.conv2d`` and selects one per
    pixel. ``m`` times the MACs and activation memory of a standard conv.
``fast`` (default)
    Gathers each sample's patches sorted by region and multiplies every region's rows by that region's filter only
    (one bmm over the regions padded to the largest, or one mm per region when they are too unequal), so the forward
    costs the MACs of one standard conv. Backward recomputes the patches from the input (nothing of size ``m`` x
    activation is saved) and works one sample at a time.
``onnx``
    Standard ops only (im2col, MatMul, ArgMax, Equal), no batch-size dependent shapes and no custom symbolic;
    chosen automatically while tracing or exporting. It computes all ``m`` responses (``m`` x the MACs).

Gradients (all implementations, to input, weight and guide)::

    dL/dX, dL/dW_j   only through the selected region r(p) = argmax_j guide[j, p]
    g_j(p)         = sum_o dL/dY[o, p] * (W_j conv X)[o, p]            for every region j
    dL/dguide_j(p) = S_j(p) * (g_j(p) - sum_n S_n(p) * g_n(p)),     S = softmax(guide) over regions, in float32
"""

from __future__ import annotations

from typing import Optional

import torch

from .common import IntOrPair, check_args, check_bias, compute_dtype, is_tracing, output_size
from .export import onnx_conv
from .fast import argmax_regions, fast_conv
from .filters import ExplicitFilters, MixedFilters
from .reference import reference_conv

__all__ = [
    "region_aware_conv2d",
    "region_aware_conv2d_mixed",
    "IMPLEMENTATIONS",
    "output_size",
    "is_tracing",
    "argmax_regions",
]

IMPLEMENTATIONS = ("auto", "fast", "reference", "onnx")


def region_aware_conv2d(
    input: torch.Tensor,
    weight: torch.Tensor,
    guide: torch.Tensor,
    stride: IntOrPair = 1,
    padding: IntOrPair = 0,
    dilation: IntOrPair = 1,
    bias: Optional[torch.Tensor] = None,
    impl: str = "auto",
) -> torch.Tensor:
    """Convolve each output pixel with the filter of the region its guide selects.

    Args:
        input (torch.Tensor): Input feature map, shape (B, C_in, H, W).
        weight (torch.Tensor): One filter per sample and region, shape (B, m, C_out, C_in, k, k), k odd.
        guide (torch.Tensor): Guided-feature logits, shape (B, m, H_out, W_out); the region at an output pixel is the
            argmax over the m channels (ties resolved as ``torch.argmax``).
        stride (int | tuple): Convolution stride.
        padding (int | tuple): Zero padding added to both sides.
        dilation (int | tuple): Kernel dilation.
        bias (torch.Tensor, optional): Per-output-channel bias (C_out,), shared by all regions.
        impl (str): ``"auto"`` (``"fast"``), ``"fast"``, ``"reference"`` or ``"onnx"``; while tracing or exporting
            the ``"onnx"`` path is always used. The ``onnx`` path has no gradient to the guide (inference only).

    Returns:
        (torch.Tensor): Output, shape (B, C_out, H_out, W_out), in the compute dtype (the autocast dtype under
            autocast, else the input's). The fast path returns it in channels-last memory format.
    """
    return _region_conv(input, ExplicitFilters(weight), guide, stride, padding, dilation, bias, impl)


def region_aware_conv2d_mixed(
    input: torch.Tensor,
    coef: torch.Tensor,
    bases: torch.Tensor,
    guide: torch.Tensor,
    stride: IntOrPair = 1,
    padding: IntOrPair = 0,
    dilation: IntOrPair = 1,
    bias: Optional[torch.Tensor] = None,
    impl: str = "auto",
) -> torch.Tensor:
    """``region_aware_conv2d`` with filters ``weight[b, j] = sum_n coef[b, j, n] * bases[n]`` (the official generator).

    The fast path mixes each sample's filters into a reused buffer, so neither the (B, m, C_out, C_in, k, k) filters
    nor their gradient is ever materialised; the other paths materialise them.

    Args:
        input (torch.Tensor): Input feature map, shape (B, C_in, H, W).
        coef (torch.Tensor): Mixing coefficients, shape (B, m, n).
        bases (torch.Tensor): Shared base kernels, shape (n, C_out, C_in, k, k).
        guide, stride, padding, dilation, bias, impl: As ``region_aware_conv2d``.

    Returns:
        (torch.Tensor): Output, shape (B, C_out, H_out, W_out).
    """
    return _region_conv(input, MixedFilters(coef, bases), guide, stride, padding, dilation, bias, impl)


def _region_conv(input, filters, guide, stride, padding, dilation, bias, impl):
    """Both public functions: validate, pick the compute dtype and the implementation, dispatch."""
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"region_aware_conv2d: impl must be one of {IMPLEMENTATIONS}, got {impl!r}")
    geometry = check_args(input, filters, guide, stride, padding, dilation)
    if geometry.out_hw is not None:  # eager mode: shapes are known
        check_bias(bias, filters.out_channels)
    if is_tracing():  # the only path that traces to standard ops, whatever was asked for
        impl = "onnx"
    elif impl == "auto":
        impl = "fast"
    dtype = compute_dtype(input)
    input, bias = input.to(dtype), None if bias is None else bias.to(dtype)
    # fast and reference run with autocast off: their tensors are in the compute dtype already, and inside them
    # every op keeps its dtype (out= buffers, the float32 surrogate)
    if impl == "fast":
        with torch.autocast(input.device.type, enabled=False):
            return fast_conv(input, filters.to(dtype), guide, bias, geometry)
    weight = filters.materialise().to(dtype)  # (B, m, C_out, C_in, k, k), mixed under the caller's autocast
    conv_args = (input, weight, guide, geometry.stride, geometry.padding, geometry.dilation)
    if impl == "onnx":
        out = onnx_conv(*conv_args)
    else:
        with torch.autocast(input.device.type, enabled=False):
            out = reference_conv(*conv_args)
    return out if bias is None else out + bias.view(1, -1, 1, 1)
