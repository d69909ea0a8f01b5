"""Teach Ultralytics about DRConv without forking it: ``register()`` and ``unregister()``.

``register()`` (idempotent) patches, in the running process only:

- the YAML parser (``parse_model``): a row ``[from, n, DRConv, [c2, k, s, regions, {kwargs}]]`` is built as a ``Conv``
  row (same channel bookkeeping and width/depth scaling), then each built ``Conv`` is swapped for a ``DRConv`` with
  the same c1, c2, k, s, padding, dilation and activation; the printed layer table shows DRConv with its real
  parameter count. YAMLs without DRConv pass through untouched.
- ``yaml_model_load``: bundled model YAMLs (``cfg/models``) resolve by bare name, scale letter included
  (``yolov8n-drconv.yaml``).
- ``BaseModel.fuse``: DRConv's BatchNorm is folded into its filter generator first.
- ``BaseModel.load``: a DRConv whose pretrained checkpoint holds a plain ``Conv`` at the same place starts as that
  Conv (every region gets its filter), so fine-tuning from ``yolov8n.pt`` keeps the pretrained behaviour.
- the thop FLOP counter: a rule for the dynamic conv (selected-filter MACs); the guide conv and the filter generator
  are counted by thop's own rules, so ``model.info()`` GFLOPs include all of DRConv.
- torch's safe globals: ``ULTRALYTICS_SAFE_LOAD=1`` (``weights_only=True``) loads DRConv checkpoints.
- ``Exporter.__call__``: an ONNX, OpenVINO or TensorRT export without ``dynamic=True`` fixes its batch size, so it
  traces DRConv for a static batch (``ops.static_batch_export``: one conv's work at any batch, not B convs').

Registration normally happens by itself: importing the package (which every DRConv checkpoint load does, its
``__init__`` first) registers when Ultralytics is loaded, and the start-up hook (``drconv_yolo._startup``) registers
every process the moment Ultralytics' ``tasks`` module is imported. Dependencies point one way: this module uses the
layers (``drconv_yolo.modules``); the layers never import it.
"""

from __future__ import annotations

import copy
import functools
import re
import sys
import threading
from pathlib import Path
from typing import Any, Dict, List

import torch
import torch.nn as nn

from . import diagnostics
from .blocks import C2f_DRConv, C3k2_DRConv
from .errors import UserError
from .modules import (
    DEFAULT_REGIONS,
    DRConv,
    DRConv2d,
    GlobalAvgPool,
    OfficialFilterGenerator,
    OptionError,
    PaperFilterGenerator,
    RegionAwareConv,
    check_options,
)
from .ops import static_batch_export

__all__ = ["register", "unregister", "is_registered", "bundled_cfg_dir", "DRConvYAMLError"]

_LOCK = threading.RLock()
_ORIGINALS: Dict[tuple, Any] = {}  # (owner, attribute) -> original value, for unregister()
_MARK = "_drconv_yolo_patched"
DRCONV_ARGS = ("c2", "k", "s", "regions", "kwargs")  # what a DRConv YAML row may hold, in order
DRCONV_KWARGS = ("generator", "bases", "hidden", "impl", "centre_guide")
# a DRConv row of a model YAML is built as the Ultralytics module it replaces (its proxy), then swapped
PROXIES = {"DRConv": "Conv", "C2f_DRConv": "C2f", "C3k2_DRConv": "C3k2"}
BLOCKS = {"C2f_DRConv": C2f_DRConv, "C3k2_DRConv": C3k2_DRConv}
# the row format of Ultralytics' layer table (ultralytics/nn/tasks.py, parse_model), so a DRConv row lines up
LAYER_ROW = "{i:>3}{f!s:>20}{n:>3}{np:10.0f}  {t:<45}{args!s:<30}"


class DRConvYAMLError(UserError, ValueError):
    """A DRConv row of a model YAML has a wrong argument; the message names the layer index and the argument."""


