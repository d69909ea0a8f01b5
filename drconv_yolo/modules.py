"""DRConv layers: ``DRConv2d`` (a bare dynamic conv, like ``nn.Conv2d``) and ``DRConv`` (+ BatchNorm + activation,
with the signature of Ultralytics' ``Conv``).

This module path is pickled into every checkpoint that holds a DRConv: never move or rename it. It imports nothing
from Ultralytics, so the layers work in any PyTorch model.

Parameter counts, for ``c1`` input and ``c2`` output channels, kernel ``k``, ``m`` regions (nn.Conv2d: c2*c1*k^2):

=============  =========================================  ==========================================
part           parameters                                 default (m = 8)
=============  =========================================  ==========================================
guide conv     m*c1*k^2 + m                               ~ m/c2 of the conv
``official``   n*c2*c1*k^2 + (c1 + 1)*m*n   (n bases)     n = 8: about 8x the conv
``paper``      h*c2*c1 + (c1 + 1)*h         (h hidden)    h = m*k^2: about 8x the conv
=============  =========================================  ==========================================
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn

from .ops import IMPLEMENTATIONS, is_tracing, region_aware_conv2d, region_aware_conv2d_mixed
from .ops.common import records_grad
from .ops.workspace import scratch

__all__ = [
    "DRConv",
    "DRConv2d",
    "RegionAwareConv",
    "OfficialFilterGenerator",
    "PaperFilterGenerator",
    "GlobalAvgPool",
    "GENERATORS",
    "centre_guide",
]


DEFAULT_REGIONS = 8  # m, the paper's choice for classification and detection
DEFAULT_BASES = 8  # n base kernels of the official generator, as in the authors' code


def centre_guide(guide: torch.Tensor) -> torch.Tensor:
    """Guide logits (B, m, H, W) minus each image's spatial mean per region channel (the ``centre_guide`` option).

    The paper's mask is the argmax of the raw logits: a region whose logit is raised everywhere (a bias, or a weight
    on the input's mean) wins everywhere, and its straight-through gradient can keep raising it, so a layer collapses
    to one region. After centring, a uniform shift of one channel changes nothing (it is removed, and so is its
    gradient): a region can only win where its logit is high *relative to the rest of the image*.
    """
    return guide - guide.mean((2, 3), keepdim=True)


def autopad(k: int, p: Optional[int] = None, d: int = 1) -> int:
    """Same-shape padding for an odd kernel, as Ultralytics' ``autopad``."""
    return d * (k - 1) // 2 if p is None else p


def he_std(c1: int, k: int) -> float:
    """Standard deviation of a He (Kaiming normal, ReLU gain) initialised conv with fan-in c1*k*k."""
    return math.sqrt(2.0 / (c1 * k * k))


class _MeanHW(torch.autograd.Function):
    """Mean over H and W whose gradient is a broadcast view: backward writes no (B, C, H, W) tensor."""

    @staticmethod
    def forward(ctx, x):  # (B, C, H, W) -> (B, C, 1, 1)
        ctx.shape = x.shape
        return x.mean((2, 3), keepdim=True)

    @staticmethod
    def backward(ctx, grad):
        return (grad / (ctx.shape[2] * ctx.shape[3])).expand(ctx.shape)


