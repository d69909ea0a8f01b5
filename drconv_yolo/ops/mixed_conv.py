"""The "conv then mix" implementation, for the official generator's filters with few bases.

With ``MixedFilters`` region j's filter is ``W_j = sum_n coef[b, j, n] * bases[n]``, so by linearity the output at
pixel p of region r(p) = argmax_j guide[b, j, p] is::

    y[b, :, p] = sum_n coef[b, r(p), n] * Z[b, n, :, p] + bias,    Z = conv2d(x, bases as (n*C_out, C_in, k, k))

that is one standard convolution with n*C_out output channels (the framework's own kernel: oneDNN on CPU, cuDNN on
CUDA) and a per-pixel mix: n times the MACs of one conv, so it is the cheapest path when n is small, or when the
map is so small that mixing every sample's filters would cost more than the convolution (``choose_impl``).

Backward gives exactly the paper's gradients (those of the reference, which materialises the filters):

    dL/dZ_n(p)        = coef[b, r(p), n] * dL/dY(p)        (conv2d's own backward then gives dL/dx and dL/dbases)
    u_n(p)            = sum_o dL/dY[o, p] * Z_n[o, p]
    dL/dcoef[b, j, n] = sum over the pixels p of region j of u_n(p)
    g_j(p)            = <dL/dY(p), (W_j conv X)(p)> = sum_n coef[b, j, n] * u_n(p)   for every region j

and the guide gets the softmax surrogate of g (``common.guide_grad``). No tensor of m times the output's size exists,
forward or backward; training saves Z, n times the output.
The mix is one autograd Function (region selection and surrogate); the convolution is differentiated by autograd.
Batch-level ops only: no per-sample loop and no host synchronisation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .common import grad_dtype, guide_grad
from .fast import argmax_regions


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
    n, C_out = bases.shape[:2]
    z = F.conv2d(x, bases.flatten(0, 1), None, geometry.stride, geometry.padding, geometry.dilation)
    z = z.unflatten(1, (n, C_out))  # (B, n, C_out, Ho, Wo), a view
    return _MixRegions.apply(z, coef, guide, bias)
