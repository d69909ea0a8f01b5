"""The grouped implementation: batch-level ops only, no per-sample Python loop and no host synchronisation.

The mixture-of-experts pattern with (sample, region) pairs as the experts and output pixels as the tokens: all B*L
output pixels are sorted once by the key ``sample * m + region`` (one stable sort), their k x k patches gathered in
that order, and one grouped matrix multiply over the G = B*m groups applies every group's filter (mixed for all groups
in one matmul) to its rows only, the MACs of one standard conv; a gather puts the result back in pixel order.

Backward recomputes the patches (nothing of size m x activation is saved) in blocks of rows taken at the same
positions of every sample's sorted rows, whose group boundaries are computed on the device: per block, the guide term
g_j for all m regions is one bmm with each sample's m filters (m x the MACs, inherent to the paper's gradient), the
filter gradient one grouped product per group and the input gradient one grouped product with the filters
transposed, scatter-added onto a zero-padded image (col2im).

The group sizes are data (they stay on the device): the products are ``segment_mm.segment_mm`` and
``segment_mm_tn``, which take them as int32 cumulative ends: ``torch._grouped_mm`` where the device and dtype have it,
Triton kernels elsewhere on CUDA, else one mm per group (float64, or no Triton: the only place that reads the ends
on the host). The surrounding code is the same, so the tests check this path on CPU in float64 against
the reference, through the per-group loop and through the Triton kernels in Triton's interpreter.
"""

from __future__ import annotations

import functools

import torch
from torch.autograd.function import once_differentiable

from .common import argmax_regions, grad_dtype, guide_grad, records_grad, sort_keys
from .patches import PatchGather
from .segment_mm import segment_mm, segment_mm_tn
from .workspace import scratch

# Backward works on max(L/m, GUIDE_BLOCK_ROWS / B) rows of every sample at a time: its guide term's block, the only
# m-times tensor (B, rows, m, C_out), is then at most the output's size for large maps, and the patch rows (B, rows, K)
# at most 1/m of all of them, while small maps still take one block of efficient products.
GUIDE_BLOCK_ROWS = 2048


class _Plan:
    """All B*L output pixels sorted by (sample, region), on the device, without reading anything back.

    ``order`` (N,) lists the flat pixel indices ``b * L + p`` group by group (pixel order within a group: a stable
    sort), so sample b's pixels are rows [b*L, (b+1)*L) of every sorted tensor; ``ends`` (G,) int32 are the groups'
    cumulative row counts, group ``b * m + j`` being region j of sample b.
    """

    def __init__(self, guide: torch.Tensor):
        B, m, Ho, Wo = guide.shape
        region = argmax_regions(guide).reshape(B, Ho * Wo)  # (B, L)
        key = sort_keys(region, m)  # (N,)
        sorted_key, self.order = torch.sort(key, stable=True)  # (N,) each
        # a group's end is the number of keys up to its own: one search of the sorted keys, no count and cumsum
        groups = _arange(B * m, key.device, key.dtype)  # (G,)
        self.ends = torch.searchsorted(sorted_key, groups, right=True, out_int32=True)  # (G,)
        # sorted.index_select(0, inverse) is back in pixel order (a gather: twice as fast as an index_copy_ scatter)
        positions = torch.arange(key.shape[0], device=key.device)  # (N,), not cached: N changes with every batch shape
        self.inverse = torch.empty_like(self.order).scatter_(0, self.order, positions)  # (N,)