class GlobalAvgPool(nn.AdaptiveAvgPool2d):
    """``nn.AdaptiveAvgPool2d(1)`` whose backward returns the gradient as a broadcast view (no full-size write).

    Autograd adds it straight into the input's other gradients, saving a pass over (and a copy of) the feature map.
    FLOP counters count it as ``nn.AdaptiveAvgPool2d`` (the plugin registers the rule); tracing uses the plain mean.
    """

    def __init__(self):
        super().__init__(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W) -> (B, C, 1, 1)."""
        if is_tracing() or not torch.is_grad_enabled():
            return x.mean((2, 3), keepdim=True)
        return _MeanHW.apply(x)


class OfficialFilterGenerator(nn.Module):
    """The official code's generator: global pool -> Linear -> 2*sigmoid/n coefficients mixing n shared base kernels.

    Region j's filter is ``sum_n coef[j, n] * bases[n]`` (CondConv-style). Setting every base to one kernel and the
    Linear to zero makes every region's filter exactly that kernel (used to start from a pretrained Conv).

    Args:
        c1 (int): Input channels.
        c2 (int): Output channels.
        k (int): Kernel size.
        regions (int): Number of regions m.
        bases (int): Number of shared base kernels n.
    """

    def __init__(self, c1: int, c2: int, k: int, regions: int, bases: int = DEFAULT_BASES):
        super().__init__()
        if bases < 1:
            raise ValueError(f"OfficialFilterGenerator: bases must be >= 1, got {bases}")
        self.regions, self.n, self.c2 = regions, bases, c2
        self.pool = GlobalAvgPool()
        self.fc = nn.Linear(c1, regions * bases)
        # the n bases stacked as one 4-D conv weight (n*c2, c1, k, k), stored channels-last (c1 innermost, the fast
        # op's patch order: read without a copy; any layout works); coef ~ 1/n each, so the mixed filter has
        # std(bases) / sqrt(n): scale the bases up to land at He's std
        bases_init = torch.randn(bases * c2, c1, k, k) * he_std(c1, k) * math.sqrt(bases)
        self.bases = nn.Parameter(bases_init.contiguous(memory_format=torch.channels_last))

    def coefficients(self, x: torch.Tensor) -> torch.Tensor:
        """Mixing coefficients (B, m, n) in (0, 2/n)."""
        z = self.fc(self.pool(x).flatten(1))  # (B, m*n)
        return (2.0 / self.n) * torch.sigmoid(z).view(-1, self.regions, self.n)

    def bases_5d(self) -> torch.Tensor:
        """The base kernels as (n, c2, c1, k, k) (a view)."""
        return self.bases.view(self.n, self.c2, *self.bases.shape[1:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return filters (B, m, c2, c1, k, k), stored with c1 innermost (the fast op reads them without a copy)."""
        _, c1, k, _ = self.bases.shape
        n, c2 = self.n, self.c2
        coef = self.coefficients(x)  # (B, m, n)
        bases = self.bases.permute(0, 2, 3, 1).reshape(n, c2 * k * k * c1)  # free if stored channels-last
        w = torch.matmul(coef.to(bases.dtype), bases)  # (B, m, c2*k*k*c1)
        return w.view(-1, self.regions, c2, k, k, c1).permute(0, 1, 2, 5, 3, 4)  # -1: batch-size free export

    @torch.no_grad()
    def scale_out_(self, s: torch.Tensor) -> None:
        """Multiply every generated filter's output channel o by s[o] (folds a BatchNorm exactly)."""
        self.bases.mul_(s.to(self.bases).repeat(self.n).view(-1, 1, 1, 1))

    @torch.no_grad()
    def init_from_conv_(self, weight: torch.Tensor) -> None:
        """Make every region's filter equal ``weight`` (c2, c1, k, k) for every input."""
        self.bases.copy_(weight.repeat(self.n, 1, 1, 1))
        self.fc.weight.zero_()
        self.fc.bias.zero_()


