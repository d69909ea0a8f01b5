"""Region diagnostics: how many of its m regions each DRConv layer or block actually uses, logged every epoch.

For every module that makes a guided mask (a DRConv with its own guide, or a DRConv block; see
``blocks.guided_layers``) and the validation images of an epoch:

``used``
    regions that hold at least ``USED_SHARE`` (1%) of all output pixels;
``entropy``
    entropy of the region histogram over all pixels, in bits (``log2 m`` when every region is equally used, 0 when
    one region takes every pixel);
``per_image``
    mean number of regions that hold at least ``USED_SHARE`` of one image's pixels;
``collapsed``
    ``used == 1``: the layer acts as one static conv for every pixel.

During training the statistics come for free from the validation pass: a hook on each guide conv counts the chosen
regions (``on_train_epoch_end`` names the model Ultralytics is about to validate, ``on_val_start`` attaches the hooks
to it - only when a validation does run: with ``val=False`` most epochs have none - ``on_val_end`` removes them
before the checkpoint is saved, ``on_fit_epoch_end`` logs one line per validated epoch and writes
``region_stats.json`` in the run folder). ``register()`` adds these
callbacks to every Ultralytics trainer; ``DRCONV_YOLO_REGION_STATS=0`` turns them off.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn as nn

from .blocks import C2f_DRConv, guided_layers
from .io import atomic_write_json
from .modules import centre_guide

__all__ = ["CALLBACKS", "STATS_FILE", "RegionCounter", "enabled", "format_stats", "histogram_stats", "read_stats"]

USED_SHARE = 0.01  # a region counts as used when it holds at least 1% of the pixels
STATS_FILE = "region_stats.json"
ENV = "DRCONV_YOLO_REGION_STATS"
_ATTR = "_drconv_region_counter"  # where the validator keeps the epoch's counter between the callbacks
_PENDING = "_drconv_region_model"  # the model the next validation of the trainer's validator will run


def enabled() -> bool:
    """False when the user turned the per-epoch statistics off with DRCONV_YOLO_REGION_STATS=0."""
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def histogram_stats(counts: Sequence[float], per_image: Optional[Sequence[float]] = None) -> Dict[str, Any]:
    """Statistics of one layer's region histogram.

    Args:
        counts: Pixels that chose each region, length m.
        per_image: Number of used regions in each image (optional).

    Returns:
        ``{"regions", "used", "entropy", "per_image", "share", "collapsed"}`` (entropy in bits).
    """
    total = float(sum(counts))
    share = [c / total if total else 0.0 for c in counts]
    entropy = -sum(p * math.log2(p) for p in share if p > 0)
    used = sum(p >= USED_SHARE for p in share)
    mean_per_image = float(sum(per_image) / len(per_image)) if per_image else None
    return {"regions": len(counts), "used": used, "entropy": entropy + 0.0, "per_image": mean_per_image,
            "share": share, "collapsed": used == 1}  # fmt: skip


def _guide_owner(module: nn.Module) -> nn.Module:
    """The module holding the guide conv and the ``centre_guide`` flag (a block, or a DRConv's DRConv2d)."""
    return module if isinstance(module, C2f_DRConv) else module.conv


class RegionCounter:
    """Counts, while attached, the region every output pixel of every guided layer of ``model`` chooses.

    Args:
        model: A model holding DRConv layers or blocks.
    """

    def __init__(self, model: nn.Module):
        self.layers = list(guided_layers(model))
        self.counts: Dict[str, torch.Tensor] = {}
        self.per_image: Dict[str, List[float]] = {name: [] for name, _ in self.layers}
        self._handles = []
        for name, m in self.layers:
            owner = _guide_owner(m)
            self._handles.append(owner.guide.register_forward_hook(self._hook(name, owner.centre_guide)))

    def _hook(self, name: str, centred: bool):
        def hook(module, inputs, logits):  # logits (B, m, Ho, Wo), before centring
            if centred:
                logits = centre_guide(logits)
            B, m = logits.shape[:2]
            region = logits.detach().argmax(1).flatten(1)  # (B, Ho*Wo)
            ones = torch.ones_like(region, dtype=torch.float)
            counts = torch.zeros(B, m, device=region.device).scatter_add_(1, region, ones)  # (B, m)
            self.counts[name] = self.counts.get(name, 0) + counts.sum(0).cpu()
            share = counts / region.shape[1]
            self.per_image[name] += (share >= USED_SHARE).sum(1).float().tolist()

        return hook

    def remove(self) -> None:
        """Detach the hooks."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def stats(self) -> Dict[str, Dict[str, Any]]:
        """``{layer name: histogram_stats}`` for every layer that saw at least one image."""
        return {name: histogram_stats(self.counts[name].tolist(), self.per_image[name])
                for name, _ in self.layers if name in self.counts}  # fmt: skip


def format_stats(stats: Dict[str, Dict[str, Any]]) -> str:
    """One line: ``model.1 7/8 (2.61 bits, 5.3/img) | model.7 1/8 COLLAPSED ...``."""
    parts = []
    for name, s in stats.items():
        flag = " COLLAPSED" if s["collapsed"] else ""
        per_image = f", {s['per_image']:.1f}/img" if s["per_image"] is not None else ""
        parts.append(f"{name} {s['used']}/{s['regions']} ({s['entropy']:.2f} bits{per_image}){flag}")
    return "DRConv regions used: " + " | ".join(parts)


# ----------------------------------------------------------------------------------------------------------------
# Ultralytics trainer callbacks (added to every trainer by register())
# ----------------------------------------------------------------------------------------------------------------
def on_train_epoch_end(trainer) -> None:
    """Name the model the epoch's validation will run (the EMA model, as Ultralytics validates), if it has DRConv."""
    validator = getattr(trainer, "validator", None)
    if not enabled() or validator is None:
        return
    model = trainer.ema.ema if getattr(trainer, "ema", None) is not None else trainer.model
    model = getattr(model, "module", model)  # DDP
    setattr(validator, _PENDING, model if next(guided_layers(model), None) is not None else None)


def on_val_start(validator) -> None:
    """Attach a RegionCounter to the model named at the end of the training epoch (hooks exist only while validating:
    a hook left on the model would break the checkpoint's pickling when the epoch has no validation)."""
    model = getattr(validator, _PENDING, None)
    setattr(validator, _PENDING, None)  # the final validation of best.pt is not an epoch's
    if model is not None and getattr(validator, _ATTR, None) is None:
        setattr(validator, _ATTR, RegionCounter(model))


def on_val_end(validator) -> None:
    """Detach the counter as soon as validation ends (before Ultralytics pickles the model into a checkpoint)."""
    counter = getattr(validator, _ATTR, None)
    if counter is not None:
        counter.remove()
        setattr(validator, _ATTR, None)
        setattr(validator, _ATTR + "_stats", counter.stats())


def on_fit_epoch_end(trainer) -> None:
    """Log the epoch's statistics and append them to ``region_stats.json`` in the run folder."""
    validator = getattr(trainer, "validator", None)
    stats = getattr(validator, _ATTR + "_stats", None)
    if not stats:  # no validation this epoch, or no DRConv
        return
    setattr(validator, _ATTR + "_stats", None)
    from ultralytics.utils import LOGGER

    LOGGER.info(format_stats(stats))
    path = Path(trainer.save_dir) / STATS_FILE
    history = read_stats(path)
    history.append({"epoch": int(trainer.epoch) + 1, "layers": stats})
    atomic_write_json(path, history, indent=1)


def read_stats(path: Path) -> List[Dict[str, Any]]:
    """The per-epoch history in ``region_stats.json`` (empty when there is none yet)."""
    import json

    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else []


CALLBACKS = {
    "on_train_epoch_end": on_train_epoch_end,
    "on_val_start": on_val_start,
    "on_val_end": on_val_end,
    "on_fit_epoch_end": on_fit_epoch_end,
}
