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

from functools import partial
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

__all__ = ["region_aware_conv2d", "region_aware_conv2d_mixed", "IMPLEMENTATIONS", "output_size"]

IntOrPair = Union[int, Sequence[int]]
IMPLEMENTATIONS = ("auto", "fast", "reference", "onnx")


def _pair(value: IntOrPair, name: str) -> Tuple[int, int]:
    """Return ``value`` as a pair of ints, checking it."""
    pair = (value, value) if isinstance(value, int) else tuple(int(v) for v in value)
    if len(pair) != 2:
        raise ValueError(f"region_aware_conv2d: {name} must be an int or a pair of ints, got {value!r}")
    return pair


def output_size(size: int, k: int, stride: int, padding: int, dilation: int) -> int:
    """Spatial output size of a convolution along one axis (same formula as ``nn.Conv2d``)."""
    return (size + 2 * padding - dilation * (k - 1) - 1) // stride + 1


def _check_args(input, weight, guide, stride, padding, dilation):
    """Validate ranks, shapes and hyper-parameters; return (stride, padding, dilation, (Ho, Wo))."""
    stride, padding, dilation = _pair(stride, "stride"), _pair(padding, "padding"), _pair(dilation, "dilation")
    if min(stride) < 1 or min(dilation) < 1 or min(padding) < 0:
        raise ValueError(
            f"region_aware_conv2d: need stride >= 1, dilation >= 1, padding >= 0; got stride={stride}, "
            f"padding={padding}, dilation={dilation}"
        )
    if is_tracing():  # shapes are symbolic while tracing: checked in eager mode only
        return stride, padding, dilation, None
    if input.dim() != 4:
        raise ValueError(f"region_aware_conv2d: input must be (B, C_in, H, W), got shape {tuple(input.shape)}")
    if weight.dim() != 6:
        raise ValueError(
            f"region_aware_conv2d: weight must be (B, m, C_out, C_in, k, k), got shape {tuple(weight.shape)}"
        )
    if guide.dim() != 4:
        raise ValueError(f"region_aware_conv2d: guide must be (B, m, H_out, W_out), got shape {tuple(guide.shape)}")
    B, C, H, W = input.shape
    Bw, m, _, Cw, kh, kw = weight.shape
    if Bw != B or guide.shape[0] != B:
        raise ValueError(f"region_aware_conv2d: batch sizes differ: input {B}, weight {Bw}, guide {guide.shape[0]}")
    if Cw != C:
        raise ValueError(f"region_aware_conv2d: weight has C_in={Cw} but input has {C} channels")
    if guide.shape[1] != m:
        raise ValueError(f"region_aware_conv2d: weight has m={m} regions but guide has {guide.shape[1]} channels")
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"region_aware_conv2d: kernel size must be odd, got {kh}x{kw}")
    Ho = output_size(H, kh, stride[0], padding[0], dilation[0])
    Wo = output_size(W, kw, stride[1], padding[1], dilation[1])
    if Ho < 1 or Wo < 1:
        raise ValueError(f"region_aware_conv2d: input {H}x{W} is too small for a {kh}x{kw} kernel with these settings")
    if tuple(guide.shape[2:]) != (Ho, Wo):
        raise ValueError(
            f"region_aware_conv2d: guide is {tuple(guide.shape[2:])} but the output is {(Ho, Wo)}; the guide conv must "
            "use the main conv's kernel size, stride, padding and dilation"
        )
    return stride, padding, dilation, (Ho, Wo)


