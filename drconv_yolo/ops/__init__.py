"""Region-aware convolution, the core op of DRConv, as a function of tensors.

``region_aware_conv2d(input, weight, guide)`` convolves each output pixel with the filter of the region its guide
logits select (argmax over the ``m`` guide channels) and, in backward, replaces the hard argmax by the paper's
softmax surrogate so the guide is learned from the task loss (Chen et al., "Dynamic Region-Aware Convolution",
CVPR 2021, Sec. 3.1).

Five implementations stand behind the one call and agree to floating-point tolerance:

``reference``
    The definition, kept readable for tests: computes all ``m`` responses with ``F.conv2d`` and selects one per
    pixel. ``m`` times the MACs and activation memory of a standard conv.
``fast``
    Gathers each sample's patches sorted by region and multiplies every region's rows by that region's filter only
    (one bmm over the regions padded to the largest, or one mm per region when they are too unequal), so the forward
    costs the MACs of one standard conv. Backward recomputes the patches from the input (nothing of size ``m`` x
    activation is saved) and works one sample at a time, in buffers reused from sample to sample.
``grouped``
    The same MACs with batch-level ops only and no host synchronisation (the GPU path): all B*L pixels sorted once
    by (sample, region), one grouped matrix multiply over the B*m groups (``segment_mm``: ``torch._grouped_mm``
    where supported, Triton kernels elsewhere on CUDA, one mm per group on CPU otherwise), backward in row blocks of
    every sample.
``mix``
    Mixed filters only (``region_aware_conv2d_mixed``, the official generator): one standard conv with the n bases
    (the framework's own kernel), then a per-pixel mix of the n responses by the selected region's coefficients; n x
    the MACs of a conv, so the cheapest path for few bases or small maps. Explicit per-sample filters are refused
    (ValueError).
``onnx``
    The export path, chosen automatically while tracing or exporting (TorchScript, ONNX by either exporter, OpenVINO's
    PyTorch frontend): standard ops only, no custom symbolic, the batch left free, by one of three formulations
    (``ops.export``): ``mix`` (the n bases as one conv, then a per-pixel mix: mixed filters of one base), ``gather``
    (per region, its patch rows gathered and one MatMul: one conv's multiply-adds at batch 1, data-dependent shapes)
    or ``responses`` (all m responses, then a selection: m x the MACs, static shapes). No gradient to the guide.

When autograd records nothing (inference), the fast and grouped paths run their forward as a plain function (no
autograd node: at YOLO's small maps a call's fixed work costs more than its arithmetic) and take their large
temporaries on CPU (patch rows, padded input, mixed filters) from scratch memory kept per thread between calls
(``workspace.scratch``): fresh tensors would be fresh pages, faulted in and zeroed by the kernel on every call.
The buffers hold about the largest layer's temporaries (YOLOv8n-DRConv: 36 MiB at 640 px and batch 1, 76 MiB at
batch 8, 115 MiB at 1280 px); ``release_scratch()`` frees them.

``"auto"`` picks by ``choose_impl``: ``mix`` for mixed filters of at most ``MIX_MAX_BASES`` bases or on small output
maps (a few times m * n pixels), else ``grouped`` off the CPU and for single-sample inference on CPU, ``fast`` for
training and batches on CPU; ``onnx`` while tracing (its formulation by ``ops.export.choose_export``).

Gradients (all implementations, to input, weight and guide)::

    dL/dX, dL/dW_j   only through the selected region r(p) = argmax_j guide[j, p]
    g_j(p)         = sum_o dL/dY[o, p] * (W_j conv X)[o, p]            for every region j
    dL/dguide_j(p) = S_j(p) * (g_j(p) - sum_n S_n(p) * g_n(p)),     S = softmax(guide) over regions, in float32
"""

from __future__ import annotations

import contextlib
from typing import Callable, Optional

import torch

from .common import (
    IntOrPair,
    argmax_regions,
    autocast_enabled,
    check_args,
    check_bias,
    compute_dtype,
    is_tracing,
    output_size,
    records_grad,
)
from .export import EXPORT_FORMULATIONS, choose_export, export_conv, export_formulation, static_batch_export
from .fast import fast_conv
from .filters import ExplicitFilters, MixedFilters
from .grouped import grouped_conv
from .mixed_conv import MIX_FILTERS_VS_RESPONSES, MIX_SMALL_MAP_INFER, MIX_SMALL_MAP_TRAIN, mix_conv, small_map
from .reference import reference_conv
from .workspace import release_scratch

__all__ = [
    "region_aware_conv2d",
    "region_aware_conv2d_mixed",
    "IMPLEMENTATIONS",
    "output_size",
    "is_tracing",
    "argmax_regions",
    "choose_impl",
    "release_scratch",
    "EXPORT_FORMULATIONS",
    "choose_export",
    "export_formulation",
    "static_batch_export",
    "MIX_MAX_BASES",
    "MIX_SMALL_MAP_TRAIN",
    "MIX_SMALL_MAP_INFER",
    "MIX_FILTERS_VS_RESPONSES",
]