class PaperFilterGenerator(nn.Module):
    """The paper's generator: adaptive average pool to k x k -> 1x1 conv -> sigmoid -> 1x1 conv with groups = m.

    Region j's filter at kernel tap t is ``sum_u G[j, u] * h[j, u, t]``: ``hidden / m`` learned basis filters per
    region, weighted per tap by the input's pooled descriptor. The grouped conv has no bias (the snippet's bias adds
    m*c2*c1 parameters that are constant over the kernel taps).

    Args:
        c1 (int): Input channels.
        c2 (int): Output channels.
        k (int): Kernel size.
        regions (int): Number of regions m.
        hidden (int, optional): Hidden channels, a multiple of m. Default m*k*k (full spatial rank per region).
    """

    def __init__(self, c1: int, c2: int, k: int, regions: int, hidden: Optional[int] = None):
        super().__init__()
        hidden = regions * k * k if hidden is None else hidden
        if hidden < regions or hidden % regions:
            raise ValueError(f"PaperFilterGenerator: hidden={hidden} must be a positive multiple of regions={regions}")
        self.regions, self.c1, self.c2, self.k = regions, c1, c2, k
        self.pool = nn.AdaptiveAvgPool2d(k)
        self.reduce = nn.Conv2d(c1, hidden, 1)
        self.act = nn.Sigmoid()
        self.expand = nn.Conv2d(hidden, regions * c2 * c1, 1, groups=regions, bias=False)
        # sigmoid outputs are about 0.5 (E[h^2] ~ 0.27): scale so sum_u G h has He's std
        nn.init.normal_(self.expand.weight, std=he_std(c1, k) / math.sqrt(0.27 * hidden / regions))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return filters (B, m, c2, c1, k, k)."""
        w = self.expand(self.act(self.reduce(self.pool(x))))  # (B, m*c2*c1, k, k)
        return w.view(-1, self.regions, self.c2, self.c1, self.k, self.k)

    @torch.no_grad()
    def scale_out_(self, s: torch.Tensor) -> None:
        """Multiply every generated filter's output channel o by s[o] (folds a BatchNorm exactly)."""
        w = self.expand.weight.view(self.regions, self.c2, self.c1, -1)
        w.mul_(s.view(1, -1, 1, 1).to(w))

    def init_from_conv_(self, weight: torch.Tensor) -> None:
        """Not possible: the paper's generator has no input-independent term to hold a fixed kernel."""
        raise NotImplementedError(
            "the 'paper' filter generator cannot start from a pretrained Conv (every filter depends on the input); "
            "use generator='official' to fine-tune from pretrained weights"
        )


GENERATORS = {"official": OfficialFilterGenerator, "paper": PaperFilterGenerator}
GENERATOR_OPTIONS = {"official": ("bases",), "paper": ("hidden",)}  # the options each generator takes
COMMON_OPTIONS = ["regions", "generator", "impl", "centre_guide"]  # the options every DRConv takes


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class OptionError(ValueError):
    """A DRConv option with a wrong value; ``option`` names it, ``problem`` says what is wrong."""

    def __init__(self, option: str, problem: str):
        super().__init__(f"{option} {problem}")
        self.option, self.problem = option, problem


def check_options(
    regions: int, generator: str = "official", impl: str = "auto", centre_guide: bool = False, **generator_kwargs
) -> None:
    """Check DRConv's options before anything is built.

    Args:
        regions (int): Number of regions m, an int >= 1.
        generator (str): One of ``GENERATORS``.
        impl (str): One of ``IMPLEMENTATIONS``.
        centre_guide (bool): Whether the guide logits are centred (see :func:`centre_guide`).
        **generator_kwargs: The chosen generator's options only: ``bases`` (int >= 1) for ``official``, ``hidden``
            (a positive multiple of ``regions``) for ``paper``.

    Raises:
        OptionError: Naming the option and the wrong value.
    """
    if not _is_int(regions) or regions < 1:
        raise OptionError("regions", f"must be an int >= 1, got {regions!r}")
    if generator not in GENERATORS:
        raise OptionError("generator", f"must be one of {list(GENERATORS)}, got {generator!r}")
    if impl not in IMPLEMENTATIONS:
        raise OptionError("impl", f"must be one of {list(IMPLEMENTATIONS)}, got {impl!r}")
    if not isinstance(centre_guide, bool):
        raise OptionError("centre_guide", f"must be true or false, got {centre_guide!r}")
    for key in generator_kwargs:
        if key not in GENERATOR_OPTIONS[generator]:
            owner = [g for g, keys in GENERATOR_OPTIONS.items() if key in keys]
            if not owner:
                raise OptionError(key, f"is not a DRConv option (options: {COMMON_OPTIONS} and "
                                  f"{GENERATOR_OPTIONS})")  # fmt: skip
            raise OptionError(key, f"belongs to generator {owner[0]!r}, not to generator {generator!r}")
    bases, hidden = generator_kwargs.get("bases"), generator_kwargs.get("hidden")
    if bases is not None and (not _is_int(bases) or bases < 1):
        raise OptionError("bases", f"must be an int >= 1, got {bases!r}")
    if hidden is not None and (not _is_int(hidden) or hidden < 1 or hidden % regions):
        raise OptionError("hidden", f"must be a positive multiple of regions={regions}, got {hidden!r}")


