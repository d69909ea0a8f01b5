"""What every implementation of the op shares: argument checks, the checked geometry, dtypes, the guide surrogate, and
the regions (argmax of the guide) with their sort keys."""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence, Tuple, Union

import torch

IntOrPair = Union[int, Sequence[int]]
Pair = Tuple[int, int]

# The surrogate's softmax and its dot products run in at least this precision: in half precision the softmax of
# well-separated logits rounds the small probabilities (and so their gradients) to zero.
GRAD_DTYPE_FLOOR = torch.float32


class Geometry(NamedTuple):
    """A checked convolution geometry, every field an (h, w) pair; kernel and out_hw are None while tracing."""

    stride: Pair
    padding: Pair
    dilation: Pair
    kernel: Optional[Pair]
    out_hw: Optional[Pair]


def _pair(value: IntOrPair, name: str) -> Pair:
    """Return ``value`` as a pair of ints, checking it."""
    pair = (value, value) if isinstance(value, int) else tuple(int(v) for v in value)
    if len(pair) != 2:
        raise ValueError(f"region_aware_conv2d: {name} must be an int or a pair of ints, got {value!r}")
    return pair


def output_size(size: int, k: int, stride: int, padding: int, dilation: int) -> int:
    """Spatial output size of a convolution along one axis (same formula as ``nn.Conv2d``).

    Args:
        size (int): Input size along the axis.
        k (int): Kernel size.
        stride (int): Stride.
        padding (int): Zero padding on each side.
        dilation (int): Kernel dilation.

    Returns:
        (int): The output size.
    """
    return (size + 2 * padding - dilation * (k - 1) - 1) // stride + 1


def is_tracing() -> bool:
    """True while tracing, scripting or exporting to ONNX: shapes are symbolic and only standard ops may run.

    Returns:
        (bool): Whether the op must take the export path.
    """
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return True
    onnx = getattr(torch, "onnx", None)
    return bool(onnx is not None and hasattr(onnx, "is_in_onnx_export") and onnx.is_in_onnx_export())


def check_args(input, filters, guide, stride, padding, dilation) -> Geometry:
    """Validate ranks, shapes and hyper-parameters of one call; return its geometry.

    Args:
        input (torch.Tensor): (B, C_in, H, W).
        filters (ExplicitFilters | MixedFilters): The filter description, whose ``shape`` is (B, m, C_out, C_in, k, k).
        guide (torch.Tensor): (B, m, H_out, W_out).
        stride, padding, dilation (int | tuple): As ``region_aware_conv2d``.

    Returns:
        (Geometry): The pairs, with the kernel and output size (None while tracing: shapes are symbolic then).
    """
    stride, padding, dilation = _pair(stride, "stride"), _pair(padding, "padding"), _pair(dilation, "dilation")
    if min(stride) < 1 or min(dilation) < 1 or min(padding) < 0:
        raise ValueError(
            f"region_aware_conv2d: need stride >= 1, dilation >= 1, padding >= 0; got stride={stride}, "
            f"padding={padding}, dilation={dilation}"
        )
    if is_tracing():  # shapes are symbolic while tracing: checked in eager mode only
        return Geometry(stride, padding, dilation, None, None)
    if input.dim() != 4:
        raise ValueError(f"region_aware_conv2d: input must be (B, C_in, H, W), got shape {tuple(input.shape)}")
    filters.check()
    if guide.dim() != 4:
        raise ValueError(f"region_aware_conv2d: guide must be (B, m, H_out, W_out), got shape {tuple(guide.shape)}")
    B, C, H, W = input.shape
    Bw, m, _, Cw, kh, kw = filters.shape
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
    return Geometry(stride, padding, dilation, (kh, kw), (Ho, Wo))


def check_bias(bias: Optional[torch.Tensor], C_out: int) -> None:
    """Raise unless ``bias`` is None or (C_out,)."""
    if bias is not None and tuple(bias.shape) != (C_out,):
        raise ValueError(f"region_aware_conv2d: bias must have shape ({C_out},), got {tuple(bias.shape)}")