def bundled_cfg_dir() -> Path:
    """The ``cfg`` folder shipped with the package (wheel: ``drconv_yolo/cfg``; source checkout: ``<repo>/cfg``)."""
    here = Path(__file__).resolve().parent
    return here / "cfg" if (here / "cfg").is_dir() else here.parent / "cfg"


def is_registered() -> bool:
    """Whether ``register()`` is in effect in this process."""
    tasks = sys.modules.get("ultralytics.nn.tasks")
    return bool(tasks is not None and getattr(tasks.parse_model, _MARK, False))


# ----------------------------------------------------------------------------------------------------------------
# YAML rows
# ----------------------------------------------------------------------------------------------------------------
def _check_row(index: int, args: Any) -> dict:
    """Validate a DRConv row's args; return the DRConv-only settings. Raises DRConvYAMLError naming layer and arg."""

    def fail(what: str) -> DRConvYAMLError:
        return DRConvYAMLError(f"model YAML layer {index} (DRConv): {what}; a DRConv row is [c2, k, s, regions]")

    if not isinstance(args, (list, tuple)) or not args:
        raise fail(f"args must be a non-empty list, got {args!r}")
    if len(args) > len(DRCONV_ARGS):
        raise fail(f"expected at most {len(DRCONV_ARGS)} args {list(DRCONV_ARGS)}, got {len(args)}: {list(args)}")
    c2 = args[0]
    if not (isinstance(c2, str) or (isinstance(c2, int) and not isinstance(c2, bool) and c2 >= 1)):
        raise fail(f"argument 'c2' must be a positive int, got {c2!r}")
    k = args[1] if len(args) > 1 else 1
    s = args[2] if len(args) > 2 else 1
    regions = args[3] if len(args) > 3 else DEFAULT_REGIONS
    kwargs = args[4] if len(args) > 4 else {}
    if not isinstance(k, int) or isinstance(k, bool) or k < 1 or k % 2 == 0:
        raise fail(f"argument 'k' must be an odd int >= 1, got {k!r}")
    if not isinstance(s, int) or isinstance(s, bool) or s < 1:
        raise fail(f"argument 's' must be an int >= 1, got {s!r}")
    if not isinstance(regions, int) or isinstance(regions, bool) or regions < 1:
        raise fail(f"argument 'regions' must be an int >= 1, got {regions!r}")
    if not isinstance(kwargs, dict) or set(kwargs) - set(DRCONV_KWARGS):
        raise fail(f"argument 'kwargs' must be a dict with keys from {list(DRCONV_KWARGS)}, got {kwargs!r}")
    try:
        check_options(regions, **kwargs)
    except OptionError as e:
        raise fail(f"option '{e.option}' {e.problem}") from None
    return {"regions": regions, **kwargs}


def _read_block_row(index: int, name: str, args: Any) -> tuple:
    """A block row is the proxy's own arguments plus an optional trailing dict of DRConv options; return
    ``(settings, proxy_args)``. Raises DRConvYAMLError naming layer and option."""

    def fail(what: str) -> DRConvYAMLError:
        example = "[128, True, {regions: 8}]"
        return DRConvYAMLError(
            f"model YAML layer {index} ({name}): {what}; a {name} row is {PROXIES[name]}'s arguments plus an "
            f"optional dict of DRConv options, e.g. {example}"
        )

    if not isinstance(args, (list, tuple)):
        raise fail(f"args must be a list, got {args!r}")
    options = dict(args[-1]) if args and isinstance(args[-1], dict) else {}
    known = ("regions", *DRCONV_KWARGS)
    if set(options) - set(known):
        raise fail(f"unknown option(s) {sorted(set(options) - set(known))}; options are {list(known)}")
    options.setdefault("regions", DEFAULT_REGIONS)
    try:
        check_options(**options)
    except OptionError as e:
        raise fail(f"option '{e.option}' {e.problem}") from None
    return options, list(args[:-1] if args and isinstance(args[-1], dict) else args)


