"""Segment matrix products: the grouped path's two products over rows sorted by group, with the group sizes on the
device.

``segment_mm(a, b, ends)``: rows of group g times group g's matrix, (N, K) x (G, K, C) -> (N, C).
``segment_mm_tn(a, b, ends)``: per group, its rows of a transposed times its rows of b, (N, K), (N, C) -> (G, K, C).

Group g owns rows [ends[g-1], ends[g]) (``ends`` int32 cumulative; a group may be empty). Three kernels stand behind
the two calls, picked by ``segment_kernel``:

``grouped_mm``
    ``torch._grouped_mm`` where the device and dtype have it (float32/bfloat16/float16 on CPU, bfloat16 on CUDA from
    sm90) and the operands meet its 16-byte alignment.
``triton``
    Elsewhere on CUDA (float32 and float16, Ultralytics' AMP dtype; bfloat16 before sm90), two Triton kernels that
    read the group boundaries on the device: ``segment_mm`` runs one program per tile of ``BLOCK_M`` rows of one group
    (the tile table is built with torch ops on the device, its length bounded by cdiv(N, BLOCK_M) + G from the
    shapes alone), ``segment_mm_tn`` one program per (group, tile of K, tile of C), looping over the group's rows.
    No host synchronisation and no Python loop over groups. float32 products are full precision (``ieee``), as
    torch.mm's default; accumulation is float32 (float64 for float64). On CPU the same kernels run in Triton's
    interpreter when ``TRITON_ON_CPU`` is set (the tests do), so this path is checked here against the loop.
``loop``
    One torch.mm per group: float64 (the tests' dtype), misaligned operands on CPU, and wherever Triton is missing or
    failed to compile; it reads the ends on the host once per call (nothing on CPU, a synchronisation on a GPU).
"""

from __future__ import annotations

import functools
import warnings

import torch

# torch._grouped_mm needs every non-unit stride (and the data pointer) to be a multiple of this many bytes.
GROUPED_MM_ALIGN = 16
# where torch._grouped_mm runs: device type -> dtypes; CUDA's kernel also needs compute capability >= CUDA_MIN_SM
GROUPED_MM_DTYPES = {
    "cpu": (torch.float32, torch.bfloat16, torch.float16),
    "cuda": (torch.bfloat16,),
}
CUDA_MIN_SM = (9, 0)
# where the Triton kernels run on CUDA (float64 takes the loop: its products are tests' business, not a GPU's)
TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# Run the Triton kernels on CPU tensors in Triton's interpreter (numpy; slow, for tests).
TRITON_ON_CPU = False
# tile sizes: rows per program, output columns per program, the reduction's step
BLOCK_M, BLOCK_N, BLOCK_K = 64, 64, 32


def _aligned(t: torch.Tensor) -> bool:
    """Whether a matrix operand meets ``torch._grouped_mm``'s alignment rule."""
    size = t.element_size()
    return t.data_ptr() % GROUPED_MM_ALIGN == 0 and all(
        s * size % GROUPED_MM_ALIGN == 0 for s, n in zip(t.stride(), t.shape) if s != 1 and n > 1
    )


