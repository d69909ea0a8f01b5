"""What DRConv learned: each DRConv layer's guided mask (the region chosen at every output pixel), drawn on an image.

``drconv-yolo regions model=best.pt source=IMAGE [out=DIR] [imgsz=640] [device=cpu] [alpha=0.5]`` loads the model
(``ultralytics.YOLO(model).model``), letterboxes the image like Ultralytics' predict (``LetterBox(imgsz, auto=True,
stride)``, so a non-square image keeps its aspect ratio with minimal padding), runs one forward pass with a forward
hook on every ``DRConv`` layer and every DRConv block (``C2f_DRConv``, ``C3k2_DRConv``: one mask shared by the
block's DRConvs) that records ``regions_map(input)`` (argmax of the guide conv output, shape ``(Ho, Wo)``), and
writes into ``out``:

* ``regions_<k>_<layer>.png`` per DRConv layer: the network input with the region map (categorical colours, nearest
  neighbour upsampled to the input size) blended on top, enlarged by an integer factor ``scale`` so the long side is
  at least 640 px, above a legend band (title: layer, input -> output shape, stride; one swatch per region used with
  its pixel share). Size: ``(W * scale) x (H * scale + legend band)`` pixels for an ``H x W`` network input.
* ``regions_grid.png``: all layers side by side.
* ``regions.npz`` (``layer<k>``: the ``(Ho, Wo)`` int map of layer k) and ``regions.json`` (per layer: name, shapes,
  regions, pixel share of each region, PNG path).

Every file is written to a temporary name and renamed when complete.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import UserError
from .io import atomic_path, atomic_write_json, save_figure

__all__ = ["LayerRegions", "RegionsError", "capture_regions", "draw_regions", "letterbox"]

MIN_SIDE = 640  # per-layer PNGs are enlarged by an integer factor until the long side reaches this
LEGEND_PX = 110  # height of the legend band under the image in a per-layer PNG
DPI = 100
DEFAULT_IMGSZ = 640  # when neither the caller nor the checkpoint gives one: Ultralytics' default


class RegionsError(UserError):
    """A problem with the user's input (model, image, no DRConv layer): exit status 2."""


@dataclass
class LayerRegions:
    """The guided mask of one DRConv layer for one image.

    Attributes:
        index: Position among the model's DRConv layers (0-based).
        name: Module name in the model (``model.3``).
        layer: Ultralytics layer index (the ``i`` of ``model.model[i]``), or -1.
        in_shape: Input ``(C, H, W)``.
        out_shape: Output ``(C, Ho, Wo)``.
        regions: Number of regions m.
        regions_map: ``(Ho, Wo)`` region index per output pixel (not serialised by ``summary``).
        share: Fraction of output pixels per region (length m).
        png: Path of the per-layer PNG once drawn.
    """

    index: int
    name: str
    layer: int
    in_shape: tuple
    out_shape: tuple
    regions: int
    regions_map: np.ndarray = field(repr=False)
    share: list = field(default_factory=list)
    png: str | None = None

    @property
    def used(self) -> list[int]:
        """Regions chosen at one output pixel at least."""
        return [j for j, s in enumerate(self.share) if s > 0]

    def title(self) -> str:
        """``DRConv 2 (layer 3, model.3): 32x32x32 -> 64x16x16, 8 regions, 6 used``."""
        c, h, w = self.in_shape
        co, ho, wo = self.out_shape
        return (
            f"DRConv {self.index} (layer {self.layer}, {self.name}): {c}x{h}x{w} -> {co}x{ho}x{wo}, "
            f"{self.regions} regions, {len(self.used)} used"
        )

    def summary(self) -> dict[str, Any]:
        """JSON-ready description (without the map)."""
        d = asdict(self)
        d.pop("regions_map")
        d["used"] = self.used
        return d


# ----------------------------------------------------------------------------------------------------------------------
# Model, image, forward pass
# ----------------------------------------------------------------------------------------------------------------------


def load_model(model: str | os.PathLike):
    """Load ``model`` (weights or YAML) with Ultralytics; return ``(nn.Module in eval mode, train imgsz or None)``.

    Raises:
        RegionsError: If the file is missing or the model has no DRConv layer.
    """
    from ultralytics import YOLO

    from drconv_yolo.blocks import guided_layers
    from drconv_yolo.evaluation import train_imgsz

    path = Path(model)
    if path.suffix == ".pt" and not path.is_file():
        raise RegionsError(f"model file not found: {model}")
    try:
        yolo = YOLO(str(model))
    except FileNotFoundError as e:
        raise RegionsError(f"model file not found: {model} ({e})") from None
    net = yolo.model.float().eval()
    if not any(True for _ in guided_layers(net)):
        raise RegionsError(f"model {model} has no DRConv layer: there are no regions to draw")
    return net, train_imgsz(yolo)


