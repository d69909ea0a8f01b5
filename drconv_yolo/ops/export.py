"""The export path: which formulation a traced or exported DRConv takes, by one written rule.

Three formulations, one module each, all standard ops and all equal to the reference op's output:

``mix`` (:mod:`.export_mix`)
    Mixed filters only (the official generator): one standard conv with the n bases, then a per-pixel mix.
    n x a conv's multiply-adds, static shapes.
``gather`` (:mod:`.export_gather`)
    Per region, its pixels' patch rows gathered, one MatMul, scattered back: one conv's multiply-adds at batch 1
    (B x at batch B), data-dependent shapes (NonZero, ScatterND).
``responses`` (:mod:`.export_responses`)
    All m responses, then a per-pixel selection: m x a conv, static shapes, the most portable.

The rule (``choose_export``): ``mix`` for mixed filters of at most ``EXPORT_MIX_MAX_BASES`` bases, ``gather``
otherwise. Measured on the exported YOLOv8n models (``drconv-yolo bench --deploy``; figures in docs/deployment.md):
``mix`` at one base costs about the conv it replaces, while ``gather``'s gathers and scatters add a fixed cost per
layer; at 8 bases ``gather`` costs a fraction of ``mix`` and ``responses`` (both 8 convs).

A fused ``DRConv``'s activation comes with the call: ``gather`` applies the bias and an elementwise activation
(``ROW_ACTIVATIONS``) to each region's product, where OpenVINO fuses both into the region's MatMul (a separate
pass over the output otherwise: yolov8n-drconv-blocks 1.47x -> 1.35x the baseline in OpenVINO, 2 threads, neutral
in onnxruntime; docs/deployment.md); the other formulations, and any other activation, apply it to the output.

``gather`` keeps the batch free unless told it is a constant of the export (``static_batch_export()``, which the
plugin enters around Ultralytics' ONNX, OpenVINO and TensorRT exports without ``dynamic=True``): then each sample's
pixels meet only its own filters, one conv's work at any batch instead of B convs'.

A formulation can be forced for one export, for a runtime that lacks an operator (NCNN: no NonZero), with
``export_formulation("responses")`` around the export or ``DRCONV_YOLO_EXPORT=responses`` in the environment.
"""

from __future__ import annotations

import contextlib
import os
from typing import Callable, Iterator, Optional

import torch.nn as nn

from .export_gather import gather_conv
from .export_mix import mix_export_conv
from .export_responses import responses_conv
from .filters import MixedFilters

__all__ = ["EXPORT_FORMULATIONS", "EXPORT_ENV", "ROW_ACTIVATIONS", "choose_export", "export_conv", "export_formulation",
           "static_batch_export"]  # fmt: skip

EXPORT_FORMULATIONS = ("auto", "mix", "gather", "responses")
EXPORT_ENV = "DRCONV_YOLO_EXPORT"  # forces a formulation for every export of the process
EXPORT_MIX_MAX_BASES = 1  # "auto" exports mixed filters of at most this many bases by the mix formulation

# activation modules that act on each element alone, so that applying them to rows in any order is exact
ROW_ACTIVATIONS = (nn.Identity, nn.SiLU, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid,
                   nn.Tanh, nn.GELU, nn.Mish, nn.ELU)  # fmt: skip

_forced: list = []  # the innermost export_formulation() context's choice
_static: list = []  # the innermost static_batch_export() context's flag


def _check(name: str, where: str) -> str:
    if name not in EXPORT_FORMULATIONS:
        raise ValueError(f"{where}: the export formulation must be one of {list(EXPORT_FORMULATIONS)}, got {name!r}")
    return name


@contextlib.contextmanager
def export_formulation(name: str) -> Iterator[None]:
    """Export every DRConv by formulation ``name`` (one of ``EXPORT_FORMULATIONS``) while inside."""
    _forced.append(_check(name, "export_formulation"))
    try:
        yield
    finally:
        _forced.pop()