IMPLEMENTATIONS = ("auto", "fast", "grouped", "mix", "reference", "onnx")

# "auto" on CPU takes the grouped path for inference up to this batch size: measured at the YOLOv8n bench shapes on a
# 2-core CPU (fp32, one thread, CPU time, round-robin), it is faster there at batch 1 (median 3.2x vs 3.6x a conv,
# worst 5.4x vs 8.1x) and slower at batch 8 (3.6x vs 2.6x).
GROUPED_CPU_MAX_BATCH = 1

# "auto" takes the mix path for mixed filters of at most this many bases: measured at the YOLOv8n bench shapes with
# DRConv2d(regions=8) on a 2-core CPU (fp32, one thread, round-robin, batch 1 and 8), mix costs (median over the 12
# rows, x nn.Conv2d) 1.7 / 2.5 / 4.2 for inference and 1.6 / 3.0 / 5.2 for a training step at n = 1 / 2 / 4, the fast
# path 2.7 and 4.2 whatever n; at n = 2 mix wins 9 / 12 inference and 10 / 12 training rows (it loses the 1x1 layer's
# training step by up to 10%), at n = 4 it wins 2 / 12 and 1 / 12. Its training peak memory is at most 0.45x the
# reference op's for n <= 2 (0.54x at n = 4).
MIX_MAX_BASES = 2


