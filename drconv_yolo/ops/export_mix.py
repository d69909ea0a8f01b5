"""Export formulation ``mix``: the official generator's filters as one standard conv with the n bases, then a
per-pixel mix of the n responses by the selected region's coefficients (the eager ``mix`` path's algebra).

By linearity, ``y[b, :, p] = sum_n coef[b, r(p), n] * (bases[n] conv x)[b, :, p]``: one ``Conv`` node with constant
weights (n * C_out output channels; every runtime's fastest kernel, and quantisable), an ArgMax of the guide, the
selected coefficients as a one-hot MatMul (m * n multiply-adds per pixel), and a weighted sum. n times a conv's
multiply-adds: about one conv for ``bases: 1`` (the ``-lite`` configs). Static shapes apart from the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mix_export_conv(x, coef, bases, guide, stride, padding, dilation):
    """Region-aware convolution of mixed filters in standard ops, without the bias.

    Args:
        x (torch.Tensor): (B, C_in, H, W).
        coef (torch.Tensor): (B, m, n), the regions' mixing coefficients.
        bases (torch.Tensor): (n, C_out, C_in, kh, kw), the shared base kernels.
        guide (torch.Tensor): (B, m, Ho, Wo).
        stride, padding, dilation (tuple): The checked geometry's pairs.

    Returns:
        (torch.Tensor): (B, C_out, Ho, Wo).
    """
    m, n, C_out = int(coef.shape[1]), int(bases.shape[0]), int(bases.shape[1])
    z = F.conv2d(x, bases.flatten(0, 1), None, stride, padding, dilation)  # (B, n*C_out, Ho, Wo)
    B, Ho, Wo = z.shape[0], z.shape[2], z.shape[3]  # traced sizes: the batch stays free in an export
    region = guide.argmax(1, keepdim=True).flatten(2)  # (B, 1, L), ties as torch.argmax
    onehot = (region == torch.arange(m, device=x.device).view(1, m, 1)).to(z.dtype)  # (B, m, L)
    picked = torch.matmul(coef.to(z.dtype).transpose(1, 2), onehot)  # (B, n, L): coef[b, r(p), :]
    if n == 1:
        return z * picked.reshape(B, 1, Ho, Wo)
    return (z.reshape(B, n, C_out, -1) * picked.unsqueeze(2)).sum(1).reshape(B, C_out, Ho, Wo)