class RegionAwareConv(nn.Module):
    """Leaf module around ``region_aware_conv2d`` so module-hook FLOP counters (thop) can count the dynamic conv.

    Args:
        stride (int): Convolution stride.
        padding (int): Zero padding.
        dilation (int): Kernel dilation.
        impl (str): Implementation, see ``region_aware_conv2d``.
    """

    def __init__(self, stride: int = 1, padding: int = 0, dilation: int = 1, impl: str = "auto"):
        super().__init__()
        self.stride, self.padding, self.dilation, self.impl = stride, padding, dilation, impl
        self.register_parameter("bias", None)  # a fused layer's bias (see DRConv2d.fold_bn_)

    def forward(self, x, weight, guide, bias=None, coef=None, bases=None, activation=None):
        """x (B, c1, H, W), guide (B, m, Ho, Wo), bias (c2,) -> (B, c2, Ho, Wo).

        Filters are either ``weight`` (B, m, c2, c1, k, k) or, with ``weight=None``, the mix ``coef`` (B, m, n) of
        ``bases`` (n, c2, c1, k, k). Without ``bias``, the module's own (fused) bias is used, if any. ``activation``
        is applied to the output (see ``region_aware_conv2d``).
        """
        if bias is None:  # .get: modules pickled by v0.1 have no such entry
            bias = self._parameters.get("bias")
        conf = (self.stride, self.padding, self.dilation, bias, self.impl, activation)
        if weight is None:
            return region_aware_conv2d_mixed(x, coef, bases, guide, *conf)
        return region_aware_conv2d(x, weight, guide, *conf)

    def extra_repr(self) -> str:
        return f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, impl={self.impl!r}"