def _swap_block(proxy, settings: dict, cls):
    """Build the DRConv block that replaces a built proxy C2f/C3k2: same inner modules, DRConv 1x1 convs."""
    new = cls(proxy.cv1.conv.in_channels, proxy.cv2.conv.out_channels, proxy.c, proxy.m, proxy.cv1.act, **settings)
    new.i, new.f = proxy.i, proxy.f
    new.type = f"{cls.__module__}.{cls.__name__}"
    new.np = sum(p.numel() for p in new.parameters())
    return new


def _swap(proxy, settings: dict):
    """Build the DRConv (or Sequential of them) that replaces a built proxy Conv (or Sequential of Convs)."""

    def one(conv):
        c = conv.conv
        return DRConv(
            c.in_channels,
            c.out_channels,
            c.kernel_size[0],
            c.stride[0],
            c.padding[0],
            1,
            c.dilation[0],
            conv.act,
            **settings,
        )

    new = nn.Sequential(*(one(m) for m in proxy)) if isinstance(proxy, nn.Sequential) else one(proxy)
    new.i, new.f = proxy.i, proxy.f
    new.type = "drconv_yolo.modules.DRConv"
    new.np = sum(p.numel() for p in new.parameters())
    return new


class _TableBuffer:
    """Stands in for Ultralytics' LOGGER while the proxy model is built, so the layer table can be corrected."""

    def __init__(self, logger):
        self.logger, self.lines = logger, []

    def info(self, msg="", *args, **kwargs):
        self.lines.append(str(msg))

    def __getattr__(self, name):
        return getattr(self.logger, name)


def _wrap_parse_model(original):
    @functools.wraps(original)
    def parse_model(d, ch, verbose=True):
        rows = list(d.get("backbone", [])) + list(d.get("head", []))
        if not any(len(row) > 2 and row[2] in PROXIES for row in rows):
            return original(d, ch, verbose)
        d = copy.deepcopy(d)
        settings, kinds = {}, {}
        for i, row in enumerate(d["backbone"] + d["head"]):
            if row[2] == "DRConv":
                settings[i], row[3] = _check_row(i, row[3]), list(row[3][:3])
            elif row[2] in BLOCKS:
                settings[i], row[3] = _read_block_row(i, row[2], row[3])
            else:
                continue
            kinds[i], row[2] = row[2], PROXIES[row[2]]
        tasks = sys.modules["ultralytics.nn.tasks"]
        logger, buffer = tasks.LOGGER, _TableBuffer(tasks.LOGGER)
        tasks.LOGGER = buffer
        try:
            model, save = original(d, ch, verbose)
        finally:
            tasks.LOGGER = logger
        for i, extra in settings.items():
            model[i] = (
                _swap(model[i], extra) if kinds[i] == "DRConv" else _swap_block(model[i], extra, BLOCKS[kinds[i]])
            )
        for line in buffer.lines:
            row = re.match(r"^\s*(\d+)\s", line)
            i = int(row.group(1)) if row else -1
            logger.info(_table_row(i, model[i], settings[i]) if i in settings else line)
        return model, save

    setattr(parse_model, _MARK, True)
    return parse_model


def _table_row(i: int, layer, settings: dict) -> str:
    """The layer-table row of a swapped layer, in Ultralytics' own format: DRConv's type and real parameter count,
    its settings in the arguments."""
    shown = ", ".join(f"{key}={value}" for key, value in settings.items())
    if isinstance(layer, C2f_DRConv):
        args = f"[{layer.cv1.conv.c1}, {layer.cv2.conv.c2}, {len(layer.m)}, {shown}]"
        return LAYER_ROW.format(i=i, f=layer.f, n=len(layer.m), np=layer.np, t=layer.type, args=args)
    layers = list(layer) if isinstance(layer, nn.Sequential) else [layer]
    c = layers[0].conv
    args = f"[{c.c1}, {c.c2}, {c.k}, {c.s}, {shown}]"
    return LAYER_ROW.format(i=i, f=layer.f, n=len(layers), np=layer.np, t=layer.type, args=args)


