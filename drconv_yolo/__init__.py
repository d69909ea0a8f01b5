"""drconv-yolo: Dynamic Region-Aware Convolution (DRConv, CVPR 2021) as a drop-in layer for Ultralytics YOLO.

Public names are imported lazily, so ``import drconv_yolo`` (which the start-up hook does in every process) stays
cheap and imports neither torch nor Ultralytics.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "DRConv": "drconv_yolo.modules",
    "DRConv2d": "drconv_yolo.modules",
    "region_aware_conv2d": "drconv_yolo.ops",
    "register": "drconv_yolo.plugin",
    "unregister": "drconv_yolo.plugin",
    "is_registered": "drconv_yolo.plugin",
}
__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'drconv_yolo' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)


from . import _startup  # noqa: E402

# The package runs before any of its submodules: loading a checkpoint imports drconv_yolo.modules, hence this first,
# so a process that already uses Ultralytics gets DRConv registered here, without the layers knowing the integration.
_startup.install()
