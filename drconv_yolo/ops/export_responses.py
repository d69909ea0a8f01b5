"""Export formulation ``responses``: all m region responses, then a per-pixel selection.

Standard ops only (im2col, MatMul, ArgMax, Equal, Mul, ReduceSum) with static shapes apart from the batch: the most
portable formulation (no data-dependent shapes, no axis-free ArgMax surprises besides NCNN's), and the costliest:
m times the multiply-adds of the conv it replaces. Kept for runtimes that lack the other formulations' operators.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def responses_conv(x, weight, guide, stride, padding, dilation):
    """Region-aware convolution in standard ops, without the bias; arguments and result as ``reference_conv``.

    Args:
        x (torch.Tensor): (B, C_in, H, W).
        weight (torch.Tensor): (B, m, C_out, C_in, kh, kw), every sample's region filters.
        guide (torch.Tensor): (B, m, Ho, Wo).
        stride, padding, dilation (tuple): The checked geometry's pairs.

    Returns:
        (torch.Tensor): (B, C_out, Ho, Wo).
    """
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