def _guide_grad(guide: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """The paper's surrogate: softmax Jacobian applied to g, in float32 or wider. guide, g: (B, m, Ho, Wo)."""
    dtype = torch.promote_types(guide.dtype, torch.float32)
    s = torch.softmax(guide.to(dtype), dim=1)  # (B, m, Ho, Wo)
    g = g.to(dtype)
    return (s * (g - (s * g).sum(1, keepdim=True))).to(guide.dtype)


# ----------------------------------------------------------------------------------------------------------------
# reference: all m responses, then select (the definition)
# ----------------------------------------------------------------------------------------------------------------
class _SelectRegion(torch.autograd.Function):
    """Pick, at each pixel, the response of the argmax region; backward is the softmax surrogate."""

    @staticmethod
    def forward(ctx, responses, guide):  # responses (B, m, C_out, Ho, Wo), guide (B, m, Ho, Wo)
        mask = F.one_hot(guide.argmax(1), guide.shape[1]).permute(0, 3, 1, 2).unsqueeze(2).to(responses.dtype)
        ctx.save_for_backward(responses, guide, mask)
        return (responses * mask).sum(1)  # (B, C_out, Ho, Wo)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        responses, guide, mask = ctx.saved_tensors
        grad_responses = grad_out.unsqueeze(1) * mask  # only the selected region
        dtype = torch.promote_types(responses.dtype, torch.float32)
        g = (grad_out.unsqueeze(1).to(dtype) * responses.to(dtype)).sum(2)  # (B, m, Ho, Wo)
        return grad_responses, _guide_grad(guide, g)


def _reference(x, weight, guide, stride, padding, dilation):
    B, m, C_out, C_in, kh, kw = weight.shape
    responses = torch.stack(
        [
            F.conv2d(x[b : b + 1], weight[b].reshape(m * C_out, C_in, kh, kw), None, stride, padding, dilation)[0]
            for b in range(B)
        ]
    )  # (B, m*C_out, Ho, Wo)
    responses = responses.unflatten(1, (m, C_out))  # (B, m, C_out, Ho, Wo)
    return _SelectRegion.apply(responses, guide)


# ----------------------------------------------------------------------------------------------------------------
# fast: one filter per pixel, patches gathered in region order
# ----------------------------------------------------------------------------------------------------------------
# The forward multiplies a sample's regions with one bmm, each region's rows padded to the largest region, when that
# pads by at most this fraction of the rows: a bmm over m blocks runs 15-35% faster than m separate mm's on CPU.
PAD_LIMIT = 0.3


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
        # one nonzero over a (B, m, L) one-hot lists (b, j, pixel) in order: a counting sort, cheaper than argsort
        self.order = (region.unsqueeze(1) == regions.view(1, m, 1)).nonzero()[:, 2].view(B, L)  # (B, L)
        positions = torch.arange(L, device=device).expand(B, L)
        self.inverse = torch.empty_like(self.order).scatter_(1, self.order, positions)  # (B, L)
        samples = torch.arange(B, device=device).view(B, 1)
        counts = torch.bincount((region + samples * m).flatten(), minlength=B * m).view(B, m)  # (B, m)
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


class _Patches:
    """Gathers one sample's k x k patches as rows (n, kh*kw*C) of channels-last pixels: row i is the patch of output
    pixel ``src[b, i]``, and output pixel p's patch is row ``pos[b, p]``.

    Reads straight from the input (free when it is channels-last, as DRConv2d passes it); taps that fall into the
    zero padding read a clamped pixel and are zeroed afterwards (only border pixels have such taps).
    """

    def __init__(self, x, kernel, stride, padding, dilation, out_hw, src, pos):
        (H, W), (Ho, Wo) = x.shape[2:], out_hw
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
        ar = partial(torch.arange, device=x.device)
        h = ar(Ho).view(Ho, 1, 1, 1) * sh - ph + ar(kh).view(1, 1, kh, 1) * dh  # (Ho, 1, kh, 1)
        w = ar(Wo).view(1, Wo, 1, 1) * sw - pw + ar(kw).view(1, 1, 1, kw) * dw  # (1, Wo, 1, kw)
        self.taps = (h.clamp(0, H - 1) * W + w.clamp(0, W - 1)).view(Ho * Wo, kh * kw)  # (L, kh*kw)
        self.pixels = x.permute(0, 2, 3, 1).reshape(x.shape[0], H * W, x.shape[1])  # (B, H*W, C)
        self.src, self.kk, self.C = src, kh * kw, x.shape[1]
        # the (pixel, tap) pairs in the padding, as positions in each sample's rows: (B, n_outside)
        outside = ((h < 0) | (h >= H) | (w < 0) | (w >= W)).view(Ho * Wo, kh * kw).nonzero()  # (n_outside, 2)
        self.zeros = pos[:, outside[:, 0]] * self.kk + outside[:, 1] if len(outside) else None

    def rows(self, b, n, buffer=None):
        """The first n rows of sample b's patches (pixel ``src[b, i]`` in row i): (n, kh*kw*C), in ``buffer``."""
        out = None if buffer is None else buffer.view(-1)[: n * self.kk * self.C].view(n * self.kk, self.C)
        taps = self.taps.index_select(0, self.src[b, :n]).flatten()  # (n*kh*kw,)
        rows = torch.index_select(self.pixels[b], 0, taps, out=out)
        if self.zeros is not None:
            rows.index_fill_(0, self.zeros[b], 0)
        return rows.view(n, -1)


def argmax_regions(guide):
    """``guide.argmax(1)`` for (B, m, Ho, Wo); ties go to the lowest index, as ``torch.argmax``.

    A channels-last guide (what the guide conv returns for a channels-last input) reduces over contiguous memory; any
    other layout takes m - 1 elementwise passes, as a strided argmax is slow on CPU.
    """
    if guide.is_contiguous(memory_format=torch.channels_last):
        return guide.argmax(1)
    best, region = guide[:, 0], torch.zeros_like(guide[:, 0], dtype=torch.long)
    for j in range(1, guide.shape[1]):
        better = guide[:, j] > best
        best = torch.where(better, guide[:, j], best)
        region = region.masked_fill(better, j)
    return region  # (B, Ho, Wo)


class _Filters:
    """Per-sample filters for the fast path, contiguous (m, C_out, K) with K ordered (kh, kw, C_in), or (m, K, C_out)
    with ``transposed`` (what the forward's matmuls read fastest), and their gradients.

    Either explicit filters ``weight`` (B, m, C_out, C_in, k, k), or the official generator's factorisation
    ``weight[b, j] = sum_n coef[b, j, n] * bases[n]`` with coef (B, m, n) and bases (n, C_out, C_in, k, k), mixed one
    sample at a time into a reused buffer so the (B, m, C_out, C_in, k, k) tensor (and its gradient) never exists.
    """

    def __init__(self, weight, coef, bases, transposed=False):
        self.mixed, self.transposed = weight is None, transposed
        order = (0, 3, 4, 2, 1) if transposed else (0, 1, 3, 4, 2)  # (n, K, C_out) or (n, C_out, K), K = (kh, kw, C_in)
        if self.mixed:
            n, self.C_out = bases.shape[:2]
            self.coef = coef  # (B, m, n)
            self.bases = bases.permute(order).reshape(n, -1)  # (n, C_out*K); free if stored channels-last, untransposed
            self.buffer = coef.new_empty(coef.shape[1], self.bases.shape[1])  # (m, C_out*K)
        else:
            B, m, self.C_out = weight.shape[:3]
            w = weight.permute((0, 1, 4, 5, 3, 2) if transposed else (0, 1, 2, 4, 5, 3)).contiguous()
            self.w = w.view(B, m, -1, self.C_out) if transposed else w.view(B, m, self.C_out, -1)

    def __call__(self, b):
        """Filters of sample b: (m, C_out, K), or (m, K, C_out) when transposed."""
        if not self.mixed:
            return self.w[b]
        torch.mm(self.coef[b], self.bases, out=self.buffer)
        shape = (-1, self.C_out) if self.transposed else (self.C_out, -1)
        return self.buffer.view(self.buffer.shape[0], *shape)

    def grad_buffers(self, need):
        """Allocate the gradient outputs; returns a function giving sample b's (m, C_out, K) gradient buffer."""
        if not need:
            return None
        if self.mixed:
            self.grad_coef = torch.empty_like(self.coef)  # (B, m, n)
            self.grad_bases = torch.zeros_like(self.bases)  # (n, C_out*K)
            self.grad_buffer = torch.empty_like(self.buffer).view(self.buffer.shape[0], self.C_out, -1)
            return lambda b: self.grad_buffer
        self.grad_w = torch.empty_like(self.w)  # (B, m, C_out, K)
        return lambda b: self.grad_w[b]

    def reduce_grad(self, b):
        """Fold sample b's filter gradient into the coefficient and basis gradients (mixed filters only)."""
        if self.mixed:
            gw = self.grad_buffer.view(self.grad_buffer.shape[0], -1)  # (m, C_out*K)
            torch.mm(gw, self.bases.t(), out=self.grad_coef[b])
            self.grad_bases.addmm_(self.coef[b].t(), gw)

    def grads(self, weight_shape, bases_shape):
        """(grad_weight, grad_coef, grad_bases) in the caller's layouts."""
        if self.mixed:
            n, C_out, C_in, kh, kw = bases_shape
            grad_bases = self.grad_bases.view(n, C_out, kh, kw, C_in).permute(0, 1, 4, 2, 3)
            return None, self.grad_coef, grad_bases
        B, m, C_out, C_in, kh, kw = weight_shape
        return self.grad_w.view(B, m, C_out, kh, kw, C_in).permute(0, 1, 2, 5, 3, 4), None, None


class _RegionConvFast(torch.autograd.Function):
    """One filter per output pixel: each sample's patches are gathered region by region (one gather of C-long pixel
    rows) and every region's rows are multiplied by that region's filter only (one bmm over the regions padded to
    the largest, or one mm per region when padding would waste more than ``PAD_LIMIT``)."""

    @staticmethod
    def forward(ctx, x, weight, coef, bases, guide, bias, stride, padding, dilation, out_hw):
        filters = _Filters(weight, coef, bases, transposed=True)
        B, C_out, (Ho, Wo) = x.shape[0], filters.C_out, out_hw
        L, m = Ho * Wo, guide.shape[1]
        plan = _RegionPlan(guide)
        patches = _Patches(x, _kernel(weight, bases), stride, padding, dilation, out_hw, plan.src, plan.pos)
        # channels-last output (not a view: callers may modify it in place), written through a (B, L, C_out) view
        out = torch.empty((B, C_out, Ho, Wo), dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
        out_rows = out.permute(0, 2, 3, 1).view(B, L, C_out)
        R = max(plan.rows)
        rows, out_buffer = x.new_empty(R, patches.kk * patches.C), x.new_empty(R, C_out)  # reused by every sample
        for b in range(B):
            w = filters(b)  # (m, K, C_out)
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
        ctx.save_for_backward(x, weight, coef, bases, guide)
        ctx.plan, ctx.conf = plan, (stride, padding, dilation, out_hw)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, weight, coef, bases, guide = ctx.saved_tensors
        plan, (stride, padding, dilation, (Ho, Wo)) = ctx.plan, ctx.conf
        need_x, need_w, need_coef, need_bases, need_g, need_bias = ctx.needs_input_grad[:6]
        filters = _Filters(weight, coef, bases)
        (B, m), C_out, (H, W) = guide.shape[:2], filters.C_out, x.shape[2:]
        L, C_in = Ho * Wo, x.shape[1]
        kernel = _kernel(weight, bases)
        # recomputed (nothing m-times was kept), packed in region order
        patches = _Patches(x, kernel, stride, padding, dilation, (Ho, Wo), plan.order, plan.inverse)
        go = grad_out.permute(0, 2, 3, 1).reshape(B, L, C_out)  # (B, L, C_out)
        grad_filters = filters.grad_buffers(need_w or need_coef or need_bases)
        (ph, pw), (kh, kw) = padding, kernel
        grad_x = None
        if need_x:  # channels-last; each sample is accumulated in a small zero-padded buffer, then copied in once
            grad_x = torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
            grad_padded = x.new_empty(H + 2 * ph, W + 2 * pw, C_in)  # (Hp, Wp, C_in)
        g = x.new_empty(B, L, m) if need_g else None  # (B, L, m)
        # the only m-times term, (rows, m, C_out), taken max(L/m, 2048) rows at a time: at most one sample's output
        # size for large maps, one efficient mm for small ones
        step = min(L, max(-(-L // m), 2048))
        resp, g_sorted = (x.new_empty(step, m * C_out), x.new_empty(L, m)) if need_g else (None, None)
        rows = grad_rows = grad_patches = go_sorted = None  # buffers reused from sample to sample
        for b in range(B):
            w = filters(b)  # (m, C_out, K)
            rows = patches.rows(b, L, rows)  # (L, K) by region
            go_sorted = torch.index_select(go[b], 0, plan.order[b], out=go_sorted)  # (L, C_out)
            if need_g:  # g_j(p) = sum_o dL/dY[o, p] * (W_j conv X)[o, p] for every region j
                w_all = w.flatten(0, 1).t()  # (K, m*C_out)
                for i in range(0, L, step):
                    part = torch.mm(rows[i : i + step], w_all, out=resp[: min(step, L - i)])
                    torch.sum(
                        part.view(-1, m, C_out).mul_(go_sorted[i : i + step, None]), 2, out=g_sorted[i : i + step]
                    )
                torch.index_select(g_sorted, 0, plan.inverse[b], out=g[b])
            gw = grad_filters(b) if grad_filters else None  # (m, C_out, K)
            if gw is not None:
                for j, n in enumerate(plan.counts[b]):
                    if not n:
                        gw[j].zero_()  # an empty region gets no gradient
                for j, go_j, rows_j in plan.split(b, go_sorted, rows):
                    torch.mm(go_j.t(), rows_j, out=gw[j])
            if need_x:
                grad_rows = torch.empty_like(rows) if grad_rows is None else grad_rows
                for j, go_j, grad_rows_j in plan.split(b, go_sorted, grad_rows):
                    torch.mm(go_j, w[j], out=grad_rows_j)
            if gw is not None:
                filters.reduce_grad(b)
            if need_x:  # back to pixel order, then col2im as kh*kw strided adds (faster than a scatter-add)
                grad_patches = torch.index_select(grad_rows, 0, plan.inverse[b], out=grad_patches)
                grad_padded.zero_()
                _col2im_add(grad_padded, grad_patches.view(Ho, Wo, kh, kw, C_in), stride, dilation)
                grad_x[b].permute(1, 2, 0).copy_(grad_padded[ph : ph + H, pw : pw + W])  # drop the padding
        grad_guide = grad_bias = None
        grad_weight, grad_coef, grad_bases = (
            filters.grads(None if weight is None else weight.shape, None if bases is None else bases.shape)
            if grad_filters
            else (None, None, None)
        )
        if need_bias:
            grad_bias = go.sum((0, 1))
        if need_g:
            grad_guide = _guide_grad(guide, g.view(B, Ho, Wo, m).permute(0, 3, 1, 2))
        return grad_x, grad_weight, grad_coef, grad_bases, grad_guide, grad_bias, None, None, None, None


def _col2im_add(dst, cols, stride, dilation):
    """Add patch gradients back onto the padded image. dst (Hp, Wp, C), cols (Ho, Wo, kh, kw, C)."""
    Ho, Wo, kh, kw, _ = cols.shape
    (sh, sw), (dh, dw) = stride, dilation
    for i in range(kh):
        for j in range(kw):
            dst[i * dh : i * dh + sh * (Ho - 1) + 1 : sh, j * dw : j * dw + sw * (Wo - 1) + 1 : sw] += cols[:, :, i, j]


def _kernel(weight, bases):
    """(kh, kw) from whichever filter description is given."""
    return tuple((weight if bases is None else bases).shape[-2:])


def _fast(x, weight, guide, bias, stride, padding, dilation, out_hw):
    return _RegionConvFast.apply(x, weight, None, None, guide, bias, stride, padding, dilation, out_hw)


# ----------------------------------------------------------------------------------------------------------------
# onnx: standard ops, batch-size independent
# ----------------------------------------------------------------------------------------------------------------
def _onnx(x, weight, guide, stride, padding, dilation):
    _, m, C_out, C_in, kh, kw = weight.shape
    kh, kw = int(kh), int(kw)  # static: ONNX's im2col needs a constant kernel size, not a traced shape
    Ho, Wo = guide.shape[2:]
    cols = F.unfold(x, (kh, kw), dilation, padding, stride)  # (B, C_in*kh*kw, Ho*Wo)
    responses = torch.matmul(weight.flatten(3).flatten(1, 2), cols)  # (B, m*C_out, Ho*Wo)
    # reshape with the traced batch size, never unflatten: its ONNX symbolic bakes the traced batch into the graph
    responses = responses.reshape(responses.shape[0], m, C_out, -1)  # (B, m, C_out, Ho*Wo)
    region = guide.flatten(2).argmax(1, keepdim=True)  # (B, 1, Ho*Wo), ties as torch.argmax
    regions = torch.arange(m, device=x.device).view(1, m, 1)
    mask = (region == regions).to(responses.dtype).unsqueeze(2)  # (B, m, 1, Ho*Wo)
    out = (responses * mask).sum(1)  # (B, C_out, Ho*Wo)
    return out.reshape(out.shape[0], C_out, Ho, Wo)


def is_tracing() -> bool:
    """True while tracing, scripting or exporting to ONNX: shapes are symbolic and only standard ops may run."""
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return True
    onnx = getattr(torch, "onnx", None)
    return bool(onnx is not None and hasattr(onnx, "is_in_onnx_export") and onnx.is_in_onnx_export())


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
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"region_aware_conv2d: impl must be one of {IMPLEMENTATIONS}, got {impl!r}")
    stride, padding, dilation, out_hw = _check_args(input, weight, guide, stride, padding, dilation)
    if out_hw is not None:
        _check_bias(bias, weight.shape[2])
    if is_tracing():  # the only path that traces to standard ops, whatever was asked for
        impl = "onnx"
    elif impl == "auto":
        impl = "fast"
    dtype = _compute_dtype(input)
    input, weight = input.to(dtype), weight.to(dtype)
    bias = None if bias is None else bias.to(dtype)
    if impl == "onnx":
        out = _onnx(input, weight, guide, stride, padding, dilation)
    else:
        with torch.autocast(input.device.type, enabled=False):
            if impl == "fast":
                return _fast(input, weight, guide, bias, stride, padding, dilation, out_hw)
            out = _reference(input, weight, guide, stride, padding, dilation)
    return out if bias is None else out + bias.view(1, -1, 1, 1)


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
    nor their gradient is ever materialised; the other paths materialise them and call ``region_aware_conv2d``.

    Args:
        input (torch.Tensor): Input feature map, shape (B, C_in, H, W).
        coef (torch.Tensor): Mixing coefficients, shape (B, m, n).
        bases (torch.Tensor): Shared base kernels, shape (n, C_out, C_in, k, k).
        guide, stride, padding, dilation, bias, impl: As ``region_aware_conv2d``.

    Returns:
        (torch.Tensor): Output, shape (B, C_out, H_out, W_out).
    """
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"region_aware_conv2d: impl must be one of {IMPLEMENTATIONS}, got {impl!r}")
    if is_tracing() or impl in ("reference", "onnx"):
        weight = torch.matmul(coef, bases.flatten(1)).view(-1, coef.shape[1], *bases.shape[1:])
        return region_aware_conv2d(input, weight, guide, stride, padding, dilation, bias, impl)
    if coef.dim() != 3 or bases.dim() != 5 or coef.shape[2] != bases.shape[0]:
        raise ValueError(
            f"region_aware_conv2d: coef must be (B, m, n) and bases (n, C_out, C_in, k, k), got {tuple(coef.shape)} "
            f"and {tuple(bases.shape)}"
        )
    weight_shape = torch.empty((coef.shape[0], coef.shape[1], *bases.shape[1:]), device="meta")
    stride, padding, dilation, out_hw = _check_args(input, weight_shape, guide, stride, padding, dilation)
    _check_bias(bias, bases.shape[1])
    dtype = _compute_dtype(input)
    input, coef, bases = input.to(dtype), coef.to(dtype), bases.to(dtype)
    bias = None if bias is None else bias.to(dtype)
    with torch.autocast(input.device.type, enabled=False):
        return _RegionConvFast.apply(input, None, coef, bases, guide, bias, stride, padding, dilation, out_hw)


def _check_bias(bias, C_out):
    if bias is not None and tuple(bias.shape) != (C_out,):
        raise ValueError(f"region_aware_conv2d: bias must have shape ({C_out},), got {tuple(bias.shape)}")


def _compute_dtype(input: torch.Tensor) -> torch.dtype:
    """The autocast dtype when autocast is on for the input's device, else the input's dtype."""
    device_type = input.device.type
    try:
        enabled = torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4 takes no device argument
        enabled = torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()
    if not enabled:
        return input.dtype
    if hasattr(torch, "get_autocast_dtype"):
        return torch.get_autocast_dtype(device_type)
    return torch.get_autocast_cpu_dtype() if device_type == "cpu" else torch.get_autocast_gpu_dtype()
