"""Scratch memory reused from call to call: the inference paths' large temporaries on CPU.

A fresh tensor of a few MiB is fresh pages on CPU: the allocator maps them from the kernel, which faults and zeroes
each 4 KiB page on first touch. For the op's temporaries (a padded input copy, the patch rows, the sorted output:
several times the output's size) that costs more than the arithmetic: on a 2-core VM, 7 000 page faults and 34 ms
per call of a 16->32 layer at 320 px, batch 1, where nn.Conv2d (no temporaries) takes 3 ms. ``scratch`` hands out
views of buffers kept per thread and grown when a larger one is asked for, so in steady state nothing is mapped.

Rules for callers: a scratch tensor lives until the next request for the same slot in the same thread, so it must
never be returned, saved for backward or kept by a caller; each temporary that is alive at the same time as another
takes its own slot. Only the CPU uses it: CUDA's caching allocator already reuses memory.
"""

from __future__ import annotations

import threading
from math import prod
from typing import Sequence

import torch

_local = threading.local()


def scratch(slot: str, shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An uninitialised tensor of ``shape`` for a temporary, reused from call to call on CPU.

    Args:
        slot (str): The temporary's name; tensors alive at the same time need different slots.
        shape (Sequence[int]): Its shape (contiguous).
        dtype (torch.dtype): Its dtype.
        device (torch.device): Its device; anything but the CPU gets a plain ``torch.empty``.

    Returns:
        (torch.Tensor): The tensor, valid until the next ``scratch`` call for the same slot in this thread.
    """
    if device.type != "cpu":
        return torch.empty(shape, dtype=dtype, device=device)
    buffers = _buffers()
    # an inference tensor (made under torch.inference_mode) may not be written outside it, so each mode has its own
    numel, key = prod(shape), (slot, dtype, torch.is_inference_mode_enabled())
    buffer = buffers.get(key)
    if buffer is None or buffer.numel() < numel:
        buffer = buffers[key] = torch.empty(numel, dtype=dtype)
    return buffer[:numel].view(shape)


def scratch_bytes() -> int:
    """The bytes this thread's scratch buffers hold."""
    return sum(b.numel() * b.element_size() for b in _buffers().values())


def release_scratch() -> None:
    """Free this thread's scratch buffers (they are allocated again when next needed)."""
    _buffers().clear()


def _buffers() -> dict:
    if not hasattr(_local, "buffers"):
        _local.buffers = {}
    return _local.buffers
