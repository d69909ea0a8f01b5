"""The grouped path's segment products (ops/segment_mm.py): the Triton kernels, run here in Triton's interpreter,
against one mm per group (float64 to 1e-12, float32 to 1e-5 relative), their tile table, the rule that picks a
kernel, and the fallback when Triton fails on a GPU. The same kernels compiled for CUDA are checked where a GPU is."""

import subprocess
import sys
import types
import warnings

import pytest
import torch

from drconv_yolo.ops import segment_mm as S

pytestmark = pytest.mark.skipif(not S.triton_available(), reason="needs Triton 3")

# group sizes: empty groups (first, inside, last), one row, a group longer than a tile, sizes off the tile grid
COUNTS = [0, 5, S.BLOCK_M + 7, 1, 0, 2 * S.BLOCK_M + 3, 0]


def _groups(counts, device="cpu"):
    return torch.tensor(counts, device=device).cumsum(0).to(torch.int32)  # ends


def _operands(counts, K, C, dtype, device="cpu", seed=0):
    """a (N, K), b (G, K, C) as a transposed view (the grouped path's filters), b_rows (N, C)."""
    g = torch.Generator().manual_seed(seed)
    N, G = sum(counts), len(counts)
    a = torch.randn(N, K, generator=g, dtype=dtype)
    b = torch.randn(G, C, K, generator=g, dtype=dtype).transpose(1, 2)
    b_rows = torch.randn(N, C, generator=g, dtype=dtype)
    return a.to(device), b.to(device), b_rows.to(device)


def _loop_mm(a, b, ends):
    out, start = torch.full((a.shape[0], b.shape[2]), float("nan"), dtype=a.dtype), 0
    for g, end in enumerate(ends.tolist()):
        out[start:end] = a[start:end] @ b[g]
        start = end
    return out


def _loop_mm_tn(a, b, ends):
    out, start = torch.zeros(len(ends), a.shape[1], b.shape[1], dtype=a.dtype), 0
    for g, end in enumerate(ends.tolist()):
        out[g] = a[start:end].t() @ b[start:end]
        start = end
    return out