@functools.lru_cache(maxsize=64)
def _arange(n: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``torch.arange(n)`` for the plan's group indices (B*m, in the sort keys' dtype), cached. Only ever read."""
    return torch.arange(n, device=device, dtype=dtype)


def _block_ends(starts: torch.Tensor, ends: torch.Tensor, first: torch.Tensor, size: int) -> torch.Tensor:
    """Cumulative group ends (G,) int32 of a block made of rows [first_g, first_g + size) of each group's sample.

    Args:
        starts (torch.Tensor): Every group's first row in the sorted order (G,) long.
        ends (torch.Tensor): Every group's end row (G,) long.
        first (torch.Tensor): The block's first sorted row in each group's sample (G,) long.
        size (int): Rows per sample in the block.

    Returns:
        (torch.Tensor): The ends, computed on the device.
    """
    inside = (ends - first).clamp(0, size) - (starts - first).clamp(0, size)  # (G,) rows of each group in the block
    return inside.cumsum(0).to(torch.int32)


class _Blocks:
    """The op in blocks of ``step`` sorted rows of every sample (the same positions in each), so that no tensor of
    (N, K) or (N, m*C_out) exists. Forward (while training, where memory matters): per block one gather of the patch
    rows, one grouped product, one scatter to pixel order. Backward: per block the patch rows are gathered again, the
    guide term takes one batched matmul with every sample's m filters, the filter gradient one grouped product
    (folded into the description's gradients at once) and the input gradient one grouped product scatter-added onto
    a zero-padded image.

    Args:
        x (torch.Tensor): The input (B, C_in, H, W).
        guide (torch.Tensor): The guide (B, m, Ho, Wo).
        order (torch.Tensor): The plan's sorted pixels (N,).
        ends (torch.Tensor): The plan's group ends (G,) int32.
        filters (ExplicitFilters | MixedFilters): The filter description.
        geometry (Geometry): The checked geometry.
    """

    def __init__(self, x, guide, order, ends, filters, geometry):
        B, m = guide.shape[:2]
        self.filters = filters
        self.B, self.m, self.L = B, m, order.shape[0] // B
        self.order = order.view(B, self.L)
        self.w = filters.grouped()  # (G, C_out, K)
        self.patches = PatchGather(x, geometry)
        self.ends = ends.long()
        self.starts = self.ends - torch.diff(self.ends, prepend=self.ends.new_zeros(1))  # (G,)
        groups = torch.arange(B * m, device=x.device)
        self.sample_first = groups.div(m, rounding_mode="floor") * self.L  # (G,) first sorted row of g's sample
        self.step = min(self.L, max(-(-self.L // m), -(-GUIDE_BLOCK_ROWS // B)))

    def _block(self, i):
        """The block at sorted position i of every sample: rows per sample n, pixels (B*n,), group ends (G,)."""
        n = min(self.step, self.L - i)
        pixels = self.order[:, i : i + n].flatten()  # (B*n,) flat pixel indices, in block order
        return n, pixels, _block_ends(self.starts, self.ends, self.sample_first + i, n)

    def forward(self, out_rows, bias):
        """The output rows (N, C_out), pixel order, written block by block."""
        w_t = self.w.transpose(1, 2)  # (G, K, C_out), a view
        for i in range(0, self.L, self.step):
            _, pixels, block_ends = self._block(i)
            out = segment_mm(self.patches.rows(self.patches.index(pixels)), w_t, block_ends)  # (B*n, C_out)
            out_rows.index_copy_(0, pixels, out if bias is None else out.add_(bias))

    def backward(self, go, need_guide, need_filters, need_x):
        """Returns g (B, L, m) sorted, the filter description's gradients (a tuple) and the padded input's gradient
        (B*Hp*Wp, C_in); each None unless needed. ``go`` is dL/dY (N, C_out) in pixel order.

        Each block's (G, C_out, K) filter gradient is folded into the description's gradients at once (for mixed
        filters, into the small coefficient and basis gradients), so at most one such tensor exists."""
        B, L, m, step = self.B, self.L, self.m, self.step
        G, C_out, K = self.w.shape
        w_all = self.w.view(B, m * C_out, K).transpose(1, 2)  # (B, K, m*C_out), a view
        g = go.new_empty(B, L, m, dtype=grad_dtype(go.dtype)) if need_guide else None  # (B, L, m)
        grads = None
        grad_padded = self.patches.new_zeros() if need_x else None  # (B*Hp*Wp, C_in)
        for i in range(0, L, step):
            n, pixels, block_ends = self._block(i)
            go_block = go.index_select(0, pixels)  # (B*n, C_out)
            if need_guide or need_filters:
                rows = self.patches.rows(self.patches.index(pixels))  # (B*n, K), recomputed
                if need_guide:
                    part = torch.matmul(rows.view(B, n, K), w_all).view(B, n, m, C_out)  # (B, n, m, C_out)
                    torch.sum(part.mul_(go_block.view(B, n, 1, C_out)), 3, dtype=g.dtype, out=g[:, i : i + n])
                    del part
                if need_filters:
                    part = self.filters.grouped_grads(segment_mm_tn(go_block, rows, block_ends))
                    grads = part if grads is None else tuple(a.add_(b) for a, b in zip(grads, part))
                    del part
                del rows
            if need_x:
                self.patches.add_rows(grad_padded, pixels, segment_mm(go_block, self.w, block_ends))
        return g, grads, grad_padded


def _infer(x, filters, guide, bias, geometry):
    """The forward of a call autograd does not record, in one go: fewer, larger ops than the training forward's
    blocks, the temporaries in scratch memory (nothing of them is saved)."""
    B, C_out, (Ho, Wo) = x.shape[0], filters.out_channels, geometry.out_hw
    plan = _Plan(guide)
    out = torch.empty((B, C_out, Ho, Wo), dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
    patches = PatchGather(x, geometry, reuse=True)
    rows = patches.rows(patches.index(plan.order))  # (N, K), sorted
    w_t = filters.grouped(scratch("filters", filters.grouped_shape, x.dtype, x.device)).transpose(1, 2)
    out_sorted = segment_mm(rows, w_t, plan.ends)  # (N, C_out)
    if bias is not None:
        out_sorted.add_(bias)
    torch.index_select(out_sorted, 0, plan.inverse, out=out.permute(0, 2, 3, 1).view(-1, C_out))  # pixel order
    return out


class _RegionConvGrouped(torch.autograd.Function):
    """The grouped op as an autograd Function, for the calls autograd records: ``apply(geometry, kind, x, guide, bias,
    *tensors)``, as the fast one's. The forward goes in blocks: the (N, K) patch rows would be the step's largest
    tensor."""

    @staticmethod
    def forward(ctx, geometry, kind, x, guide, bias, *tensors):
        filters = kind(*tensors)
        B, C_out, (Ho, Wo) = x.shape[0], filters.out_channels, geometry.out_hw
        plan = _Plan(guide)
        out = torch.empty((B, C_out, Ho, Wo), dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
        out_rows = out.permute(0, 2, 3, 1).view(-1, C_out)  # (N, C_out), pixel order
        _Blocks(x, guide, plan.order, plan.ends, filters, geometry).forward(out_rows, bias)
        ctx.save_for_backward(x, guide, plan.order, plan.inverse, plan.ends, *tensors)
        ctx.geometry, ctx.kind = geometry, kind
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, guide, order, inverse, ends, *tensors = ctx.saved_tensors
        geometry = ctx.geometry
        need_x, need_guide, need_bias = ctx.needs_input_grad[2:5]
        need_filters = any(ctx.needs_input_grad[5:])
        filters = ctx.kind(*tensors)
        B, C_out, N = x.shape[0], filters.out_channels, order.shape[0]
        go = grad_out.permute(0, 2, 3, 1).reshape(N, C_out)  # (N, C_out), pixel order
        blocks = _Blocks(x, guide, order, ends, filters, geometry)
        g, grad_filters, grad_padded = blocks.backward(go, need_guide, need_filters, need_x)
        grad_guide = grad_x = None
        if need_guide:
            m, (Ho, Wo) = guide.shape[1], geometry.out_hw
            g = g.view(N, m).index_select(0, inverse)  # (N, m), pixel order
            grad_guide = guide_grad(guide, g.view(B, Ho, Wo, m).permute(0, 3, 1, 2))
        if need_x:
            grad_x = blocks.patches.unpad(grad_padded)
        return (
            None,  # geometry
            None,  # kind
            grad_x,
            grad_guide,
            go.sum(0) if need_bias else None,
            *(grad_filters if need_filters else (None,) * len(tensors)),
        )


def grouped_conv(x, filters, guide, bias, geometry):
    """Region-aware convolution over all (sample, region) groups at once, with no host synchronisation.

    Args:
        x (torch.Tensor): (B, C_in, H, W).
        filters (ExplicitFilters | MixedFilters): The filter description.
        guide (torch.Tensor): (B, m, Ho, Wo).
        bias (torch.Tensor, optional): (C_out,).
        geometry (Geometry): The checked geometry, kernel and output size included.

    Returns:
        (torch.Tensor): (B, C_out, Ho, Wo), channels-last.
    """
    if not records_grad(x, guide, bias, *filters.tensors):  # nothing to record: no autograd node
        return _infer(x, filters, guide, bias, geometry)
    return _RegionConvGrouped.apply(geometry, type(filters), x, guide, bias, *filters.tensors)