def grouped_mm_supported(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether ``torch._grouped_mm`` runs for this device and dtype (alignment is checked per call).

    Args:
        device (torch.device): The operands' device.
        dtype (torch.dtype): The operands' dtype.

    Returns:
        (bool): True where the kernel exists.
    """
    if not hasattr(torch, "_grouped_mm") or dtype not in GROUPED_MM_DTYPES.get(device.type, ()):
        return False
    return device.type != "cuda" or torch.cuda.get_device_capability(device) >= CUDA_MIN_SM


@functools.lru_cache(maxsize=1)
def triton_available() -> bool:
    """Whether Triton 3 or later can be imported (it ships with torch's CUDA builds on Linux)."""
    try:
        import triton
    except ImportError:
        return False
    return int(triton.__version__.split(".")[0]) >= 3


_triton_failed: list = []  # the first launch error on CUDA, after which the loop serves (see _launch)


def segment_kernel(device: torch.device, dtype: torch.dtype, aligned: bool = True) -> str:
    """The kernel that multiplies operands of this device and dtype (module docstring).

    Args:
        device (torch.device): The operands' device.
        dtype (torch.dtype): Their dtype.
        aligned (bool): Whether both meet ``torch._grouped_mm``'s alignment rule.

    Returns:
        (str): ``"grouped_mm"``, ``"triton"`` or ``"loop"``.
    """
    if aligned and grouped_mm_supported(device, dtype):
        return "grouped_mm"
    wanted = (device.type == "cuda" and dtype in TRITON_DTYPES) or (device.type == "cpu" and TRITON_ON_CPU)
    # (Triton is imported only where it is wanted: a CPU run never loads it)
    return "triton" if wanted and not _triton_failed and triton_available() else "loop"


def _kernel_for(a: torch.Tensor, b: torch.Tensor) -> str:
    return segment_kernel(a.device, a.dtype, _aligned(a) and _aligned(b))


def segment_mm(a: torch.Tensor, b: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
    """Rows of group g times group g's matrix: a (N, K), b (G, K, C), ends (G,) int32 cumulative -> (N, C).

    Rows after ``ends[-1]`` are left unwritten.
    """
    kernel = _kernel_for(a, b)
    if kernel == "grouped_mm":
        return torch._grouped_mm(a, b, offs=ends)
    out = a.new_empty(a.shape[0], b.shape[2])  # (N, C)
    if kernel == "triton" and _launch(_triton_mm, a, b, ends, out):
        return out
    start = 0
    for g, end in enumerate(ends.tolist()):  # the loop's one host synchronisation
        if end > start:
            torch.mm(a[start:end], b[g], out=out[start:end])
        start = end
    return out


def segment_mm_tn(a: torch.Tensor, b: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
    """Per group g, a[rows of g].T @ b[rows of g]: a (N, K), b (N, C), ends (G,) -> (G, K, C); empty groups give 0."""
    kernel = _kernel_for(a.t(), b)
    if kernel == "grouped_mm":
        return torch._grouped_mm(a.t(), b, offs=ends)
    if kernel == "triton":
        out = a.new_empty(ends.shape[0], a.shape[1], b.shape[1])  # (G, K, C), every element written
        if _launch(_triton_mm_tn, a, b, ends, out):
            return out
    out = a.new_zeros(ends.shape[0], a.shape[1], b.shape[1])  # (G, K, C)
    start = 0
    for g, end in enumerate(ends.tolist()):  # the loop's one host synchronisation
        if end > start:
            torch.mm(a[start:end].t(), b[start:end], out=out[g])
        start = end
    return out


def _launch(run, a, b, ends, out) -> bool:
    """Run a Triton kernel; on CUDA a failure to compile or launch (a Triton too old or too new for these kernels)
    is reported once and the loop serves from then on (False). On CPU (tests) it raises."""
    try:
        run(a, b, ends, out)
        return True
    except torch.cuda.OutOfMemoryError:
        raise
    except Exception as err:  # noqa: BLE001 (Triton's compile errors have no common base class)
        if a.device.type != "cuda":
            raise
        _triton_failed.append(err)
        warnings.warn(
            f"drconv_yolo: the Triton segment-matmul kernel failed ({type(err).__name__}: {err}); the grouped path "
            "falls back to one matmul per group, which reads the group sizes back to the host",
            RuntimeWarning,
            stacklevel=3,
        )
        return False


def _tile_table(ends: torch.Tensor, n_rows: int, block: int):
    """segment_mm's programs, on the device: (group, first row) per tile of ``block`` rows of one group, for
    cdiv(n_rows, block) + G tiles (enough for any group sizes); tiles past the last are group -1."""
    ends = ends.long()
    G = ends.shape[0]
    starts = torch.cat([ends.new_zeros(1), ends[:-1]])  # (G,)
    tiles = (ends - starts + block - 1) // block  # (G,) tiles of each group
    tile_end = tiles.cumsum(0)  # (G,)
    t = torch.arange(-(-n_rows // block) + G, device=ends.device)  # (T,)
    group = torch.searchsorted(tile_end, t, right=True)  # (T,) in [0, G]; G past the last tile
    valid = group < G
    g = group.clamp(max=G - 1)
    first_row = starts[g] + (t - (tile_end[g] - tiles[g])) * block  # (T,)
    return torch.where(valid, group, -1).to(torch.int32), first_row, ends


def _triton_mm(a, b, ends, out):
    """segment_mm by the tile kernel: a (N, K), b (G, K, C) any strides, out (N, C)."""
    kernel = _kernels(a.device.type)[0]
    N, K = a.shape
    C = b.shape[2]
    group, first_row, ends64 = _tile_table(ends, N, BLOCK_M)
    grid = (group.shape[0], -(-C // BLOCK_N))
    kernel[grid](
        a, b, out, group, first_row, ends64, K, C,
        *a.stride(), *b.stride(), *out.stride(),
        **_constants(a.dtype),
    )  # fmt: skip


def _triton_mm_tn(a, b, ends, out):
    """segment_mm_tn by the per-group kernel: a (N, K), b (N, C) any strides, out (G, K, C)."""
    kernel = _kernels(a.device.type)[1]
    K, C, G = a.shape[1], b.shape[1], ends.shape[0]
    ends64 = ends.long()
    starts = torch.cat([ends64.new_zeros(1), ends64[:-1]])
    grid = (G, -(-K // BLOCK_M), -(-C // BLOCK_N))
    kernel[grid](
        a, b, out, starts, ends64, K, C,
        *a.stride(), *b.stride(), *out.stride(),
        **_constants(a.dtype),
    )  # fmt: skip


def _constants(dtype: torch.dtype) -> dict:
    import triton.language as tl

    wide = dtype == torch.float64
    return dict(
        BM=BLOCK_M,
        BN=BLOCK_N,
        BK=BLOCK_K,
        ACC=tl.float64 if wide else tl.float32,
        PREC="ieee" if dtype in (torch.float32, torch.float64) else None,
    )


@functools.lru_cache(maxsize=2)
def _kernels(device_type: str) -> tuple:
    """The two kernels, compiled by Triton for a GPU or wrapped by its interpreter for CPU tensors."""
    from . import segment_mm_triton as kernels

    if device_type == "cpu":
        from triton.runtime.interpreter import InterpretedFunction

        return InterpretedFunction(kernels.mm), InterpretedFunction(kernels.mm_tn)
    import triton

    return triton.jit(kernels.mm), triton.jit(kernels.mm_tn)