def read_image(source: str | os.PathLike) -> np.ndarray:
    """Read an image file as BGR ``uint8`` ``(H, W, 3)``.

    Raises:
        RegionsError: If the file is missing or is not an image OpenCV can read.
    """
    import cv2

    path = Path(source)
    if not path.is_file():
        raise RegionsError(f"image not found: {source}")
    im = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if im is None:
        raise RegionsError(f"cannot read image {source} (not an image file OpenCV can decode)")
    return im


def letterbox(im: np.ndarray, imgsz: int | Sequence[int], stride: int) -> np.ndarray:
    """Resize and pad like Ultralytics' predict (``LetterBox(imgsz, auto=True, stride)``, grey 114 padding).

    Args:
        im: BGR image ``(H, W, 3)``.
        imgsz: Inference size (int or ``(h, w)``), rounded up to a multiple of ``stride``.
        stride: The model's largest stride.

    Returns:
        The letterboxed BGR image ``(h, w, 3)`` with ``h`` and ``w`` multiples of ``stride``.
    """
    from ultralytics.data.augment import LetterBox
    from ultralytics.utils.checks import check_imgsz

    size = check_imgsz(imgsz, stride=stride, min_dim=2)
    return LetterBox(tuple(size), auto=True, stride=stride)(image=im)


def capture_regions(model, image: np.ndarray, device: str = "cpu") -> list[LayerRegions]:
    """Run one forward pass and record the guided mask of every DRConv layer and DRConv block.

    Args:
        model: Ultralytics ``nn.Module`` (eval mode) holding DRConv layers or blocks.
        image: Letterboxed BGR ``uint8`` image ``(H, W, 3)``.
        device: Torch device string.

    Returns:
        One :class:`LayerRegions` per guided mask (a block's DRConvs share one), in forward order.
    """
    import torch

    from drconv_yolo.blocks import guided_layers

    x = torch.from_numpy(np.ascontiguousarray(image[..., ::-1].transpose(2, 0, 1))).float().div(255)[None]
    layers = list(guided_layers(model))
    found: list[LayerRegions] = []

    def hook_for(name):
        def hook(module, inputs, output):
            inp = inputs[0]
            rmap = module.regions_map(inp)[0].cpu().numpy().astype(np.int64)  # (Ho, Wo)
            counts = np.bincount(rmap.ravel(), minlength=module.regions)
            top = name.split(".")
            layer = int(top[1]) if len(top) > 1 and top[0] == "model" and top[1].isdigit() else -1
            found.append(
                LayerRegions(
                    index=len(found),
                    name=name,
                    layer=layer,
                    in_shape=tuple(inp.shape[1:]),
                    out_shape=(output.shape[1], *rmap.shape),
                    regions=module.regions,
                    regions_map=rmap,
                    share=(counts / counts.sum()).tolist(),
                )
            )

        return hook

    handles = [m.register_forward_hook(hook_for(n)) for n, m in layers]
    try:
        model = model.to(device)
        with torch.inference_mode():
            model(x.to(device))
    finally:
        for h in handles:
            h.remove()
    return found


# ----------------------------------------------------------------------------------------------------------------------
# Drawing
# ----------------------------------------------------------------------------------------------------------------------


def palette(n: int) -> np.ndarray:
    """``n`` distinct RGB colours in [0, 1] (tab10 / tab20, else evenly spaced hues), shape ``(n, 3)``."""
    import matplotlib

    if n <= 10:
        colors = matplotlib.colormaps["tab10"].colors[:n]
    elif n <= 20:
        colors = matplotlib.colormaps["tab20"].colors[:n]
    else:
        colors = [matplotlib.colormaps["hsv"](i / n)[:3] for i in range(n)]
    return np.asarray(colors, dtype=np.float64)


def overlay(image: np.ndarray, regions_map: np.ndarray, regions: int, alpha: float = 0.5, scale: int = 1) -> np.ndarray:
    """Blend the region map (nearest-neighbour upsampled) over the image.

    Args:
        image: BGR ``uint8`` ``(H, W, 3)``.
        regions_map: ``(Ho, Wo)`` region indices.
        regions: Number of regions (colour count).
        alpha: Opacity of the colours.
        scale: Integer enlargement of the result.

    Returns:
        RGB ``uint8`` ``(H * scale, W * scale, 3)``.
    """
    import cv2

    h, w = image.shape[:2]
    colors = (palette(regions) * 255).astype(np.float32)
    up = cv2.resize(regions_map.astype(np.int32), (w, h), interpolation=cv2.INTER_NEAREST)
    rgb = image[..., ::-1].astype(np.float32)
    out = ((1 - alpha) * rgb + alpha * colors[up]).clip(0, 255).astype(np.uint8)
    if scale > 1:
        out = np.repeat(np.repeat(out, scale, axis=0), scale, axis=1)
    return out