class DRConv2d(nn.Module):
    """Dynamic region-aware convolution: a k x k guide conv splits the output into m regions and each region is
    convolved with its own filter, generated from the input.

    Args:
        c1 (int): Input channels.
        c2 (int): Output channels.
        k (int): Kernel size (odd).
        s (int): Stride.
        p (int, optional): Padding; None gives same-padding (``autopad``).
        d (int): Dilation.
        regions (int): Number of regions m (paper: 8).
        bias (bool): Add a learnable per-channel bias (shared by all regions).
        generator (str): Filter generator, ``"official"`` (default) or ``"paper"``.
        impl (str): Op implementation: ``"auto"``, ``"fast"``, ``"grouped"``, ``"reference"`` or ``"onnx"``.
        own_guide (bool): Hold a guide conv (default). False for a DRConv whose guided mask comes from outside,
            as in a block whose DRConvs share one mask: ``forward(x, guide)`` then needs it.
        centre_guide (bool): Centre the own guide's logits per image before the argmax (see :func:`centre_guide`),
            a remedy for layers that collapse to one region; default False, the paper's mask. A guide passed to
            ``forward`` is used as given (its owner centres it).
        **generator_kwargs: Passed to the generator (``bases`` for official, ``hidden`` for paper).
    """

    # State-dict layout version (torch keeps it in the state dict's metadata). Version 1 is the only layout so far;
    # a state dict of a newer layout is refused by name rather than loaded wrongly. When the layout changes, bump
    # this and convert the older layouts in _load_from_state_dict.
    _version = 1
    centre_guide = False  # class default: modules pickled before the option existed have no such attribute

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing, unexpected, error_msgs):
        version = local_metadata.get("version")
        if version is not None and version > self._version:
            error_msgs.append(
                f"{prefix.rstrip('.') or 'DRConv2d'}: state-dict layout version {version} was written by a newer "
                f"drconv-yolo (this one reads version {self._version}); upgrade drconv-yolo"
            )
            return
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing, unexpected, error_msgs)

    def __init__(
        self,
        c1: int,
        c2: int,
        k: int = 1,
        s: int = 1,
        p: Optional[int] = None,
        d: int = 1,
        regions: int = DEFAULT_REGIONS,
        bias: bool = True,
        generator: str = "official",
        impl: str = "auto",
        own_guide: bool = True,
        centre_guide: bool = False,
        **generator_kwargs,
    ):
        super().__init__()
        for name, value, low in (("c1", c1, 1), ("c2", c2, 1), ("k", k, 1), ("s", s, 1), ("d", d, 1)):
            if not isinstance(value, int) or value < low:
                raise ValueError(f"DRConv2d: {name} must be an int >= {low}, got {value!r}")
        if k % 2 == 0:
            raise ValueError(f"DRConv2d: kernel size k must be odd, got {k}")
        try:
            check_options(regions, generator, impl, centre_guide, **generator_kwargs)
        except ValueError as e:
            raise ValueError(f"DRConv2d: {e}") from None
        p = autopad(k, p, d)
        self.c1, self.c2, self.k, self.s, self.p, self.d, self.regions = c1, c2, k, s, p, d, regions
        self.guide = nn.Conv2d(c1, regions, k, s, p, dilation=d) if own_guide else None
        self.centre_guide = centre_guide
        self.generator = GENERATORS[generator](c1, c2, k, regions, **generator_kwargs)
        self.op = RegionAwareConv(s, p, d, impl)
        self.bias = nn.Parameter(torch.zeros(c2)) if bias else None

    def forward(self, x: torch.Tensor, guide: Optional[torch.Tensor] = None, activation=None) -> torch.Tensor:
        """x (B, c1, H, W) -> (B, c2, Ho, Wo); ``guide`` (B, m, Ho, Wo): logits from outside, else the own guide's;
        ``activation``: applied to the output, by the export inside the op (see ``region_aware_conv2d``)."""
        if not torch.jit.is_tracing() and (x.dim() != 4 or x.shape[1] != self.c1):
            raise ValueError(f"DRConv2d: expected input (B, {self.c1}, H, W), got shape {tuple(x.shape)}")
        if x.device.type == "cpu":  # one layout change, shared by the guide conv (faster) and the op's gather
            x = self._channels_last(x)
        if guide is None:
            if self.guide is None:
                raise ValueError("DRConv2d: this layer has no guide conv of its own (own_guide=False): pass guide=")
            guide = self.guide_logits(x)
        gen = self.generator
        if isinstance(gen, OfficialFilterGenerator):  # let the op mix the filters: they are never materialised
            return self.op(x, None, guide, self.bias, gen.coefficients(x), gen.bases_5d(), activation)
        return self.op(x, gen(x), guide, self.bias, activation=activation)

    def _channels_last(self, x: torch.Tensor) -> torch.Tensor:
        """x in channels-last memory; the copy in scratch memory when autograd records nothing (nothing keeps it) and
        nothing traces (a traced scratch buffer would fix the batch size of an export)."""
        if x.is_contiguous(memory_format=torch.channels_last):
            return x
        if records_grad(x, *self.parameters()) or is_tracing():
            return x.contiguous(memory_format=torch.channels_last)
        B, C, H, W = x.shape
        nhwc = scratch("drconv_input", (B, H, W, C), x.dtype, x.device)
        return nhwc.copy_(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # (B, C, H, W), channels-last

    def guide_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The own guide's logits (B, m, Ho, Wo), centred if ``centre_guide``."""
        guide = self.guide(x)
        return centre_guide(guide) if self.centre_guide else guide

    def regions_map(self, x: torch.Tensor) -> torch.Tensor:
        """The guided mask: region index (B, Ho, Wo) chosen at each output pixel (own guide conv only)."""
        return self.guide_logits(x).argmax(1)

    @torch.no_grad()
    def init_from_conv_(self, conv: nn.Conv2d) -> None:
        """Start as ``conv``: every region's filter is its weight (same output before training). Needs ``official``."""
        if conv.weight.shape != (self.c2, self.c1, self.k, self.k):
            raise ValueError(
                f"DRConv2d: cannot start from a conv of weight shape {tuple(conv.weight.shape)}, "
                f"expected {(self.c2, self.c1, self.k, self.k)}"
            )
        self.generator.init_from_conv_(conv.weight)
        if conv.bias is not None:
            if self.bias is None:
                self.bias = nn.Parameter(conv.bias.detach().clone())
            else:
                self.bias.copy_(conv.bias)
        elif self.bias is not None:
            self.bias.zero_()

    @torch.no_grad()
    def fold_bn_(self, bn: nn.BatchNorm2d) -> None:
        """Fold an eval-mode BatchNorm that follows this layer into the generated filters and the bias.

        The folded bias lives in the op (a child module), not here: Ultralytics reads a model's input channels from
        its first parameter's ``shape[1]``, which must stay the guide conv's weight (m, c1, k, k).
        """
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (c2,)
        self.generator.scale_out_(scale)
        bias = torch.zeros_like(bn.running_mean) if self.bias is None else self.bias.detach()
        self.bias = None
        self.op.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias)

    def extra_repr(self) -> str:
        centred = ", centre_guide=True" if self.centre_guide else ""
        return f"{self.c1}, {self.c2}, k={self.k}, s={self.s}, p={self.p}, d={self.d}, regions={self.regions}{centred}"