# ----------------------------------------------------------------------------------------------------------------
# bundled YAMLs, fuse, pretrained load, FLOPs, safe loading
# ----------------------------------------------------------------------------------------------------------------
def _bundled_yaml(path) -> Path | None:
    """Path to pass on for a bare model-YAML name that only the bundled cfg/models folder holds, else None."""
    p = Path(str(path))
    if p.suffix not in (".yaml", ".yml") or len(p.parts) != 1 or p.exists():
        return None
    models = bundled_cfg_dir() / "models"
    unified = re.sub(r"(\d+)([nslmx])(.+)?$", r"\1\3", p.stem) + p.suffix
    if (models / p.name).is_file() or (models / unified).is_file():
        return models / p.name  # keeps the scale letter in the stem; Ultralytics falls back to the unified file
    return None


def _wrap_yaml_model_load(original):
    @functools.wraps(original)
    def yaml_model_load(path):
        return original(_bundled_yaml(path) or path)

    setattr(yaml_model_load, _MARK, True)
    return yaml_model_load


def _wrap_fuse(original):
    @functools.wraps(original)
    def fuse(self, *args, **kwargs):
        for m in self.modules():
            if isinstance(m, DRConv):
                m.fuse()
        return original(self, *args, **kwargs)

    setattr(fuse, _MARK, True)
    return fuse


# formats whose file fixes the traced input shape unless exported with dynamic=True (TorchScript does not: a traced
# module runs at other batch sizes)
STATIC_SHAPE_FORMATS = ("onnx", "openvino", "engine", "tensorrt", "trt")


def _wrap_export(original):
    @functools.wraps(original)
    def __call__(self, *args, **kwargs):
        fmt = str(getattr(self.args, "format", "")).lower()
        with static_batch_export(fmt in STATIC_SHAPE_FORMATS and not getattr(self.args, "dynamic", False)):
            return original(self, *args, **kwargs)

    setattr(__call__, _MARK, True)
    return __call__


def _wrap_load(original):
    @functools.wraps(original)
    def load(self, weights, verbose=True):
        result = original(self, weights, verbose)
        start_drconv_from_pretrained(self, weights, verbose)
        return result

    setattr(load, _MARK, True)
    return load


def start_drconv_from_pretrained(model, weights, verbose: bool = True) -> List[str]:
    """Give each DRConv the filter of the pretrained ``Conv`` at the same place in ``weights``; return their names.

    Args:
        model (nn.Module): Model holding DRConv layers (already loaded with the matching weights).
        weights (dict | nn.Module): Checkpoint dict (``ema``/``model``) or model the weights come from.
        verbose (bool): Log what was initialised and what started from scratch.
    """
    source = (weights.get("ema") or weights["model"]) if isinstance(weights, dict) else weights
    state = {k: v for k, v in source.state_dict().items()}
    started, scratch = [], []
    for name, m in model.named_modules():
        if not isinstance(m, DRConv):
            continue
        w, b = state.get(f"{name}.conv.weight"), state.get(f"{name}.conv.bias")
        if w is None or tuple(w.shape) != (m.conv.c2, m.conv.c1, m.conv.k, m.conv.k):
            scratch.append(name)
            continue
        conv = torch.nn.Conv2d(m.conv.c1, m.conv.c2, m.conv.k, bias=b is not None)
        conv.weight.data.copy_(w.float())
        if b is not None:
            conv.bias.data.copy_(b.float())
        try:
            m.conv.init_from_conv_(conv.to(next(m.parameters()).device))
            started.append(name)
        except NotImplementedError:
            scratch.append(name)
    if verbose and (started or scratch):
        from ultralytics.utils import LOGGER

        if started:
            LOGGER.info(f"DRConv: {len(started)} layer(s) start from the pretrained Conv they replace: {started}")
        if scratch:
            LOGGER.info(f"DRConv: {len(scratch)} layer(s) start from scratch (no matching Conv): {scratch}")
    return started