@pytest.mark.parametrize("K, C", [(37, 29), (S.BLOCK_K, S.BLOCK_N), (2 * S.BLOCK_M + 1, 3)])
def test_triton_segment_mm_matches_one_mm_per_group_float64(K, C, triton_kernels):
    a, b, _ = _operands(COUNTS, K, C, torch.float64)
    ends = _groups(COUNTS)
    got = S.segment_mm(a, b, ends)
    assert triton_kernels == ["_triton_mm"]
    torch.testing.assert_close(got, _loop_mm(a, b, ends), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("K, C", [(37, 29), (2 * S.BLOCK_M + 1, S.BLOCK_N + 1)])
def test_triton_segment_mm_tn_matches_one_mm_per_group_and_zeroes_empty_groups_float64(K, C, triton_kernels):
    a, _, b_rows = _operands(COUNTS, K, C, torch.float64)
    ends = _groups(COUNTS)
    got = S.segment_mm_tn(a, b_rows, ends)
    assert triton_kernels == ["_triton_mm_tn"]
    torch.testing.assert_close(got, _loop_mm_tn(a, b_rows, ends), rtol=1e-12, atol=1e-12)
    empty = [g for g, n in enumerate(COUNTS) if n == 0]
    assert torch.count_nonzero(got[empty]) == 0


def test_triton_segment_products_float32_close_to_float64(triton_kernels):
    a, b, b_rows = _operands(COUNTS, 40, 24, torch.float64)
    ends = _groups(COUNTS)
    exact_mm, exact_tn = _loop_mm(a, b, ends), _loop_mm_tn(a, b_rows, ends)
    got_mm = S.segment_mm(a.float(), b.float(), ends)
    got_tn = S.segment_mm_tn(a.float(), b_rows.float(), ends)
    assert got_mm.dtype == got_tn.dtype == torch.float32 and len(triton_kernels) == 2
    torch.testing.assert_close(got_mm.double(), exact_mm, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_tn.double(), exact_tn, rtol=1e-5, atol=1e-4)


def test_triton_segment_mm_leaves_rows_after_the_last_group_unwritten(triton_kernels):
    # the grouped path's blocks may hand over more rows than the groups hold; those rows are never read back
    a, b, _ = _operands([3, 4], 8, 5, torch.float64)
    got = S.segment_mm(torch.cat([a, torch.randn(6, 8, dtype=a.dtype)]), b, _groups([3, 4]))
    torch.testing.assert_close(got[:7], _loop_mm(a, b, _groups([3, 4])), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_tile_table_covers_every_row_once_within_its_bound(seed):
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(0, 3 * 8, (12,), generator=g)
    counts[torch.randint(0, 12, (3,), generator=g)] = 0  # some empty groups
    ends = counts.cumsum(0).to(torch.int32)
    N = int(ends[-1]) + 5  # rows after the last group: not covered
    group, first_row, ends64 = S._tile_table(ends, N, 8)
    assert group.shape[0] == -(-N // 8) + 12  # cdiv(N, block) + G: from the shapes alone
    covered = torch.zeros(N, dtype=torch.long)
    for t, r0 in zip(group.tolist(), first_row.tolist()):
        if t >= 0:
            start = 0 if t == 0 else int(ends64[t - 1])
            end = int(ends64[t])
            assert start <= r0 < end  # a tile starts inside its own group
            covered[r0 : min(r0 + 8, end)] += 1
    assert covered[: int(ends[-1])].eq(1).all() and covered[int(ends[-1]) :].eq(0).all()


@pytest.mark.parametrize(
    "device, dtype, aligned, triton_triton_kernels, expected",
    [
        ("cpu", torch.float32, True, False, "grouped_mm"),
        ("cpu", torch.float32, False, False, "loop"),  # misaligned for torch._grouped_mm
        ("cpu", torch.float64, True, False, "loop"),
        ("cpu", torch.float64, True, True, "triton"),  # the tests' interpreter
        ("cuda", torch.bfloat16, True, False, "grouped_mm"),  # sm90 (below)
        ("cuda", torch.float16, True, False, "triton"),  # Ultralytics' AMP dtype
        ("cuda", torch.float32, True, False, "triton"),
        ("cuda", torch.float64, True, False, "loop"),
    ],
)
def test_segment_kernel_rule(device, dtype, aligned, triton_triton_kernels, expected, monkeypatch):
    monkeypatch.setattr(S, "TRITON_ON_CPU", triton_triton_kernels)
    monkeypatch.setattr(S, "_triton_failed", [])
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert S.segment_kernel(torch.device(device), dtype, aligned) == expected


def test_segment_kernel_bfloat16_before_sm90_takes_triton(monkeypatch):
    monkeypatch.setattr(S, "_triton_failed", [])
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    assert S.segment_kernel(torch.device("cuda"), torch.bfloat16) == "triton"


def test_triton_failure_on_cuda_warns_once_and_the_loop_serves_from_then_on(monkeypatch):
    monkeypatch.setattr(S, "_triton_failed", [])
    fake_cuda = types.SimpleNamespace(device=torch.device("cuda"))

    def broken(*args):
        raise RuntimeError("no kernel for this GPU")

    with pytest.warns(RuntimeWarning, match="Triton segment-matmul kernel failed.*no kernel for this GPU"):
        assert S._launch(broken, fake_cuda, None, None, None) is False
    assert S.segment_kernel(torch.device("cuda"), torch.float16) == "loop"


def test_triton_failure_triton_kernels_raises(triton_kernels):
    def broken(*args):
        raise RuntimeError("interpreter bug")

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RuntimeError, match="interpreter bug"):
            S._launch(broken, torch.zeros(1), None, None, None)
    assert S._triton_failed == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_triton_segment_products_on_cuda_match_float64(dtype, monkeypatch):
    monkeypatch.setattr(S, "_triton_failed", [])
    monkeypatch.setattr(S, "grouped_mm_supported", lambda device, dtype: False)  # the Triton kernels, every dtype
    a, b, b_rows = _operands(COUNTS, 72, 40, torch.float64)
    ends = _groups(COUNTS)
    exact_mm, exact_tn = _loop_mm(a, b, ends), _loop_mm_tn(a, b_rows, ends)
    cast = [t.to("cuda", dtype) for t in (a, b, b_rows)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fallback to the loop would warn
        got_mm = S.segment_mm(cast[0], cast[1], ends.cuda()).double().cpu()
        got_tn = S.segment_mm_tn(cast[0], cast[2], ends.cuda()).double().cpu()
    tol = 1e-5 if dtype == torch.float32 else 5e-2
    torch.testing.assert_close(got_mm, exact_mm, rtol=tol, atol=tol * 10)
    torch.testing.assert_close(got_tn, exact_tn, rtol=tol, atol=tol * 10)


def test_cpu_products_never_import_triton():
    # Triton is a GPU compiler: a CPU user's process must not pay for loading it
    code = (
        "import sys, torch\n"
        "from drconv_yolo.ops import segment_mm as S\n"
        "a = torch.randn(7, 5, dtype=torch.float64)\n"
        "S.segment_mm(a, torch.randn(2, 5, 3, dtype=torch.float64), torch.tensor([3, 7], dtype=torch.int32))\n"
        "S.segment_mm(a[:, :3].float(), torch.randn(2, 3, 3), torch.tensor([3, 7], dtype=torch.int32))\n"
        "assert 'triton' not in sys.modules, 'triton was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