def autocast_enabled(device_type: str) -> bool:
    """Whether autocast is on for ``device_type`` ("cpu", "cuda", ...)."""
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4 takes no device argument
        return torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()


def compute_dtype(input: torch.Tensor) -> torch.dtype:
    """The autocast dtype when autocast is on for the input's device, else the input's dtype.

    Args:
        input (torch.Tensor): The op's input.

    Returns:
        (torch.dtype): The dtype the op computes in.
    """
    device_type = input.device.type
    if not autocast_enabled(device_type):
        return input.dtype
    if hasattr(torch, "get_autocast_dtype"):
        return torch.get_autocast_dtype(device_type)
    return torch.get_autocast_cpu_dtype() if device_type == "cpu" else torch.get_autocast_gpu_dtype()


def records_grad(*tensors: Optional[torch.Tensor]) -> bool:
    """Whether autograd records an op on ``tensors`` (None entries skipped): grad mode is on and one requires grad.

    The op's forward-only branches (and their scratch memory) are taken exactly when this is False.
    """
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def grad_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the guide gradient is computed in: ``dtype``, or ``GRAD_DTYPE_FLOOR`` if that is wider."""
    return torch.promote_types(dtype, GRAD_DTYPE_FLOOR)


def guide_grad(guide: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """The paper's surrogate: the softmax Jacobian applied to g, in ``grad_dtype``.

    Args:
        guide (torch.Tensor): Guide logits (B, m, Ho, Wo).
        g (torch.Tensor): g_j(p) = sum_o dL/dY[o, p] * (W_j conv X)[o, p], (B, m, Ho, Wo).

    Returns:
        (torch.Tensor): dL/dguide (B, m, Ho, Wo) in the guide's dtype.
    """
    dtype = grad_dtype(guide.dtype)
    s = torch.softmax(guide.to(dtype), dim=1)  # (B, m, Ho, Wo)
    g = g.to(dtype)
    return (s * (g - (s * g).sum(1, keepdim=True))).to(guide.dtype)


def argmax_regions(guide):
    """``guide.argmax(1)`` for (B, m, Ho, Wo); ties go to the lowest index, as ``torch.argmax``.

    A channels-last guide (what the guide conv returns for a channels-last input) reduces over contiguous memory; any
    other layout takes m - 1 elementwise passes, as a strided argmax is slow on CPU.

    Args:
        guide (torch.Tensor): Guide logits (B, m, Ho, Wo).

    Returns:
        (torch.Tensor): The region of every output pixel, (B, Ho, Wo) long.
    """
    if guide.is_contiguous(memory_format=torch.channels_last):
        return guide.argmax(1)
    best, region = guide[:, 0], torch.zeros_like(guide[:, 0], dtype=torch.long)
    for j in range(1, guide.shape[1]):
        better = guide[:, j] > best
        best = torch.where(better, guide[:, j], best)
        region = region.masked_fill(better, j)
    return region  # (B, Ho, Wo)


def sort_keys(region: torch.Tensor, m: int) -> torch.Tensor:
    """Every output pixel's (sample, region) key ``b * m + region``, sample-major, (B*L,), for one stable sort of the
    batch, in the narrowest integer dtype that holds B*m keys: a stable sort of uint8 keys on CPU takes about a third
    of the time of int64 ones for B*L = 204800 (1.0 against 3.8 ms; 1.1 against 1.5 ms for 25600, 2 threads).

    Args:
        region (torch.Tensor): The region of every output pixel, (B, L) integer in [0, m).
        m (int): The number of regions.

    Returns:
        (torch.Tensor): The keys, (B*L,), uint8, int16, int32 or int64.
    """
    B = region.shape[0]
    dtype = next(t for t in (torch.uint8, torch.int16, torch.int32, torch.int64) if B * m - 1 <= torch.iinfo(t).max)
    key = region.to(dtype)
    if B > 1:
        key = key + torch.arange(0, B * m, m, device=region.device, dtype=dtype).view(B, 1)
    return key.flatten()