def region_aware_conv2d(
    input: torch.Tensor,
    weight: torch.Tensor,
    guide: torch.Tensor,
    stride: IntOrPair = 1,
    padding: IntOrPair = 0,
    dilation: IntOrPair = 1,
    bias: Optional[torch.Tensor] = None,
    impl: str = "auto",
    activation: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
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
        impl (str): ``"auto"`` (see ``choose_impl``), ``"fast"``, ``"grouped"``, ``"reference"`` or ``"onnx"``
            (``"mix"`` needs mixed filters: a ValueError here); while tracing or exporting the ``"onnx"`` path is
            always used. The ``onnx`` path has no gradient to the guide (inference only).
        activation (callable, optional): Applied to the output, e.g. a fused ``DRConv``'s ``act``. The export path
            applies an elementwise activation module (``export.ROW_ACTIVATIONS``) with the bias to each region's
            product, where OpenVINO fuses both into the region's MatMul.

    Returns:
        (torch.Tensor): Output, shape (B, C_out, H_out, W_out), in the compute dtype (the autocast dtype under
            autocast, else the input's). The fast and grouped paths return it in channels-last memory format.
    """
    return _region_conv(input, ExplicitFilters(weight), guide, stride, padding, dilation, bias, impl, activation)


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
    activation: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
) -> torch.Tensor:
    """``region_aware_conv2d`` with filters ``weight[b, j] = sum_n coef[b, j, n] * bases[n]`` (the official generator).

    The fast path mixes each sample's filters into a reused buffer, so neither the (B, m, C_out, C_in, k, k) filters
    nor their gradient is ever materialised; the grouped path mixes all B*m filters in one matmul; the mix path
    convolves with the n bases and mixes the n responses per pixel; the other paths materialise the filters.

    Args:
        input (torch.Tensor): Input feature map, shape (B, C_in, H, W).
        coef (torch.Tensor): Mixing coefficients, shape (B, m, n).
        bases (torch.Tensor): Shared base kernels, shape (n, C_out, C_in, k, k).
        guide, stride, padding, dilation, bias, impl, activation: As ``region_aware_conv2d``.

    Returns:
        (torch.Tensor): Output, shape (B, C_out, H_out, W_out).
    """
    return _region_conv(input, MixedFilters(coef, bases), guide, stride, padding, dilation, bias, impl, activation)


def choose_impl(
    device: torch.device,
    batch: int,
    training: bool,
    bases: Optional[int] = None,
    regions: Optional[int] = None,
    out_pixels: Optional[int] = None,
    patch: Optional[int] = None,
) -> str:
    """The implementation ``impl="auto"`` runs (outside tracing, which always takes ``"onnx"``).

    The rule: ``"mix"`` for mixed filters (the official generator) of at most ``MIX_MAX_BASES`` bases, on every
    device, batch size and mode: it runs n standard convs' MACs in the framework's own conv kernel plus an elementwise
    mix, where the other paths cost about 2.7x (inference) and 4.2x (training step) a conv whatever n. Measured on CPU
    at the YOLOv8n bench shapes (see ``MIX_MAX_BASES``): at n = 1 it wins every shape, batch and mode (median 1.7x a
    conv for inference, 1.6x for training), at n = 2 most (2.5x and 3.0x), at n = 4 almost none. Off the CPU it is
    chosen on the same ground (cuDNN's conv against the grouped path's gathers), not yet measured there.

    ``"mix"`` also for mixed filters of any n on small output maps: at most ``MIX_SMALL_MAP_TRAIN * m * n`` pixels
    L = Ho * Wo for a training step, at most ``MIX_SMALL_MAP_INFER * m * n`` for inference on two samples or more, and
    n * L <= m * K / ``MIX_FILTERS_VS_RESPONSES`` (K = C_in * kh * kw: the n responses it keeps for backward are small
    next to the filters, so its training peak stays near the fast path's); ``mixed_conv.small_map`` is the test.
    There mixing every sample's m filters from the n bases (m * n * C_out * K multiply-adds per sample, bound by
    memory) costs more than the convolution itself (L * C_out * K), while the mix path reads the bases once per batch:
    at YOLOv8n-DRConv's 8 x 8 maps in a 256 px training step it takes half the fast path's time (measurements beside
    ``mixed_conv.MIX_SMALL_MAP_TRAIN``). Measured on CPU; off it, the same rule on the same ground.

    Otherwise ``"grouped"`` off the CPU, where the fast path's per-sample loops and host synchronisations
    (``.tolist()`` of the region counts) would stall the device queue (GPU speed is not yet measured). On CPU,
    ``"grouped"`` for inference on up to ``GROUPED_CPU_MAX_BATCH`` samples, where its few batch-level ops cost less
    than the fast path's bookkeeping, and ``"fast"`` otherwise: for batches the grouped path's batch-sized temporaries
    (a padded input copy, B*m filters, B*L patch rows, several times the output and far out of cache) cost more than
    the fast path's per-sample buffers, even in scratch memory (batch 8, YOLOv8n bench shapes, 2 threads: median
    3.4x a conv against 3.0x), and for training its blocked backward is no faster (slower for 1x1 kernels).

    Args:
        device (torch.device): The input's device.
        batch (int): The batch size B.
        training (bool): Whether autograd records the call (a backward will follow).
        bases (int, optional): The number of bases n of mixed filters; None for explicit filters.
        regions (int, optional): The number of regions m (with ``bases``, ``out_pixels`` and ``patch``: the small-map
            rule).
        out_pixels (int, optional): The output map's pixel count L = Ho * Wo.
        patch (int, optional): A filter's size K = C_in * kh * kw.

    Returns:
        (str): ``"mix"``, ``"fast"`` or ``"grouped"``.
    """
    if bases is not None and bases <= MIX_MAX_BASES:
        return "mix"
    if bases is not None and None not in (regions, out_pixels, patch):
        if small_map(training, batch, bases, regions, out_pixels, patch):
            return "mix"
    if device.type != "cpu" or (batch <= GROUPED_CPU_MAX_BATCH and not training):
        return "grouped"
    return "fast"


def _region_conv(input, filters, guide, stride, padding, dilation, bias, impl, activation=None):
    """Both public functions: validate, pick the compute dtype and the implementation, dispatch, activate."""
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"region_aware_conv2d: impl must be one of {IMPLEMENTATIONS}, got {impl!r}")
    geometry = check_args(input, filters, guide, stride, padding, dilation)
    if geometry.out_hw is not None:  # eager mode: shapes are known
        check_bias(bias, filters.out_channels)
    if geometry.out_hw is None:  # tracing (check_args leaves the shapes symbolic): the only path that traces to
        impl = "onnx"  # standard ops, whatever was asked for
    elif impl == "auto":
        training = records_grad(input, guide, bias, *filters.tensors)
        bases = filters.bases.shape[0] if isinstance(filters, MixedFilters) else None
        B, m, _, C_in, kh, kw = filters.shape
        pixels = geometry.out_hw[0] * geometry.out_hw[1]
        impl = choose_impl(input.device, B, training, bases, m, pixels, C_in * kh * kw)
    if impl == "mix" and not isinstance(filters, MixedFilters):
        raise ValueError(
            'region_aware_conv2d: impl="mix" needs mixed filters (region_aware_conv2d_mixed, the official generator); '
            "explicit per-sample filters have no bases to convolve with"
        )
    dtype = compute_dtype(input)
    input, bias = input.to(dtype), None if bias is None else bias.to(dtype)
    conf = (geometry.stride, geometry.padding, geometry.dilation)
    if impl == "onnx":  # the filters mixed (if at all) under the caller's autocast; the activation goes inside
        return export_conv(input, filters, guide, *conf, bias, activation=activation)
    # fast, grouped, mix and reference run with autocast off: their tensors are in the compute dtype already, and
    # inside them every op keeps its dtype (out= buffers, the float32 surrogate)
    if impl in ("fast", "grouped", "mix"):
        conv = {"fast": fast_conv, "grouped": grouped_conv, "mix": mix_conv}[impl]
        device_type = input.device.type  # no autocast context when there is nothing to switch off (the common case)
        with torch.autocast(device_type, enabled=False) if autocast_enabled(device_type) else contextlib.nullcontext():
            out = conv(input, filters.to(dtype), guide, bias, geometry)
    else:
        weight = filters.materialise().to(dtype)  # (B, m, C_out, C_in, k, k)
        with torch.autocast(input.device.type, enabled=False):
            out = reference_conv(input, weight, guide, *conf)
        out = out if bias is None else out + bias.view(1, -1, 1, 1)
    return out if activation is None else activation(out)
