"""Filter descriptions: what the op convolves each sample's regions with.

Two descriptions, one interface: ``ExplicitFilters`` holds the (B, m, C_out, C_in, k, k) filters, ``MixedFilters``
the official generator's factorisation ``weight[b, j] = sum_n coef[b, j, n] * bases[n]``, mixed one sample at a time
so that neither the (B, m, C_out, C_in, k, k) filters nor their gradient ever exists.

The reference and export paths take ``materialise()``. The fast path asks, within one forward or backward pass (one
description instance per pass: the gradient buffers live on it), for sample b's filters in the matmul layout
(m, C_out, K), or (m, K, C_out) transposed, with K ordered (kh, kw, C_in) like its patch rows; and for a gradient
buffer per sample in that layout, which ``reduce_grad`` folds into the description's own tensors. The grouped path
asks for every (sample, region) group's filter at once, ``grouped()`` (B*m, C_out, K), and turns a gradient in that
layout into the description's own with ``grouped_grads``.
"""

from __future__ import annotations

from typing import Callable, Tuple

import torch

# permutations putting C_in innermost, (kh, kw, C_in) being the order of the fast path's patch rows
_EXPLICIT_ROWS = (0, 1, 2, 4, 5, 3)  # (B, m, C_out, C_in, kh, kw) -> (B, m, C_out, kh, kw, C_in)
_EXPLICIT_ROWS_T = (0, 1, 4, 5, 3, 2)  # -> (B, m, kh, kw, C_in, C_out)
_BASES_ROWS = (0, 1, 3, 4, 2)  # (n, C_out, C_in, kh, kw) -> (n, C_out, kh, kw, C_in)
_BASES_ROWS_T = (0, 3, 4, 2, 1)  # -> (n, kh, kw, C_in, C_out)


class _Filters:
    """What both descriptions share; ``tensors`` are the ones autograd differentiates, in constructor order."""

    tensors: Tuple[torch.Tensor, ...]

    @property
    def shape(self) -> Tuple[int, ...]:
        """(B, m, C_out, C_in, kh, kw), the shape of the materialised filters."""
        raise NotImplementedError

    @property
    def out_channels(self) -> int:
        return self.shape[2]

    @property
    def grouped_shape(self) -> Tuple[int, int, int]:
        """(B*m, C_out, K), the shape of ``grouped()``."""
        B, m, C_out, C_in, kh, kw = self.shape
        return (B * m, C_out, C_in * kh * kw)

    def to(self, dtype: torch.dtype) -> _Filters:
        """The same description with every tensor in ``dtype`` (itself when they all are already)."""
        if all(t.dtype == dtype for t in self.tensors):
            return self
        return type(self)(*(t.to(dtype) for t in self.tensors))

    def _unrows(self, grad: torch.Tensor, lead: Tuple[int, ...]) -> torch.Tensor:
        """A (*lead, C_out, K) gradient in the caller's (*lead, C_out, C_in, kh, kw) layout (a view)."""
        _, _, C_out, C_in, kh, kw = self.shape
        d = len(lead)
        return grad.view(*lead, C_out, kh, kw, C_in).permute(*range(d), d, d + 3, d + 1, d + 2)


