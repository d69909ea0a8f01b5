"""The reference implementation: the definition, kept readable for tests.

All m responses with ``F.conv2d``, then one per pixel: m times the MACs and activation memory of a standard conv.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .common import grad_dtype, guide_grad


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
        dtype = grad_dtype(responses.dtype)
        g = (grad_out.unsqueeze(1).to(dtype) * responses.to(dtype)).sum(2)  # (B, m, Ho, Wo)
        return grad_responses, guide_grad(guide, g)


def reference_conv(x, weight, guide, stride, padding, dilation):
    """Region-aware convolution by its definition (no bias).

    Args:
        x (torch.Tensor): (B, C_in, H, W).
        weight (torch.Tensor): (B, m, C_out, C_in, kh, kw).
        guide (torch.Tensor): (B, m, Ho, Wo).
        stride, padding, dilation (tuple): Checked (h, w) pairs.

    Returns:
        (torch.Tensor): (B, C_out, Ho, Wo).
    """
    B, m, C_out, C_in, kh, kw = weight.shape
    responses = torch.stack(
        [
            F.conv2d(x[b : b + 1], weight[b].reshape(m * C_out, C_in, kh, kw), None, stride, padding, dilation)[0]
            for b in range(B)
        ]
    )  # (B, m*C_out, Ho, Wo)
    responses = responses.unflatten(1, (m, C_out))  # (B, m, C_out, Ho, Wo)
    return _SelectRegion.apply(responses, guide)
