"""The fast implementation: one filter per output pixel, so the forward costs the MACs of one standard conv.

Each sample's patches are gathered sorted by region and every region's rows are multiplied by that region's filter
only (one bmm over the regions padded to the largest, or one mm per region when they are too unequal). Backward
recomputes the patches from the input (nothing of size m x activation is saved) and works one sample at a time.
The CPU path for batches: its per-sample buffers are reused, where the grouped path's batch-sized temporaries would be
fresh memory (page faults) on every call.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from .common import argmax_regions, guide_grad, records_grad, sort_keys
from .patches import SamplePatches
from .workspace import scratch

# The forward multiplies a sample's regions with one bmm, each region's rows padded to the largest region, when that
# pads by at most this fraction of the rows: a bmm over m blocks runs 15-35% faster than m separate mm's on CPU.
PAD_LIMIT = 0.3

# Backward's guide term is the only m-times tensor, (rows, m, C_out): it is taken max(L/m, GUIDE_BLOCK_ROWS) rows at
# a time, at most one sample's output size for large maps and still one efficient mm for small ones.
GUIDE_BLOCK_ROWS = 2048


class _RegionPlan:
    """Every sample's pixels sorted by region, computed for the whole batch at once from the guide logits.

    ``order[b]`` lists sample b's output pixels region by region (pixel order within a region), ``inverse[b]`` undoes
    it (``sorted.index_select(0, inverse[b])`` is back in pixel order) and ``counts[b][j]`` is region j's pixel count.

    The forward's row layout (``padded``): when ``padded[b]``, region j of sample b owns rows [j*c, j*c + counts[b][j])
    of an (m*c)-row buffer, c = max_j counts[b][j] (the other rows repeat pixel 0 and are never read back); else the
    rows are packed in ``order``. ``src[b]`` is the pixel of each row and ``pos[b]`` the row of each pixel.
    """

    def __init__(self, guide):
        B, m, Ho, Wo = guide.shape
        L, device = Ho * Wo, guide.device
        region = argmax_regions(guide).reshape(B, L)  # (B, L)
        regions = torch.arange(m, device=device)
        samples = torch.arange(B, device=device).view(B, 1)
        key = sort_keys(region, m)  # (B*L,), sample-major
        # one stable sort of the whole batch's keys (faster on CPU than a counting sort by nonzero over a one-hot)
        self.order = torch.sort(key, stable=True).indices.view(B, L) - samples * L  # (B, L)
        positions = torch.arange(L, device=device).expand(B, L)
        self.inverse = torch.empty_like(self.order).scatter_(1, self.order, positions)  # (B, L)
        counts = torch.bincount(key, minlength=B * m).view(B, m)  # (B, m)
        self.counts = counts.tolist()
        self.padded = [m * max(c) <= (1 + PAD_LIMIT) * L for c in self.counts]
        if not any(self.padded):
            self.src, self.pos, self.rows = self.order, self.inverse, [L] * B
            return
        # row of the i-th sorted pixel: its region's first row + its rank in the region
        starts = counts.cumsum(1) - counts  # (B, m), packed
        padded = torch.tensor(self.padded, device=device).view(B, 1)
        firsts = torch.where(padded, regions.view(1, m) * counts.amax(1, keepdim=True), starts)  # (B, m)
        region_sorted = region.gather(1, self.order)  # (B, L)
        row = positions + (firsts - starts).gather(1, region_sorted)  # (B, L)
        self.rows = [m * max(c) if p else L for c, p in zip(self.counts, self.padded)]
        self.src = self.order.new_zeros(B, max(self.rows)).scatter_(1, row, self.order)  # (B, R)
        self.pos = torch.empty_like(self.order).scatter_(1, self.order, row)  # (B, L)

    def split(self, b, *tensors):
        """Zip of (region j, then each tensor's rows of region j) over sample b's non-empty regions (packed rows)."""
        counts = self.counts[b]
        parts = [range(len(counts))] + [t.split(counts) for t in tensors]
        return [p for p in zip(*parts) if counts[p[0]]]


class _GuideTerm:
    """g_j(p) = sum_o dL/dY[o, p] * (W_j conv X)[o, p] for every region j, sample by sample, and the guide gradient."""

    def __init__(self, x, plan, m, C_out):
        B, L = plan.order.shape
        self.plan, self.step = plan, min(L, max(-(-L // m), GUIDE_BLOCK_ROWS))
        self.responses = x.new_empty(self.step, m * C_out)  # (step, m*C_out), one block of the m responses
        self.g_sorted = x.new_empty(L, m)  # (L, m), one sample in region order
        self.g = x.new_empty(B, L, m)  # (B, L, m), pixel order

    def add(self, b, rows, w, go_sorted):
        """Sample b's g from its patch rows (L, K), filters w (m, C_out, K) and dL/dY rows (L, C_out), region order."""
        m, C_out = w.shape[:2]
        L, step = rows.shape[0], self.step
        w_all = w.flatten(0, 1).t()  # (K, m*C_out)
        for i in range(0, L, step):
            part = torch.mm(rows[i : i + step], w_all, out=self.responses[: min(step, L - i)])
            part = part.view(-1, m, C_out).mul_(go_sorted[i : i + step, None])  # (rows, m, C_out)
            torch.sum(part, 2, out=self.g_sorted[i : i + step])
        torch.index_select(self.g_sorted, 0, self.plan.inverse[b], out=self.g[b])

    def grad(self, guide):
        """dL/dguide (B, m, Ho, Wo) by the softmax surrogate."""
        B, m, Ho, Wo = guide.shape
        return guide_grad(guide, self.g.view(B, Ho, Wo, m).permute(0, 3, 1, 2))


class _InputGrad:
    """dL/dX, channels-last; each sample is accumulated in a small zero-padded buffer, then copied in once."""

    def __init__(self, x, geometry, plan):
        C_in, H, W = x.shape[1:]
        (ph, pw), self.geometry, self.plan = geometry.padding, geometry, plan
        self.grad = torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
        self.padded = x.new_empty(H + 2 * ph, W + 2 * pw, C_in)  # (Hp, Wp, C_in)
        self.rows = self.patches = None  # reused from sample to sample

    def add(self, b, w, go_sorted):
        """Sample b's input gradient from its filters w (m, C_out, K) and dL/dY rows (L, C_out) in region order."""
        L, K = go_sorted.shape[0], w.shape[2]
        self.rows = go_sorted.new_empty(L, K) if self.rows is None else self.rows  # (L, K), region order
        for j, go_j, rows_j in self.plan.split(b, go_sorted, self.rows):
            torch.mm(go_j, w[j], out=rows_j)
        # back to pixel order, then col2im as kh*kw strided adds (faster than a scatter-add)
        self.patches = torch.index_select(self.rows, 0, self.plan.inverse[b], out=self.patches)  # (L, K)
        (Ho, Wo), (kh, kw), (ph, pw) = self.geometry.out_hw, self.geometry.kernel, self.geometry.padding
        H, W = self.grad.shape[2:]
        self.padded.zero_()
        cols = self.patches.view(Ho, Wo, kh, kw, -1)  # (Ho, Wo, kh, kw, C_in)
        _col2im_add(self.padded, cols, self.geometry.stride, self.geometry.dilation)
        self.grad[b].permute(1, 2, 0).copy_(self.padded[ph : ph + H, pw : pw + W])  # drop the padding


def _col2im_add(dst, cols, stride, dilation):
    """Add patch gradients back onto the padded image. dst (Hp, Wp, C), cols (Ho, Wo, kh, kw, C)."""
    Ho, Wo, kh, kw, _ = cols.shape
    (sh, sw), (dh, dw) = stride, dilation
    for i in range(kh):
        for j in range(kw):
            dst[i * dh : i * dh + sh * (Ho - 1) + 1 : sh, j * dw : j * dw + sw * (Wo - 1) + 1 : sw] += cols[:, :, i, j]


def _filter_grad(gw, plan, b, go_sorted, rows):
    """Sample b's filter gradient into gw (m, C_out, K) from dL/dY rows (L, C_out) and patch rows (L, K), region
    order; an empty region gets a zero gradient."""
    for j, n in enumerate(plan.counts[b]):
        if not n:
            gw[j].zero_()
    for j, go_j, rows_j in plan.split(b, go_sorted, rows):
        torch.mm(go_j.t(), rows_j, out=gw[j])


def _forward(x, filters, guide, bias, geometry, training):
    """The fast op's forward: (output, plan). ``training`` (whether autograd records the call): if not, the buffers
    are scratch memory reused from call to call."""
    B, C_out, (Ho, Wo) = x.shape[0], filters.out_channels, geometry.out_hw
    L, m = Ho * Wo, guide.shape[1]

    def buffer(slot, *shape):  # reused by every sample, and from call to call when nothing is recorded
        return x.new_empty(shape) if training else scratch(slot, shape, x.dtype, x.device)

    # the filters' (m, C_out, K) layout, multiplied transposed: no per-call transpose of the filters (or bases)
    mixed = None if training else scratch("fast_filters", (m, C_out * filters.grouped_shape[2]), x.dtype, x.device)
    sample = filters.per_sample(False, mixed)  # b -> (m, C_out, K)
    plan = _RegionPlan(guide)
    patches = SamplePatches(x, geometry, plan.src, plan.pos)
    # channels-last output (not a view: callers may modify it in place), written through a (B, L, C_out) view
    out = torch.empty((B, C_out, Ho, Wo), dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
    out_rows = out.permute(0, 2, 3, 1).view(B, L, C_out)
    R = max(plan.rows)
    rows, out_buffer = buffer("fast_rows", R, patches.kk * patches.C), buffer("fast_out", R, C_out)
    for b in range(B):
        w = sample(b).transpose(1, 2)  # (m, K, C_out), a view
        n = plan.rows[b]
        rows_b, out_b = patches.rows(b, n, rows), out_buffer[:n]  # (n, K), (n, C_out)
        if plan.padded[b]:
            torch.bmm(rows_b.view(m, n // m, -1), w, out=out_b.view(m, n // m, C_out))
        else:
            for j, rows_j, out_j in plan.split(b, rows_b, out_b):
                torch.mm(rows_j, w[j], out=out_j)
        if bias is not None:  # (addmm with out= is many times slower than mm on CPU)
            out_b.add_(bias)
        torch.index_select(out_b, 0, plan.pos[b], out=out_rows[b])  # a gather: faster than index_copy_
    return out, plan


class _RegionConvFast(torch.autograd.Function):
    """The fast op as an autograd Function, for the calls autograd records.

    ``apply(geometry, kind, x, guide, bias, *tensors)``: the filters are ``kind(*tensors)`` (a filter description
    class and its tensors, passed as direct arguments so autograd gives them gradients); bias may be None.
    """

    @staticmethod
    def forward(ctx, geometry, kind, x, guide, bias, *tensors):
        out, plan = _forward(x, kind(*tensors), guide, bias, geometry, training=True)
        ctx.save_for_backward(x, guide, *tensors)
        ctx.plan, ctx.geometry, ctx.kind = plan, geometry, kind
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, guide, *tensors = ctx.saved_tensors
        plan, geometry = ctx.plan, ctx.geometry
        need_x, need_guide, need_bias = ctx.needs_input_grad[2:5]
        need_filters = any(ctx.needs_input_grad[5:])
        filters = ctx.kind(*tensors)
        sample = filters.per_sample(transposed=False)  # b -> (m, C_out, K)
        (B, L), C_out = plan.order.shape, filters.out_channels
        # recomputed (nothing m-times was kept), packed in region order
        patches = SamplePatches(x, geometry, plan.order, plan.inverse)
        go = grad_out.permute(0, 2, 3, 1).reshape(B, L, C_out)  # (B, L, C_out)
        if need_filters:
            filters.start_grads()
        guide_term = _GuideTerm(x, plan, guide.shape[1], C_out) if need_guide else None
        input_grad = _InputGrad(x, geometry, plan) if need_x else None
        rows = go_sorted = None  # buffers reused from sample to sample
        for b in range(B):
            w = sample(b)  # (m, C_out, K)
            rows = patches.rows(b, L, rows)  # (L, K) by region
            go_sorted = torch.index_select(go[b], 0, plan.order[b], out=go_sorted)  # (L, C_out)
            if guide_term is not None:
                guide_term.add(b, rows, w, go_sorted)
            if need_filters:
                _filter_grad(filters.grad_buffer(b), plan, b, go_sorted, rows)
                filters.reduce_grad(b)
            if input_grad is not None:
                input_grad.add(b, w, go_sorted)
        return (
            None,  # geometry
            None,  # kind
            input_grad.grad if need_x else None,
            guide_term.grad(guide) if need_guide else None,
            go.sum((0, 1)) if need_bias else None,
            *(filters.grads() if need_filters else (None,) * len(tensors)),
        )


def fast_conv(x, filters, guide, bias, geometry):
    """Region-aware convolution, one filter per output pixel.

    Args:
        x (torch.Tensor): (B, C_in, H, W), best channels-last (read without a copy).
        filters (ExplicitFilters | MixedFilters): The filter description.
        guide (torch.Tensor): (B, m, Ho, Wo).
        bias (torch.Tensor, optional): (C_out,).
        geometry (Geometry): The checked geometry, kernel and output size included.

    Returns:
        (torch.Tensor): (B, C_out, Ho, Wo), channels-last.
    """
    if not records_grad(x, guide, bias, *filters.tensors):  # nothing to record: no autograd node, scratch buffers
        return _forward(x, filters, guide, bias, geometry, training=False)[0]
    return _RegionConvFast.apply(geometry, type(filters), x, guide, bias, *filters.tensors)