@contextlib.contextmanager
def static_batch_export(static: bool = True) -> Iterator[None]:
    """Trace every DRConv for an export whose batch size is a constant while inside (``static=False``: a free batch,
    the default outside).

    A graph traced so runs at the traced batch size only: for files that fix their input shape (ONNX without dynamic
    axes, a static OpenVINO model, a TensorRT engine), not for a TorchScript module run at other batch sizes.
    """
    _static.append(bool(static))
    try:
        yield
    finally:
        _static.pop()


def static_batch() -> bool:
    """Whether the innermost ``static_batch_export`` context says the batch is a constant (False outside any)."""
    return bool(_static and _static[-1])


def requested_formulation() -> str:
    """The formulation asked for: the innermost ``export_formulation`` context's, else ``$DRCONV_YOLO_EXPORT``, else
    ``"auto"``."""
    if _forced:
        return _forced[-1]
    return _check(os.environ.get(EXPORT_ENV, "auto") or "auto", f"${EXPORT_ENV}")


def choose_export(bases: Optional[int], requested: Optional[str] = None) -> str:
    """The formulation an export of these filters takes.

    Args:
        bases (int, optional): The number of bases n of mixed filters; None for explicit filters.
        requested (str, optional): ``"auto"`` (the rule) or a formulation; default ``requested_formulation()``.

    Returns:
        (str): ``"mix"``, ``"gather"`` or ``"responses"``.

    Raises:
        ValueError: ``"mix"`` requested for explicit filters (the paper's generator has no bases).
    """
    requested = requested_formulation() if requested is None else _check(requested, "choose_export")
    if requested == "mix" and bases is None:
        raise ValueError(
            "export formulation 'mix' needs mixed filters (the official generator); explicit per-sample filters "
            "(generator 'paper') export by 'gather' or 'responses'"
        )
    if requested != "auto":
        return requested
    return "mix" if bases is not None and bases <= EXPORT_MIX_MAX_BASES else "gather"


def export_conv(x, filters, guide, stride, padding, dilation, bias=None, formulation: Optional[str] = None,
                activation: Optional[Callable] = None):  # fmt: skip
    """Region-aware convolution by an export formulation (``choose_export``), standard ops only.

    Args:
        x (torch.Tensor): (B, C_in, H, W).
        filters (ExplicitFilters | MixedFilters): The filter description.
        guide (torch.Tensor): (B, m, Ho, Wo).
        stride, padding, dilation (tuple): The checked geometry's pairs.
        bias (torch.Tensor, optional): (C_out,).
        formulation (str, optional): As ``choose_export``'s ``requested``.
        activation (callable, optional): Applied to the output (``gather``: to each region's product if it is one of
            ``ROW_ACTIVATIONS``).

    Returns:
        (torch.Tensor): (B, C_out, Ho, Wo).
    """
    mixed = isinstance(filters, MixedFilters)
    name = choose_export(filters.bases.shape[0] if mixed else None, formulation)
    conf = (stride, padding, dilation)
    if name == "mix":
        out = mix_export_conv(x, filters.coef, filters.bases.to(x.dtype), guide, *conf)
    elif name == "gather":
        kernel = tuple(int(k) for k in filters.shape[4:])
        rows = filters.rows_matrix().to(x.dtype)  # (B, m, C_out, K)
        bias = None if bias is None else bias.to(x.dtype)
        on_rows = activation is None or isinstance(activation, ROW_ACTIVATIONS)
        out = gather_conv(x, rows, guide, kernel, *conf, bias, activation if on_rows else None, static_batch())
        return out if on_rows else activation(out)
    else:
        out = responses_conv(x, filters.materialise().to(x.dtype), guide, *conf)
    out = out if bias is None else out + bias.to(out.dtype).view(1, -1, 1, 1)
    return out if activation is None else activation(out)
