"""Helpers shared by the op and model tests (plain functions, not fixtures)."""

import contextlib

import torch
import torch.nn as nn

# every way a tensor's values reach Python: a device synchronisation on a GPU
HOST_READS = ("item", "tolist", "nonzero", "__bool__", "__int__", "__float__", "__index__")


def randomize_bn(model: nn.Module) -> None:
    """Give every BatchNorm of ``model`` non-trivial statistics and affine parameters, so fusing is really tested."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)


def tensors(out) -> list:
    """Every tensor in a (nested) model output."""
    if torch.is_tensor(out):
        return [out]
    values = out.values() if isinstance(out, dict) else out
    return [t for v in values for t in tensors(v)]


@contextlib.contextmanager
def forbid_host_sync(monkeypatch, what: str):
    """Within the block, reading a tensor's values back to Python raises an AssertionError naming ``what``."""

    def forbidden(*args, **kwargs):
        raise AssertionError(f"host synchronisation in {what}")

    with monkeypatch.context() as patch:
        for name in HOST_READS:
            patch.setattr(torch.Tensor, name, forbidden)
        patch.setattr(torch, "nonzero", forbidden)
        yield
