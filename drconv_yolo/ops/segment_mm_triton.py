"""The Triton kernels behind ``segment_mm`` (see that module): plain functions, compiled with ``triton.jit`` for a
GPU or wrapped by Triton's interpreter for CPU tensors by ``segment_mm._kernels``. Imported only when used.

Offsets that can pass 2**31 (row indices times row strides) are int64: the row indices come from int64 tensors.
"""

import triton.language as tl


def mm(
    a, b, out, tile_group, tile_row, ends, K, C,
    sa0, sa1, sb0, sb1, sb2, so0, so1,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, ACC: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    # one tile of BM rows of one group g (all its rows in [row0, end)) times BN columns of g's matrix
    t, n = tl.program_id(0), tl.program_id(1)
    g = tl.load(tile_group + t)
    if g >= 0:
        row0 = tl.load(tile_row + t)
        end = tl.load(ends + g)
        rows = row0 + tl.arange(0, BM)  # (BM,) int64
        cols = n * BN + tl.arange(0, BN)  # (BN,)
        ks = tl.arange(0, BK)
        acc = tl.full((BM, BN), 0, dtype=ACC)  # (tl.full: a builtin, which the interpreter also runs)
        for k0 in range(0, K, BK):
            k = k0 + ks
            x = tl.load(
                a + rows[:, None] * sa0 + k[None, :] * sa1,
                mask=(rows[:, None] < end) & (k[None, :] < K),
                other=0.0,
            )  # (BM, BK)
            w = tl.load(
                b + g.to(tl.int64) * sb0 + k[:, None] * sb1 + cols[None, :] * sb2,
                mask=(k[:, None] < K) & (cols[None, :] < C),
                other=0.0,
            )  # (BK, BN)
            acc += tl.dot(x, w, input_precision=PREC, out_dtype=ACC)
        mask = (rows[:, None] < end) & (cols[None, :] < C)
        tl.store(out + rows[:, None] * so0 + cols[None, :] * so1, acc.to(out.dtype.element_ty), mask=mask)


def mm_tn(
    a, b, out, starts, ends, K, C,
    sa0, sa1, sb0, sb1, so0, so1, so2,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, ACC: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    # out[g, BM rows of K, BN columns of C] = sum over g's rows r of a[r, k] * b[r, c], BK rows at a time
    g, i, n = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    start = tl.load(starts + g)
    end = tl.load(ends + g)
    ks = i * BM + tl.arange(0, BM)  # (BM,) output rows: a's columns
    cols = n * BN + tl.arange(0, BN)  # (BN,)
    rs = tl.arange(0, BK)
    acc = tl.full((BM, BN), 0, dtype=ACC)  # (tl.full: a builtin, which the interpreter also runs)
    for r0 in range(start, end, BK):
        r = r0 + rs  # (BK,) int64
        x = tl.load(
            a + r[None, :] * sa0 + ks[:, None] * sa1,
            mask=(r[None, :] < end) & (ks[:, None] < K),
            other=0.0,
        )  # (BM, BK)
        y = tl.load(
            b + r[:, None] * sb0 + cols[None, :] * sb1,
            mask=(r[:, None] < end) & (cols[None, :] < C),
            other=0.0,
        )  # (BK, BN)
        acc += tl.dot(x, y, input_precision=PREC, out_dtype=ACC)
    mask = (ks[:, None] < K) & (cols[None, :] < C)
    dst = out + g.to(tl.int64) * so0 + ks[:, None] * so1 + cols[None, :] * so2
    tl.store(dst, acc.to(out.dtype.element_ty), mask=mask)
