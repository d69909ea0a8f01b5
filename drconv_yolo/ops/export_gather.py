"""Export formulation ``gather``: per region, that region's patch rows gathered, one MatMul with its filter, the
results scattered back: about one conv's multiply-adds whatever m and n, with data-dependent shapes.

Ops: ArgMax, Equal, NonZero, integer arithmetic, Gather, Split, MatMul, Concat, ScatterElements (plus Transpose
and Pad): all in onnxruntime's and OpenVINO's operator lists and TensorRT's (NonZero there with limits; untested
here). The m regions are unrolled in the graph (m is a constant); the batch stays dynamic. Each region's patch rows
come from one Gather of the padded channels-last input with a (N_j, kh*kw) index (the pixel under each kernel tap),
so no im2col tensor of the whole map is built (ONNX's im2col is a chain of Gathers along the last axis, which
onnxruntime runs at a fraction of a copy's speed); a pointwise layer (1x1, stride 1, no padding) gathers by the
region's pixel indices themselves. Every row of region j is multiplied by the filters of all B samples, and one
last Gather of rows takes each pixel's own sample's product in pixel order: B times a conv's multiply-adds, one
conv at batch 1, what the ``responses`` formulation costs (m convs) at batch m. Where the batch B is a constant of
the export (``static_batch``: Ultralytics' ONNX, OpenVINO and TensorRT exports without ``dynamic=True``), the
regions are unrolled per sample too, and each sample's rows meet only its own filter: one conv's multiply-adds at
any batch, m*B products in the graph. A region with no pixel is an empty MatMul.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gather_conv(x, weight_rows, guide, kernel, stride, padding, dilation, bias=None, activation=None,
                static_batch=False):  # fmt: skip
    """Region-aware convolution by region gathers.

    Args:
        x (torch.Tensor): (B, C_in, H, W).
        weight_rows (torch.Tensor): (B, m, C_out, K), every sample's region filters with K = kh*kw*C_in ordered
            (kh, kw, C_in) (``filters.rows_matrix()``).
        guide (torch.Tensor): (B, m, Ho, Wo).
        kernel (tuple): (kh, kw), ints.
        stride, padding, dilation (tuple): The checked geometry's pairs.
        bias (torch.Tensor, optional): (C_out,), added to each region's product.
        activation (callable, optional): An elementwise function, applied to each region's product after the bias
            (a runtime fuses both into the region's MatMul).
        static_batch (bool): The batch is a constant of the export (``static_batch_export``): each sample's pixels of
            a region are gathered and multiplied by that sample's filter alone, one conv's multiply-adds at any batch
            (m*B products in the graph). Default: one product per region with every sample's filters, batch left free.

    Returns:
        (torch.Tensor): (B, C_out, Ho, Wo).
    """
    m, C_out = int(weight_rows.shape[1]), int(weight_rows.shape[2])
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    B, C_in, Ho, Wo = x.shape[0], x.shape[1], guide.shape[2], guide.shape[3]  # traced: the batch stays free
    padded = F.pad(x, (pw, pw, ph, ph)) if ph or pw else x  # (B, C_in, Hp, Wp)
    Hp, Wp = padded.shape[2], padded.shape[3]
    pixels = padded.reshape(B, C_in, -1).transpose(1, 2).reshape(-1, C_in)  # (B*Hp*Wp, C_in), channels-last
    # offset of each kernel tap from the patch's top-left pixel in the flattened padded input, (kh*kw,)
    taps = torch.tensor([i * dh for i in range(kh)]).view(-1, 1) * Wp + torch.tensor([j * dw for j in range(kw)])
    taps = taps.reshape(-1).to(x.device)
    region = guide.argmax(1).reshape(-1)  # (B*L,), ties as torch.argmax
    # per output pixel b*L + oy*Wo + ox, once for all regions: its sample and its patch's top-left in `pixels`
    pixel = torch.arange(region.shape[0], device=x.device)
    sample_of, at = pixel // (Ho * Wo), pixel % (Ho * Wo)
    # a 1x1 kernel at stride 1 without padding reads each output pixel's own input pixel: the corner is the pixel
    pointwise = kh * kw == 1 and (sh, sw, ph, pw) == (1, 1, 0, 0)
    corner_of = None if pointwise else sample_of * (Hp * Wp) + (at // Wo) * (sh * Wp) + (at % Wo) * sw  # (B*L,)
    static_batch = static_batch and int(x.shape[0]) > 1  # at batch 1 the forms agree: the batch-free graph is kept
    if static_batch:  # units (region j, sample b): b's regions, its first pixel, its own filter (piece b*m + j)
        S, L = int(x.shape[0]), int(Ho) * int(Wo)
        filters = weight_rows.reshape(S * m, C_out, -1).split(1, 0)
        per_sample = region.reshape(S, L)
        samples = [per_sample[b] for b in range(S)]  # S x (L,): one selection per sample, not per unit
        units = [(j, samples[b], b * L, filters[b * m + j]) for j in range(m) for b in range(S)]
    else:  # units (region j, every sample): one Split, reshaped (not a Gather and a Squeeze each)
        filters = weight_rows.split(1, 1)  # m x (B, 1, C_out, K)
        units = [(j, region, 0, filters[j]) for j in range(m)]
    picked, outs = [], []
    for j, regions, first, w in units:
        idx = torch.nonzero(regions == j).reshape(-1)  # (N,): the unit's pixels in region j
        idx = idx + first if first else idx  # as rows of the whole batch (sample b's pixels start at b*L)
        corner = idx if pointwise else corner_of.index_select(0, idx)  # (N,)
        if kh * kw == 1:  # a 1x1 kernel: the patch row is the pixel's own row
            rows = pixels.index_select(0, corner)  # (N, C_in)
        else:
            rows = pixels[corner.unsqueeze(1) + taps].reshape(-1, kh * kw * C_in)  # (N, K), K as (kh, kw, C_in)
        y = torch.matmul(rows, w.reshape(-1, rows.shape[1]).t())  # (N, B*C_out) every sample's, or (N, C_out)
        y = y.reshape(-1, C_out)  # every sample's: row r*B + s is sample s's filter on pixel row r
        y = y if bias is None else y + bias
        outs.append(y if activation is None else activation(y))
        picked.append(idx)
    # back to pixel order and each pixel's own sample by one Gather of rows. Pixel p is row inverse[p] of the
    # region-ordered pixels (a row scatter, aten::index_put, has no OpenVINO PyTorch-frontend rule; the regions
    # partition the pixels, so the scatter of the inverse overwrites every entry of its base, perm itself: no constant
    # of the map's size in a static export), and its own product is row inverse[p]*B + sample_of[p] of the
    # concatenated products (every region's rows carry all B samples' products; one sample's only with a static batch)
    perm = torch.cat(picked)  # (B*L,): the pixel of each row in unit order
    inverse = perm.scatter(0, perm, torch.arange(perm.shape[0], device=x.device))  # (B*L,): each pixel's row
    out = torch.cat(outs).index_select(0, inverse if static_batch else inverse * B + sample_of)  # (B*L, C_out)
    return out.reshape(B, Ho, Wo, C_out).permute(0, 3, 1, 2)