class ExplicitFilters(_Filters):
    """One filter per sample and region.

    Args:
        weight (torch.Tensor): (B, m, C_out, C_in, kh, kw).
    """

    def __init__(self, weight: torch.Tensor):
        self.weight = weight
        self.tensors = (weight,)

    @property
    def shape(self) -> Tuple[int, ...]:
        return tuple(self.weight.shape)

    def check(self) -> None:
        """Raise ValueError unless the weight has rank 6."""
        if self.weight.dim() != 6:
            raise ValueError(
                f"region_aware_conv2d: weight must be (B, m, C_out, C_in, k, k), got shape {tuple(self.weight.shape)}"
            )

    def materialise(self) -> torch.Tensor:
        """The filters (B, m, C_out, C_in, kh, kw)."""
        return self.weight

    def rows_matrix(self) -> torch.Tensor:
        """The filters as (B, m, C_out, K), K ordered (kh, kw, C_in) like the patch rows (a copy)."""
        B, m, C_out = self.shape[:3]
        return self.weight.permute(_EXPLICIT_ROWS).reshape(B, m, C_out, -1)

    def per_sample(self, transposed: bool, buffer: torch.Tensor | None = None) -> Callable[[int], torch.Tensor]:
        """A function of b giving sample b's filters (m, C_out, K), or (m, K, C_out) when ``transposed`` (views of the
        weight: ``buffer`` is not needed)."""
        B, m, C_out = self.shape[:3]
        w = self.weight.permute(_EXPLICIT_ROWS_T if transposed else _EXPLICIT_ROWS).contiguous()
        w = w.view(B, m, -1, C_out) if transposed else w.view(B, m, C_out, -1)  # (B, m, K, C_out) or (B, m, C_out, K)
        return w.__getitem__

    def start_grads(self) -> None:
        """Allocate the filter gradient (B, m, C_out, K), filled sample by sample."""
        B, m, C_out, C_in, kh, kw = self.shape
        self.grad_w = self.weight.new_empty(B, m, C_out, kh * kw * C_in)

    def grad_buffer(self, b: int) -> torch.Tensor:
        """Where sample b's filter gradient (m, C_out, K) goes."""
        return self.grad_w[b]

    def reduce_grad(self, b: int) -> None:
        """Nothing to fold: the buffer is the gradient."""

    def grads(self) -> Tuple[torch.Tensor]:
        """(grad_weight,) in the weight's layout."""
        return (self._unrows(self.grad_w, self.shape[:2]),)

    def grouped(self, out: torch.Tensor | None = None) -> torch.Tensor:
        """Every (sample, region) group's filter (B*m, C_out, K), group b*m + j (copied into ``out``, of
        ``grouped_shape``, if given and the layout needs a copy)."""
        w = self.weight.permute(_EXPLICIT_ROWS)  # (B, m, C_out, kh, kw, C_in)
        if out is None or w.is_contiguous():
            return w.reshape(self.grouped_shape)
        return out.view(w.shape).copy_(w).view(self.grouped_shape)

    def grouped_grads(self, grad: torch.Tensor) -> Tuple[torch.Tensor]:
        """(grad_weight,) from the groups' filter gradient (B*m, C_out, K)."""
        return (self._unrows(grad, self.shape[:2]),)


