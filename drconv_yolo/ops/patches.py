"""Patch rows: the k x k patch of an output pixel as one row (kh*kw*C), ordered (kh, kw, C) like the filters' matmul
layout, read from channels-last pixels. With dilation 1 along the width the kw taps of one kernel row are kw*C
contiguous numbers, so a patch is gathered as kh chunks of kw*C (one index per kernel row, read through an
overlapping strided view) rather than kh*kw chunks of C, which is several times faster for small C.

Two gatherers, one per path:

``PatchGather`` (grouped path)
    Any pixels of the whole batch by flat index, from a zero-padded channels-last copy of the input: no tap needs
    masking, and col2im adds the rows' gradients onto a padded gradient (``add_rows``).
``SamplePatches`` (fast path)
    One sample's rows at a time, straight from the unpadded input (free when it is channels-last: no input-sized copy
    per call, which costs more in page faults on CPU than it saves); the border pixels, whose patches reach into the
    padding, are re-read tap by tap with their outside taps zeroed.
"""

from __future__ import annotations

import functools

import torch

from .workspace import scratch


def _zero_padded(nhwc: torch.Tensor, ph: int, pw: int, reuse: bool) -> torch.Tensor:
    """(B, H, W, C) -> (B, H + 2*ph, W + 2*pw, C) with zero borders: only the borders are zeroed (``F.pad`` fills
    the whole tensor first, one more pass over it); in scratch memory if ``reuse``."""
    B, H, W, C = nhwc.shape
    shape = (B, H + 2 * ph, W + 2 * pw, C)
    padded = scratch("padded", shape, nhwc.dtype, nhwc.device) if reuse else nhwc.new_empty(shape)
    padded[:, :ph].zero_()
    padded[:, ph + H :].zero_()
    padded[:, ph : ph + H, :pw].zero_()
    padded[:, ph : ph + H, pw + W :].zero_()
    padded[:, ph : ph + H, pw : pw + W].copy_(nhwc)
    return padded


@functools.lru_cache(maxsize=64)
def _chunk_offsets(Ho, Wo, kh, taps_w, sh, sw, dh, dw, Wp, device) -> torch.Tensor:
    """Each output pixel's chunk offsets in its sample's padded image, (Ho*Wo, kh*taps_w) long.

    They depend on the geometry only, so they are cached: a model's layers ask for the same few on every call. They
    are only ever read (one made under ``torch.inference_mode`` may serve a training step).
    """
    ar = functools.partial(torch.arange, device=device)
    h = ar(Ho).view(Ho, 1, 1, 1) * sh + ar(kh).view(1, 1, kh, 1) * dh  # (Ho, 1, kh, 1)
    w = ar(Wo).view(1, Wo, 1, 1) * sw + ar(taps_w).view(1, 1, 1, taps_w) * dw  # (1, Wo, 1, taps_w)
    return (h * Wp + w).view(Ho * Wo, kh * taps_w)


