"""The "conv then mix" implementation, for the official generator's filters with few bases or on small maps.

With ``MixedFilters`` region j's filter is ``W_j = sum_n coef[b, j, n] * bases[n]``, so by linearity the output at
pixel p of region r(p) = argmax_j guide[b, j, p] is::

    y[b, :, p] = sum_n coef[b, r(p), n] * Z[b, n, :, p] + bias,    Z = conv2d(x, bases as (n*C_out, C_in, k, k))

that is one standard convolution with n*C_out output channels (the framework's own kernel: oneDNN on CPU, cuDNN on
CUDA; on the small maps of a training step, the unfolded patches times the bases in one matrix product) and a per-pixel
mix: n times the MACs of one conv, so it is the cheapest path when n is small, or when the map is so small that mixing
every sample's filters would cost more than the convolution (``choose_impl``).

Backward gives exactly the paper's gradients (those of the reference, which materialises the filters):

    dL/dZ_n(p)        = coef[b, r(p), n] * dL/dY(p)        (conv2d's own backward then gives dL/dx and dL/dbases)
    u_n(p)            = sum_o dL/dY[o, p] * Z_n[o, p]
    dL/dcoef[b, j, n] = sum over the pixels p of region j of u_n(p)
    g_j(p)            = <dL/dY(p), (W_j conv X)(p)> = sum_n coef[b, j, n] * u_n(p)   for every region j

and the guide gets the softmax surrogate of g (``common.guide_grad``). No tensor of m times the output's size exists,
forward or backward; training saves Z, n times the output (and, as one matrix product, the unfolded patches: on the
maps where that runs, at most about Z's size).
The mix is one autograd Function (region selection and surrogate); the convolution is differentiated by autograd.
Batch-level ops only: no per-sample loop and no host synchronisation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .common import argmax_regions, grad_dtype, guide_grad, records_grad

# "auto" also takes the mix path for mixed filters of any n when the output map is small next to the filters: at most
# MIX_SMALL_MAP_TRAIN * m * n output pixels L for a training step, at most MIX_SMALL_MAP_INFER * m * n for inference on
# more than one sample, and (its memory) n * L <= m * K / MIX_FILTERS_VS_RESPONSES, K = C_in * kh * kw.
# Time: there the other paths spend more on mixing each sample's m filters (m * n * C_out * K multiply-adds, bound by
# memory: the n bases are read once per sample) than on convolving (L * C_out * K), while the mix path reads the bases
# once per batch. Measured at the YOLOv8n-DRConv layers (m = n = 8, so m * n = 64; 2-core CPU, fp32, 2 threads,
# batch 8, round-robin; x nn.Conv2d): a training step at 36 / 64 / 144 output pixels costs 7.0-7.4x / 6.3-7.4x /
# 6.7-8.6x by mix against 15.8-18.9x / 10.7-16.0x / 9.1-10.8x by the fast path; at 256 pixels mix loses (6.7-7.1x
# against 5.5-6.6x). Inference at batch 8: 64 pixels 6.5-7.0x by mix against 8.3-9.8x, 256 pixels 7.4-7.5x against
# 4.1-4.8x. At batch 1 the grouped path (the sample's filters mixed in one matmul) stays ahead at 64 pixels (4.5-4.9x
# against 5.6-6.1x).
# Memory: the mix path keeps the n responses Z (n * C_out * L per sample) for backward, the reference op the
# materialised filters (m * C_out * K) and their gradient besides its m responses. With Z at most an eighth of the
# filters, a training step at batch 8 peaks at 0.12-0.20x the reference op's and 0.93-1.3x the fast path's (64->64,
# 128->128, 128->256 at 8 x 8, Z as one product, below); at batch 1 the parameter gradients dominate: 0.35-0.56x the
# reference's, the fast path 0.52-0.84x. Where Z is as large as the filters (16->32 at 8 x 8 or 12 x 12) it would
# take 0.62-0.84x the reference's at batch 2, and 1.8x the fast path's for 64->128 at 12 x 12 (a quarter; both
# measured with Z by F.conv2d).
MIX_SMALL_MAP_TRAIN = 3
MIX_SMALL_MAP_INFER = 1
MIX_FILTERS_VS_RESPONSES = 8

# On the small maps of a training step the n basis responses are one matrix product of the patches (unfold) with the
# bases, differentiated by autograd, instead of F.conv2d: oneDNN's backward of a conv with n * C_out output channels is
# slow on small maps. Measured with 8 bases at 8 x 8 output pixels (batch 8, 2-core CPU, fp32, round-robin, three
# runs), a training step of DRConv2d(impl="mix") takes 0.86-0.92x the time (128->256, 128->128) and 0.90-1.00x
# (64->64) at 2 threads, 0.75-0.91x and 0.94-0.98x at one thread. Inference keeps F.conv2d, faster there (the
# product 1.16-1.30x). The patches are reordered to the bases' (kh, kw, C_in) order rather than the bases to unfold's
# (C_in, kh, kw): the bases' reorder was a transposing copy of n * C_out * K numbers each way (forward, and their
# gradient back), the patches' is of B * L * K, a quarter to all of that on the YOLOv8n-DRConv maps at batch 8 (B * L
# against n * C_out: more only from batch 16 at 8 x 8 with 64 output channels or fewer); the training
# step then takes 0.89-0.98x the time (128->256, 128->128, 64->64 at 8 x 8, batch 8, two runs at 2 threads, one at
# one thread, alternating order).


def small_map(training: bool, batch: int, bases: int, regions: int, out_pixels: int, patch: int) -> bool:
    """Whether mixed filters on this map are cheaper by the mix path whatever n (see ``MIX_SMALL_MAP_TRAIN``).

    Args:
        training (bool): Whether autograd records the call.
        batch (int): The batch size B.
        bases (int): The number of bases n.
        regions (int): The number of regions m.
        out_pixels (int): The output map's pixel count L = Ho * Wo.
        patch (int): A filter's size K = C_in * kh * kw.

    Returns:
        (bool): L <= MIX_SMALL_MAP_TRAIN * m * n (training) or MIX_SMALL_MAP_INFER * m * n (inference, B > 1), and
            n * L <= m * K / MIX_FILTERS_VS_RESPONSES.
    """
    small = MIX_SMALL_MAP_TRAIN if training else (MIX_SMALL_MAP_INFER if batch > 1 else 0)
    fits = MIX_FILTERS_VS_RESPONSES * bases * out_pixels <= regions * patch
    return out_pixels <= small * regions * bases and fits


def _region_mask(region: torch.Tensor, m: int, dtype: torch.dtype) -> torch.Tensor:
    """One-hot of the regions (B, L) -> (B, L, m) in ``dtype``, by comparison (``F.one_hot`` reads its range back)."""
    return (region.unsqueeze(2) == torch.arange(m, device=region.device)).to(dtype)


class _MixRegions(torch.autograd.Function):
    """``y = sum_n coef[b, r(p), n] * z[b, n, :, p] + bias`` with the paper's gradients.

    ``apply(z, coef, guide, bias)``: z (B, n, C_out, Ho, Wo), the n basis responses; coef (B, m, n); guide
    (B, m, Ho, Wo); bias (C_out,) or None. Returns (B, C_out, Ho, Wo) in z's layout (channels-last when z is).
    """

    @staticmethod
    def forward(ctx, z, coef, guide, bias):
        B, n, C_out, Ho, Wo = z.shape
        region = argmax_regions(guide).reshape(B, Ho * Wo)  # (B, L)
        picked = coef.gather(1, region.unsqueeze(2).expand(-1, -1, n))  # (B, L, n): coef[b, r(p), :]
        picked = picked.transpose(1, 2).reshape(B, n, 1, Ho, Wo)  # (B, n, 1, Ho, Wo)
        # (B, C_out, Ho, Wo); the bias folded into the first term: one pass over the output for n = 1
        if bias is None:
            out = z[:, 0] * picked[:, 0]
        else:
            out = torch.addcmul(bias.view(1, C_out, 1, 1), z[:, 0], picked[:, 0])
        for i in range(1, n):
            out.addcmul_(z[:, i], picked[:, i])
        ctx.save_for_backward(z, coef, guide, region, picked)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        z, coef, guide, region, picked = ctx.saved_tensors
        need_z, need_coef, need_guide, need_bias = ctx.needs_input_grad
        B, n, C_out, Ho, Wo = z.shape
        m = coef.shape[1]
        go = grad_out.unsqueeze(1)  # (B, 1, C_out, Ho, Wo)
        grad_z = grad_coef = grad_guide = grad_bias = None
        if need_z:
            grad_z = go * picked  # (B, n, C_out, Ho, Wo): only the selected region's coefficients
        if need_coef or need_guide:
            dtype = grad_dtype(z.dtype)
            # u_n(p) = <dL/dY(p), Z_n(p)>, summed in at least float32
            u = torch.stack([torch.sum(grad_out * z[:, i], 1, dtype=dtype) for i in range(n)], 1)  # (B, n, Ho, Wo)
            u = u.view(B, n, Ho * Wo)  # (B, n, L)
            if need_coef:  # sum of u over each region's pixels: mask^T u^T
                mask = _region_mask(region, m, dtype)  # (B, L, m)
                grad_coef = torch.bmm(mask.transpose(1, 2), u.transpose(1, 2)).to(coef.dtype)  # (B, m, n)
            if need_guide:  # g_j(p) = sum_n coef[b, j, n] * u_n(p), every region j
                g = torch.bmm(coef.to(dtype), u).view(B, m, Ho, Wo)  # (B, m, Ho, Wo)
                grad_guide = guide_grad(guide, g)
        if need_bias:
            grad_bias = grad_out.sum((0, 2, 3))  # (C_out,)
        return grad_z, grad_coef, grad_guide, grad_bias


def mix_conv(x, filters, guide, bias, geometry):
    """Region-aware convolution of mixed filters as one conv with the n bases, then a per-pixel mix.

    Args:
        x (torch.Tensor): (B, C_in, H, W), best channels-last on CPU.
        filters (MixedFilters): The official generator's description: coef (B, m, n), bases (n, C_out, C_in, k, k).
        guide (torch.Tensor): (B, m, Ho, Wo).
        bias (torch.Tensor, optional): (C_out,).
        geometry (Geometry): The checked geometry.

    Returns:
        (torch.Tensor): (B, C_out, Ho, Wo), in the conv's output layout (channels-last for a channels-last input).
    """
    coef, bases = filters.coef, filters.bases
    (B, m, n), (_, C_out, C_in, kh, kw), (Ho, Wo) = coef.shape, bases.shape, geometry.out_hw
    conf = (geometry.stride, geometry.padding, geometry.dilation)
    if records_grad(x, guide, bias, *filters.tensors) and small_map(True, B, n, m, Ho * Wo, C_in * kh * kw):
        # the patches reordered to the bases' (kh, kw, C_in) order, (B*L, K): on these maps they are usually smaller
        # than the bases, which are read in place (a view when stored channels-last, as the official generator keeps
        # them)
        patches = F.unfold(x, (kh, kw), geometry.dilation, geometry.padding, geometry.stride)  # (B, C_in*kh*kw, L)
        rows = patches.view(B, C_in, kh * kw, Ho * Wo).permute(0, 3, 2, 1).reshape(B * Ho * Wo, -1)  # (B*L, K)
        z = torch.mm(rows, bases.permute(0, 1, 3, 4, 2).reshape(n * C_out, -1).t())  # (B*L, n*C_out)
        z = z.view(B, Ho, Wo, n, C_out).permute(0, 3, 4, 1, 2)  # (B, n, C_out, Ho, Wo), a view
    else:
        z = F.conv2d(x, bases.flatten(0, 1), None, *conf).unflatten(1, (n, C_out))  # (B, n, C_out, Ho, Wo), a view
    return _MixRegions.apply(z, coef, guide, bias)