class MixedFilters(_Filters):
    """Region filters mixed from shared bases: ``weight[b, j] = sum_n coef[b, j, n] * bases[n]``.

    Args:
        coef (torch.Tensor): Mixing coefficients (B, m, n).
        bases (torch.Tensor): Base kernels (n, C_out, C_in, kh, kw); read without a copy when stored with C_in
            innermost (a channels-last 4-D parameter viewed as 5-D, as the official generator keeps them).
    """

    def __init__(self, coef: torch.Tensor, bases: torch.Tensor):
        self.coef, self.bases = coef, bases
        self.tensors = (coef, bases)
        self._rows = {}

    @property
    def shape(self) -> Tuple[int, ...]:
        return (self.coef.shape[0], self.coef.shape[1], *self.bases.shape[1:])

    def check(self) -> None:
        """Raise ValueError unless coef is (B, m, n) and bases (n, C_out, C_in, k, k)."""
        if self.coef.dim() != 3 or self.bases.dim() != 5 or self.coef.shape[2] != self.bases.shape[0]:
            raise ValueError(
                f"region_aware_conv2d: coef must be (B, m, n) and bases (n, C_out, C_in, k, k), got "
                f"{tuple(self.coef.shape)} and {tuple(self.bases.shape)}"
            )

    def materialise(self) -> torch.Tensor:
        """The filters (B, m, C_out, C_in, kh, kw); batch -1 so that an export stays batch-size free."""
        return torch.matmul(self.coef, self.bases.flatten(1)).view(-1, self.coef.shape[1], *self.bases.shape[1:])

    def rows_matrix(self) -> torch.Tensor:
        """The filters as (B, m, C_out, K), K ordered (kh, kw, C_in) like the patch rows, mixed in that order (the
        bases' reorder is free for channels-last bases, and a constant in an export); batch -1 for an export."""
        _, _, C_out, C_in, kh, kw = self.shape
        return torch.matmul(self.coef, self._bases_rows(False)).view(-1, self.coef.shape[1], C_out, C_in * kh * kw)

    def _bases_rows(self, transposed: bool) -> torch.Tensor:
        """The bases as (n, C_out*K), or (n, K*C_out) when ``transposed``; taken once per layout."""
        if transposed not in self._rows:
            order = _BASES_ROWS_T if transposed else _BASES_ROWS
            self._rows[transposed] = self.bases.permute(order).reshape(self.bases.shape[0], -1)
        return self._rows[transposed]

    def per_sample(self, transposed: bool, buffer: torch.Tensor | None = None) -> Callable[[int], torch.Tensor]:
        """A function of b giving sample b's filters (m, C_out, K), or (m, K, C_out) when ``transposed``.

        Each call overwrites the previous sample's filters (one reused buffer: ``buffer``, (m, C_out*K), if given).
        """
        bases = self._bases_rows(transposed)  # (n, C_out*K)
        m, C_out = self.coef.shape[1], self.out_channels
        buffer = self.coef.new_empty(m, bases.shape[1]) if buffer is None else buffer  # (m, C_out*K)
        shape = (m, -1, C_out) if transposed else (m, C_out, -1)

        def mix(b: int) -> torch.Tensor:
            return torch.mm(self.coef[b], bases, out=buffer).view(shape)

        return mix

    def start_grads(self) -> None:
        """Allocate the coefficient and basis gradients and one sample's filter gradient buffer."""
        bases = self._bases_rows(False)  # (n, C_out*K)
        self.grad_coef = torch.empty_like(self.coef)  # (B, m, n)
        self.grad_bases = torch.zeros_like(bases)  # (n, C_out*K), summed over the samples
        self.grad_w = self.coef.new_empty(self.coef.shape[1], self.out_channels, bases.shape[1] // self.out_channels)

    def grad_buffer(self, b: int) -> torch.Tensor:
        """Where sample b's filter gradient (m, C_out, K) goes (reused: ``reduce_grad(b)`` before the next sample)."""
        return self.grad_w

    def reduce_grad(self, b: int) -> None:
        """Fold sample b's filter gradient into the coefficient and basis gradients."""
        gw = self.grad_w.view(self.grad_w.shape[0], -1)  # (m, C_out*K)
        torch.mm(gw, self._bases_rows(False).t(), out=self.grad_coef[b])
        self.grad_bases.addmm_(self.coef[b].t(), gw)

    def grads(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """(grad_coef, grad_bases) in the caller's layouts."""
        return self.grad_coef, self._unrows(self.grad_bases, self.bases.shape[:1])

    def grouped(self, out: torch.Tensor | None = None) -> torch.Tensor:
        """Every (sample, region) group's filter (B*m, C_out, K), group b*m + j, mixed in one matmul (into ``out``,
        of ``grouped_shape``, if given)."""
        B, m, n = self.coef.shape
        flat = None if out is None else out.view(B * m, -1)
        return torch.mm(self.coef.reshape(B * m, n), self._bases_rows(False), out=flat).view(self.grouped_shape)

    def grouped_grads(self, grad: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(grad_coef, grad_bases) from the groups' filter gradient (B*m, C_out, K)."""
        B, m, n = self.coef.shape
        grad = grad.reshape(B * m, -1)  # (B*m, C_out*K)
        grad_coef = torch.mm(grad, self._bases_rows(False).t()).view(B, m, n)
        grad_bases = torch.mm(self.coef.reshape(B * m, n).t(), grad)  # (n, C_out*K)
        return grad_coef, self._unrows(grad_bases, (n,))