class PatchGather:
    """The grouped path's gather: the patch rows of any output pixels of the batch, from a zero-padded copy.

    Args:
        x (torch.Tensor): Input (B, C, H, W); read without a copy of its own when channels-last and unpadded.
        geometry (Geometry): The checked geometry, kernel and output size included.
        reuse (bool): Put the padded copy and the rows in scratch memory (``workspace.scratch``): only while
            nothing of this gather outlives the call (inference).
    """

    def __init__(self, x: torch.Tensor, geometry, reuse: bool = False):
        B, C, H, W = x.shape
        (Ho, Wo), (kh, kw) = geometry.out_hw, geometry.kernel
        (sh, sw), (ph, pw), (dh, dw) = geometry.stride, geometry.padding, geometry.dilation
        Hp, Wp = H + 2 * ph, W + 2 * pw
        nhwc = x.permute(0, 2, 3, 1)  # (B, H, W, C), a view
        padded = _zero_padded(nhwc, ph, pw, reuse) if ph or pw else nhwc.contiguous()  # (B, Hp, Wp, C)
        # a chunk is what one index reads: a kernel row's kw taps when they are adjacent pixels, else one tap
        taps_w = 1 if dw == 1 else kw
        width = kw * C if dw == 1 else C
        self.source = padded.view(-1).as_strided((B * Hp * Wp - (kw - 1 if dw == 1 else 0), width), (C, 1))
        self.chunks = _chunk_offsets(Ho, Wo, kh, taps_w, sh, sw, dh, dw, Wp, x.device)  # (L, chunks per patch)
        self.sample_size, self.L, self.width = Hp * Wp, Ho * Wo, kh * kw * C
        self.padded = padded  # keeps the copy alive while the view is in use
        self.taps_per_chunk, self.shape, self.pad = kw if dw == 1 else 1, (B, C, H, W), (ph, pw)
        self.reuse = reuse

    def index(self, pixels: torch.Tensor) -> torch.Tensor:
        """Chunk indices (n*chunks per patch,) of the patches of ``pixels``, (n,) flat indices b*L + p."""
        if self.shape[0] == 1:  # one sample: the flat index is the pixel
            return self.chunks.index_select(0, pixels).flatten()
        chunks = self.chunks.index_select(0, pixels % self.L)  # (n, chunks per patch)
        return (chunks + (pixels // self.L).view(-1, 1) * self.sample_size).flatten()

    def rows(self, index: torch.Tensor) -> torch.Tensor:
        """The patch rows (n, kh*kw*C) at chunk indices ``index`` (from ``index``), in scratch memory if ``reuse``."""
        out = None
        if self.reuse:
            out = scratch("rows", (index.shape[0], self.source.shape[1]), self.source.dtype, self.source.device)
        return torch.index_select(self.source, 0, index, out=out).view(-1, self.width)

    def new_zeros(self) -> torch.Tensor:
        """A zero gradient for the padded input, (B*Hp*Wp, C), for ``add_rows``."""
        return self.padded.new_zeros(self.padded.numel() // self.shape[1], self.shape[1])

    def add_rows(self, grad: torch.Tensor, pixels: torch.Tensor, rows: torch.Tensor) -> None:
        """col2im: add the patch-row gradients ``rows`` (n, kh*kw*C) of ``pixels`` (n,) onto ``grad`` (B*Hp*Wp, C).

        One scatter-add of every tap (deterministic on CPU; on CUDA it adds atomically, in no fixed order).
        """
        taps = self.index(pixels).view(-1, 1) + torch.arange(self.taps_per_chunk, device=pixels.device)  # (n*kh, kw')
        grad.index_add_(0, taps.flatten(), rows.reshape(-1, self.shape[1]))

    def unpad(self, grad: torch.Tensor) -> torch.Tensor:
        """dL/dX (B, C, H, W) from the padded input's gradient (B*Hp*Wp, C): a view of it without the padding (not a
        copy: the copy would be the backward's last and largest allocation)."""
        B, C, H, W = self.shape
        (ph, pw), (Hp, Wp) = self.pad, self.padded.shape[1:3]
        return grad.view(B, Hp, Wp, C)[:, ph : ph + H, pw : pw + W].permute(0, 3, 1, 2)  # (B, C, H, W), strided


class SamplePatches:
    """The fast path's gather: one sample's k x k patches as rows (n, kh*kw*C), row i being the patch of output
    pixel ``src[b, i]`` and output pixel p's patch row ``pos[b, p]``, read from the unpadded input, the border pixels
    re-read tap by tap (module docstring).

    Args:
        x (torch.Tensor): Input (B, C, H, W); read without a copy when channels-last (as DRConv2d passes it).
        geometry (Geometry): The checked geometry, kernel and output size included.
        src (torch.Tensor): The output pixel of each row, (B, R) long.
        pos (torch.Tensor): The row of each output pixel, (B, L) long.
    """

    def __init__(self, x, geometry, src, pos):
        (H, W), (Ho, Wo) = x.shape[2:], geometry.out_hw
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = geometry.kernel, geometry.stride, geometry.padding, geometry.dilation
        L, self.kk, self.C, self.src = Ho * Wo, kh * kw, x.shape[1], src
        ar = functools.partial(torch.arange, device=x.device)
        h = ar(Ho).view(Ho, 1, 1, 1) * sh - ph + ar(kh).view(1, 1, kh, 1) * dh  # (Ho, 1, kh, 1)
        w = ar(Wo).view(1, Wo, 1, 1) * sw - pw + ar(kw).view(1, 1, 1, kw) * dw  # (1, Wo, 1, kw)
        taps = (h.clamp(0, H - 1) * W + w.clamp(0, W - 1)).view(L, kh * kw)  # (L, kh*kw)
        # (B, H*W, C); the chunks are a strided view of its memory, so it must be contiguous (a copy unless
        # x is channels-last)
        self.pixels = x.permute(0, 2, 3, 1).reshape(x.shape[0], H * W, x.shape[1]).contiguous()
        outside = ((h < 0) | (h >= H) | (w < 0) | (w >= W)).view(L, kh * kw)  # (L, kh*kw)
        self.chunked = dw == 1 and kw > 1 and W >= kw
        if self.chunked:
            # a chunk starts at the first tap of a kernel row; border pixels read a clamped (wrong) chunk, re-read below
            starts = h.clamp(0, H - 1) * W + w[..., :1]  # (Ho, Wo, kh, 1)
            self.starts = starts.view(L, kh).clamp(0, H * W - kw)  # (L, kh)
            border = outside.any(1).nonzero()[:, 0]  # (n_border,) pixels
            self.border_rows = pos[:, border]  # (B, n_border)
            self.border_taps = taps.index_select(0, border).flatten()  # (n_border*kh*kw,)
            outside = outside.index_select(0, border)  # (n_border, kh*kw)
            self.zeros = outside.flatten().nonzero()[:, 0] if border.numel() else None  # positions in the re-read
        else:
            self.taps = taps
            # the (pixel, tap) pairs in the padding, as positions in each sample's rows: (B, n_outside)
            outside = outside.nonzero()  # (n_outside, 2)
            self.zeros = pos[:, outside[:, 0]] * self.kk + outside[:, 1] if len(outside) else None

    def rows(self, b, n, buffer=None):
        """The first n rows of sample b's patches (pixel ``src[b, i]`` in row i): (n, kh*kw*C), in ``buffer``."""
        out = None if buffer is None else buffer.view(-1)[: n * self.kk * self.C]
        pixels = self.pixels[b]  # (H*W, C)
        if not self.chunked:
            taps = self.taps.index_select(0, self.src[b, :n]).flatten()  # (n*kh*kw,)
            rows = torch.index_select(pixels, 0, taps, out=None if out is None else out.view(-1, self.C))
            if self.zeros is not None:
                rows.index_fill_(0, self.zeros[b], 0)
            return rows.view(n, -1)
        kh = self.starts.shape[1]
        width = self.kk // kh * self.C  # kw*C
        chunks = pixels.as_strided((pixels.shape[0] - self.kk // kh + 1, width), (self.C, 1))  # overlapping rows
        starts = self.starts.index_select(0, self.src[b, :n]).flatten()  # (n*kh,)
        rows = torch.index_select(chunks, 0, starts, out=None if out is None else out.view(-1, width)).view(n, -1)
        if self.zeros is not None:
            border = pixels.index_select(0, self.border_taps)  # (n_border*kh*kw, C)
            border.index_fill_(0, self.zeros, 0)
            rows.index_copy_(0, self.border_rows[b], border.view(-1, rows.shape[1]))
        return rows
