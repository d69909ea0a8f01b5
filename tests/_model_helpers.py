"""Helpers shared by the model-level tests (plain functions, not fixtures)."""

import torch
import torch.nn as nn


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