class DRConv(nn.Module):
    """DRConv2d + BatchNorm2d + activation, a drop-in for Ultralytics' ``Conv(c1, c2, k, s, p, g, d, act)``.

    Args:
        c1 (int): Input channels.
        c2 (int): Output channels.
        k (int): Kernel size (odd).
        s (int): Stride.
        p (int, optional): Padding; None gives same-padding.
        g (int): Groups; only 1 is supported (a grouped dynamic conv is not defined by the paper).
        d (int): Dilation.
        act (bool | nn.Module): True for SiLU, a module to use it, anything else for identity.
        regions (int): Number of regions m.
        **kwargs: Passed to ``DRConv2d`` (``generator``, ``impl``, ``centre_guide``, ``bases``, ``hidden``).
    """

    default_act = nn.SiLU()

    def __init__(self, c1, c2, k=1, s=1, p=None, g=1, d=1, act=True, regions=DEFAULT_REGIONS, **kwargs):
        super().__init__()
        if g != 1:
            raise ValueError(f"DRConv: groups g={g} is not supported (only g=1); use Conv for grouped convolutions")
        self.conv = DRConv2d(c1, c2, k, s, p, d, regions, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(c2)
        self.act = self.default_act if act is True else act if isinstance(act, nn.Module) else nn.Identity()

    def forward(self, x: torch.Tensor, guide: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Apply convolution, batch normalization and activation (``guide``: see ``DRConv2d.forward``)."""
        return self.act(self.bn(self.conv(x, guide)))

    def forward_fuse(self, x: torch.Tensor, guide: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Apply the convolution (BatchNorm already folded in) and activation, the latter inside the op (an export
        applies it to each region's product)."""
        return self.conv(x, guide, self.act)

    @property
    def regions(self) -> int:
        """Number of regions m."""
        return self.conv.regions

    def regions_map(self, x: torch.Tensor) -> torch.Tensor:
        """The guided mask (B, Ho, Wo) this layer's own guide conv chooses for input x."""
        return self.conv.regions_map(x)

    def fuse(self) -> DRConv:
        """Fold the BatchNorm into the filter generator and bias; afterwards ``forward`` is ``forward_fuse``."""
        if hasattr(self, "bn"):
            self.conv.fold_bn_(self.bn)
            del self.bn
            self.forward = self.forward_fuse
            self.requires_grad_(False)  # as Ultralytics' fused convs: a fused model is for inference
        return self