def display_scale(h: int, w: int) -> int:
    """Integer enlargement so the long side reaches :data:`MIN_SIDE` (1 for large images)."""
    return max(1, math.ceil(MIN_SIDE / max(h, w)))


def _legend_handles(lr: LayerRegions):
    from matplotlib.patches import Patch

    colors = palette(lr.regions)
    return [Patch(color=colors[j], label=f"region {j}: {lr.share[j] * 100:.1f}%") for j in lr.used]


def draw_layer(image: np.ndarray, lr: LayerRegions, path: Path, alpha: float = 0.5) -> tuple[int, int]:
    """Write one layer's PNG: the overlay at ``scale`` x the input size above a title and legend band.

    Returns:
        ``(width, height)`` of the PNG in pixels.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h, w = image.shape[:2]
    s = display_scale(h, w)
    W, H = w * s, h * s + LEGEND_PX
    fig = plt.figure(figsize=(W / DPI, H / DPI), dpi=DPI)
    ax = fig.add_axes((0, LEGEND_PX / H, 1, h * s / H))
    ax.imshow(overlay(image, lr.regions_map, lr.regions, alpha, s), interpolation="nearest")
    ax.set_axis_off()
    fig.text(0.01, (LEGEND_PX - 8) / H, lr.title(), fontsize=8, va="top", ha="left", wrap=True)
    fig.legend(
        handles=_legend_handles(lr),
        loc="upper left",
        bbox_to_anchor=(0.0, (LEGEND_PX - 26) / H),
        ncol=4,
        fontsize=7,
        frameon=False,
        handlelength=1.2,
        columnspacing=1.0,
    )
    save_figure(fig, path, DPI)
    return W, H


def draw_grid(image: np.ndarray, layers: Sequence[LayerRegions], path: Path, alpha: float = 0.5) -> None:
    """Write one PNG with every layer's overlay (title: layer, output size, regions used)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(layers)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    h, w = image.shape[:2]
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows * h / w + 0.6 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for ax, lr in zip(axes.ravel(), layers):
        ax.imshow(overlay(image, lr.regions_map, lr.regions, alpha), interpolation="nearest")
        _, ho, wo = lr.out_shape
        ax.set_title(
            f"DRConv {lr.index} (layer {lr.layer})\n{ho}x{wo}, {len(lr.used)}/{lr.regions} regions", fontsize=8
        )
    fig.suptitle("DRConv guided masks (region per output pixel)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, DPI)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-")


def draw_regions(
    model: str | os.PathLike,
    source: str | os.PathLike,
    out: str | os.PathLike = "runs/regions",
    imgsz: int | None = None,
    device: str = "cpu",
    alpha: float = 0.5,
) -> dict[str, Any]:
    """Draw the guided mask of every DRConv layer of ``model`` on ``source``.

    Args:
        model: Weights (``best.pt``) or model YAML.
        source: Image file.
        out: Output folder (created).
        imgsz: Inference size; default the model's training ``imgsz`` (from the checkpoint), else 640.
        device: Torch device string.
        alpha: Opacity of the region colours.

    Returns:
        ``{"model", "source", "imgsz", "input_shape", "layers": [LayerRegions.summary()...], "grid", "npz", "json",
        "maps": {index: (Ho, Wo) array}}``.

    Raises:
        RegionsError: If the model or image is missing/unreadable or the model has no DRConv layer.
    """
    if not 0 <= alpha <= 1:
        raise RegionsError(f"alpha must be in [0, 1], got {alpha}")
    net, train_imgsz = load_model(model)
    im = read_image(source)
    imgsz = int(imgsz or train_imgsz or DEFAULT_IMGSZ)
    stride = max(int(net.stride.max()), 32) if hasattr(net, "stride") else 32
    boxed = letterbox(im, imgsz, stride)
    layers = capture_regions(net, boxed, device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for lr in layers:
        path = out / f"regions_{lr.index:02d}_{_safe(lr.name)}.png"
        draw_layer(boxed, lr, path, alpha)
        lr.png = str(path)
    grid = out / "regions_grid.png"
    draw_grid(boxed, layers, grid, alpha)
    npz = out / "regions.npz"
    with atomic_path(npz) as tmp:
        np.savez_compressed(tmp, **{f"layer{lr.index}": lr.regions_map for lr in layers})
    result = {
        "model": str(model),
        "source": str(source),
        "imgsz": imgsz,
        "input_shape": list(boxed.shape[:2]),
        "layers": [lr.summary() for lr in layers],
        "grid": str(grid),
        "npz": str(npz),
        "json": str(out / "regions.json"),
    }
    atomic_write_json(out / "regions.json", result, indent=1)
    result["maps"] = {lr.index: lr.regions_map for lr in layers}
    return result