def count_region_aware_conv(module, inputs, output) -> None:
    """thop rule for ``RegionAwareConv``: one c1*k*k filter per output element (the selected region's), plus the
    filter mixing when the op mixes the official generator's bases itself."""
    x, weight = inputs[0], inputs[1]
    coef, bases = (inputs[4], inputs[5]) if len(inputs) > 5 else (None, None)
    kernel = (weight if weight is not None else bases).shape[-2:]
    macs = output.numel() * x.shape[1] * kernel[0] * kernel[1]
    if weight is None:
        macs += coef.numel() * bases[0].numel()
    module.total_ops += int(macs)


def _safe_classes():
    return [DRConv, DRConv2d, RegionAwareConv, OfficialFilterGenerator, PaperFilterGenerator, GlobalAvgPool,
            C2f_DRConv, C3k2_DRConv]  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------
# register / unregister
# ----------------------------------------------------------------------------------------------------------------
def _patch(owner, name: str, wrap) -> None:
    current = getattr(owner, name, None)
    if current is None or getattr(current, _MARK, False):
        return
    _ORIGINALS[(owner, name)] = current
    setattr(owner, name, wrap(current))


def register() -> bool:
    """Patch Ultralytics in this process so DRConv works everywhere (idempotent). Returns True when active."""
    with _LOCK:
        import ultralytics.nn.tasks as tasks

        _patch(tasks, "parse_model", _wrap_parse_model)
        _patch(tasks, "yaml_model_load", _wrap_yaml_model_load)
        for holder in ("ultralytics.nn", "ultralytics.engine.model"):
            module = sys.modules.get(holder)
            for name in ("parse_model", "yaml_model_load"):
                if module is not None and hasattr(module, name):
                    _ORIGINALS.setdefault((module, name), getattr(module, name))
                    setattr(module, name, getattr(tasks, name))
        _patch(tasks.BaseModel, "fuse", _wrap_fuse)
        _patch(tasks.BaseModel, "load", _wrap_load)
        from ultralytics.engine import exporter

        _patch(exporter.Exporter, "__call__", _wrap_export)
        try:
            from thop.profile import register_hooks

            rules = {RegionAwareConv: count_region_aware_conv, GlobalAvgPool: register_hooks.get(nn.AdaptiveAvgPool2d)}
            for module_type, rule in rules.items():
                if module_type not in register_hooks and rule is not None:
                    register_hooks[module_type] = rule
                    _ORIGINALS[("thop", module_type)] = register_hooks
        except ImportError:  # thop missing: Ultralytics reports 0 GFLOPs for every model anyway
            pass
        if hasattr(torch.serialization, "add_safe_globals"):
            torch.serialization.add_safe_globals(_safe_classes())
        _add_trainer_callbacks()
        return True


def _add_trainer_callbacks() -> None:
    """Region diagnostics in every Ultralytics trainer made from now on (no change to the user's command)."""
    from ultralytics.utils.callbacks import base

    for event, callback in diagnostics.CALLBACKS.items():
        if callback not in base.default_callbacks[event]:
            base.default_callbacks[event].append(callback)
            _ORIGINALS[("callbacks", event)] = base.default_callbacks[event]


def unregister() -> None:
    """Undo ``register()`` (for tests): restore every patched attribute."""
    with _LOCK:
        for (owner, name), original in reversed(list(_ORIGINALS.items())):
            if owner == "thop":
                original.pop(name, None)
            elif owner == "callbacks":
                original.remove(diagnostics.CALLBACKS[name])
            else:
                setattr(owner, name, original)
        _ORIGINALS.clear()
        serialization = torch.serialization
        if hasattr(serialization, "get_safe_globals"):
            ours = set(_safe_classes())
            kept = [g for g in serialization.get_safe_globals() if (g[0] if isinstance(g, tuple) else g) not in ours]
            serialization.clear_safe_globals()
            serialization.add_safe_globals(kept)
