"""DRConv inside YOLO's CSP blocks, as the paper places it: ``C2f_DRConv`` (YOLOv8) and ``C3k2_DRConv`` (YOLO11,
YOLO26), drop-ins for Ultralytics' ``C2f`` / ``C3k2`` in a model YAML.

The paper and the authors' code replace the 1x1 point-wise convs inside a block by DRConvs, and the two DRConvs of
a block share one guided mask made by one 1x1 conv. Here the block's ``cv1`` (c1 -> 2c, on the block input) and
``cv2`` ((2 + n)c -> c2, on the concatenation) are DRConvs without a guide conv of their own; ``guide`` (1x1,
c1 -> m) makes the block's mask once from its input, at the resolution both convs work at. The inner modules
(Bottleneck, C3k, attention) stay the static ones Ultralytics built: their 3x3 convs carry the spatial context, the
dynamic 1x1 convs choose per region how channels are mixed.

This module path is pickled into checkpoints that hold these blocks: never move or rename it. Like the layers, it
imports nothing from Ultralytics: the integration builds the Ultralytics block as a proxy and hands its inner
modules over.
"""

from __future__ import annotations

from typing import Iterator, Tuple

import torch
import torch.nn as nn

from .modules import DEFAULT_REGIONS, DRConv, centre_guide

__all__ = ["C2f_DRConv", "C3k2_DRConv", "guided_layers"]


class C2f_DRConv(nn.Module):  # noqa: N801  (the name users write in a model YAML, next to C2f)
    """C2f with DRConv 1x1 convs sharing one guided mask.

    Args:
        c1 (int): Input channels.
        c2 (int): Output channels.
        c (int): Hidden channels of each split (Ultralytics: ``int(c2 * e)``).
        m (nn.ModuleList): The n inner modules, each c -> c (Bottleneck, C3k, ...).
        act (bool | nn.Module): Activation of the two DRConvs (as Conv's ``act``).
        regions (int): Number of regions m of the shared mask.
        centre_guide (bool): Centre the shared mask's logits per image (see :func:`drconv_yolo.modules.centre_guide`);
            default False, the paper's mask.
        **kwargs: DRConv options for both convs (``generator``, ``bases``, ``hidden``, ``impl``).
    """

    centre_guide = False  # class default, as DRConv2d's

    def __init__(
        self,
        c1: int,
        c2: int,
        c: int,
        m: nn.ModuleList,
        act=True,
        regions: int = DEFAULT_REGIONS,
        centre_guide: bool = False,
        **kwargs,
    ):
        super().__init__()
        self.c = c
        self.centre_guide = centre_guide
        self.guide = nn.Conv2d(c1, regions, 1)  # the block's one guided mask, shared by cv1 and cv2
        self.cv1 = DRConv(c1, 2 * c, 1, 1, act=act, regions=regions, own_guide=False, **kwargs)
        self.cv2 = DRConv((2 + len(m)) * c, c2, 1, act=act, regions=regions, own_guide=False, **kwargs)
        self.m = m

    @property
    def regions(self) -> int:
        """Number of regions m."""
        return self.guide.out_channels

    def guide_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The shared mask's logits (B, m, H, W), centred if ``centre_guide``."""
        guide = self.guide(x)
        return centre_guide(guide) if self.centre_guide else guide

    def regions_map(self, x: torch.Tensor) -> torch.Tensor:
        """The block's guided mask (B, H, W) for input x."""
        return self.guide_logits(x).argmax(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, c1, H, W) -> (B, c2, H, W)."""
        guide = self.guide_logits(x)  # (B, m, H, W)
        y = list(self.cv1(x, guide).chunk(2, 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1), guide)


class C3k2_DRConv(C2f_DRConv):  # noqa: N801
    """C3k2 with DRConv 1x1 convs sharing one guided mask (C3k2 is a C2f whose inner modules may be C3k or
    attention blocks; Ultralytics builds those, see ``C2f_DRConv``)."""


def guided_layers(model: nn.Module) -> Iterator[Tuple[str, nn.Module]]:
    """Every module of ``model`` that makes a guided mask of its own, in forward order: DRConvs with their own guide
    conv and the DRConv blocks (their inner DRConvs share the block's mask and are not listed). Each has
    ``regions`` and ``regions_map(x) -> (B, Ho, Wo)``."""
    for name, module in model.named_modules():
        if isinstance(module, C2f_DRConv) or (isinstance(module, DRConv) and module.conv.guide is not None):
            yield name, module
