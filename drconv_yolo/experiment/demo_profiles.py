"""The built-in default comparison (``drconv-yolo demo``): its profiles, its time model, and :func:`demo`.

:func:`demo` generates (or reuses) the synthetic aerial-scene dataset and compares YOLOv8n with YOLOv8n + DRConv from
scratch, several seeds, one recipe, through :func:`drconv_yolo.experiment.run.compare`.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any, Mapping, Optional, Sequence

from .plan import default_device
from .run import compare
from .settings import CompareError, CompareSettings

__all__ = ["DEMO_MODELS", "DEMO_PROFILES", "DEMO_TRAIN", "demo", "demo_profile", "estimate_seconds"]

DEMO_MODELS = ("yolov8n.yaml", "yolov8n-drconv.yaml")
# A short from-scratch schedule, the same for both arms: warm-up over 1 epoch, no mosaic (it shrinks the objects of
# small images further), AdamW, and an optimizer step after every batch: demo() sets Ultralytics' nominal batch size
# ``nbs`` to the batch size (its default, 64, accumulates 64/batch batches per step: 16 at batch 4, so the 12-epoch
# default profile took 30 steps and reached mAP50-95 of about 0.05). Chosen by measurement on 2 shared CPU cores: the
# default profile ends within 15 minutes there.
DEMO_TRAIN = {"warmup_epochs": 1, "mosaic": 0.0, "optimizer": "AdamW", "lr0": 0.002}
DEMO_PROFILES = {
    "default": {
        "n_train": 160,
        "n_val": 40,
        "imgsz": 128,
        "object_scale": 2.0,
        "epochs": 12,
        "batch": 4,
        "seeds": [0, 1],
        "data_dir": "datasets/synthetic",
    },
    "quick": {
        "n_train": 16,
        "n_val": 8,
        "imgsz": 64,
        "object_scale": 2.0,
        "epochs": 1,
        "batch": 8,
        "seeds": [0, 1],
        "data_dir": "datasets/synthetic-quick",
    },
}
DEMO_OUT = {"default": "runs/demo", "quick": "runs/demo-quick"}
DATA_SEED = 0  # the synthetic dataset is the same for every demo of a profile
DATA_KEYS = ("n_train", "n_val", "imgsz", "object_scale")  # what changes the dataset (another folder then)

# The time model, measured on 2 CPU cores at 128 px, batch 4 (an optimizer step every batch): seconds per training
# image per epoch for (baseline, DRConv arm), per-epoch validation and checkpoints included, and the fixed cost of one
# run (process start, evaluation, latency), half of which grows with the pixels. The full default demo took 12.4
# minutes there (4 runs: 1.9-2.1 min per baseline run, 4.1-4.3 min per DRConv run).
COST_IMG_S = (0.057, 0.124)
COST_RUN_S = 15.0
COST_RUN_PIXEL_SHARE = 0.5
COST_IMGSZ = 128
COST_CORES = 2
MAX_SCALED_CORES = 16  # more cores than this are not assumed to speed the demo up further


def estimate_seconds(profile: Mapping[str, Any], device: str) -> Optional[float]:
    """Rough wall time of a demo profile on CPU, scaled from the time model by pixels and cores.

    Args:
        profile: A :data:`DEMO_PROFILES` entry (possibly overridden).
        device: The device string.

    Returns:
        Seconds, or None when not on CPU.
    """
    if device != "cpu":
        return None
    px = (profile["imgsz"] / COST_IMGSZ) ** 2
    cores = COST_CORES / max(1, min(os.cpu_count() or COST_CORES, MAX_SCALED_CORES))
    train = sum(COST_IMG_S) * px * cores * profile["n_train"] * profile["epochs"]
    runs = len(profile["seeds"]) * len(DEMO_MODELS)
    run_s = COST_RUN_S * (1 - COST_RUN_PIXEL_SHARE + COST_RUN_PIXEL_SHARE * px)
    return len(profile["seeds"]) * train + runs * run_s


def demo_profile(
    quick: bool = False,
    out: Optional[str] = None,
    data_dir: Optional[str] = None,
    *,
    seeds: Optional[Sequence[int]] = None,
    epochs: Optional[int] = None,
    imgsz: Optional[int] = None,
    batch: Optional[int] = None,
    n_train: Optional[int] = None,
    n_val: Optional[int] = None,
) -> dict[str, Any]:
    """A profile after ``--quick`` and the options that override it (None keeps the profile's value).

    Args:
        quick: Start from the ``quick`` profile instead of ``default``.
        out: Output folder (default :data:`DEMO_OUT` of the profile).
        data_dir: Synthetic dataset folder; default the profile's, or a folder named after the sizes when they differ
            from the profile's.
        seeds: Training seeds.
        epochs: Training epochs.
        imgsz: Image size of the dataset and the training.
        batch: Batch size.
        n_train: Synthetic training images.
        n_val: Synthetic validation images.

    Returns:
        The profile, with ``out`` and ``name`` (``"quick"`` or ``"default"``).
    """
    base = "quick" if quick else "default"
    given = {"seeds": seeds, "epochs": epochs, "imgsz": imgsz, "batch": batch, "n_train": n_train, "n_val": n_val}
    profile = {**DEMO_PROFILES[base], **{k: v for k, v in given.items() if v is not None}}
    if data_dir:
        profile["data_dir"] = data_dir
    elif any(profile[k] != DEMO_PROFILES[base][k] for k in DATA_KEYS):
        profile["data_dir"] = f"datasets/synthetic-{profile['n_train']}-{profile['n_val']}-{profile['imgsz']}"
    profile["out"] = out or DEMO_OUT[base]
    profile["name"] = base
    return profile


def _dataset(profile: Mapping[str, Any]) -> str:
    """Generate the profile's synthetic dataset (reused when already there); returns its YAML."""
    from ..data.synthetic import generate

    try:
        return str(
            generate(
                profile["data_dir"],
                n_train=profile["n_train"],
                n_val=profile["n_val"],
                imgsz=profile["imgsz"],
                object_scale=profile["object_scale"],
                seed=DATA_SEED,
            )
        )
    except (ValueError, FileExistsError) as e:  # bad sizes, or the folder holds something else
        raise CompareError(f"synthetic dataset {profile['data_dir']}: {e} (choose another --data-dir)") from None


def demo(
    profile: Mapping[str, Any],
    device: Optional[str] = None,
    overrides: Optional[Mapping[str, Any]] = None,
    **settings: Any,
) -> dict[str, Any]:
    """Generate (or reuse) the synthetic dataset and compare YOLOv8n with and without DRConv.

    Args:
        profile: ``n_train``, ``n_val``, ``imgsz``, ``object_scale``, ``epochs``, ``batch``, ``seeds``, ``data_dir``,
            ``out`` (see :data:`DEMO_PROFILES` and :func:`demo_profile`).
        device: Ultralytics device (default GPU 0 if available, else CPU).
        overrides: Further Ultralytics train arguments (on top of :data:`DEMO_TRAIN` and ``nbs`` = the batch size).
        **settings: Further :class:`CompareSettings` fields (``workers``, ``max_det``, ``latency_runs``,
            ``in_process``, ``command``, ...).

    Returns:
        :func:`compare`'s result.
    """
    device = str(device) if device not in (None, "") else default_device()
    asked = CompareSettings(
        data="",  # generated below, once the options are known to be valid
        models=list(DEMO_MODELS),
        seeds=profile["seeds"],
        epochs=profile["epochs"],
        imgsz=profile["imgsz"],
        batch=profile["batch"],
        device=device,
        out=profile["out"],
        overrides={**DEMO_TRAIN, "nbs": profile["batch"], **dict(overrides or {})},
        **settings,
    )
    asked.validate()  # a refused option generates nothing
    est = estimate_seconds(profile, device)
    when = (
        f"estimate ~{est / 60:.0f} min (measured on {COST_CORES} CPU cores, scaled)"
        if est
        else "estimate: minutes on a GPU"
    )
    print(
        f"demo ({profile.get('name', 'custom')} profile): {' vs '.join(DEMO_MODELS)}, {len(profile['seeds'])} "
        f"seeds x {profile['epochs']} epochs, {profile['n_train']} train images at {profile['imgsz']} px on "
        f"{device}; {when}",
        flush=True,
    )
    return compare(replace(asked, data=_dataset(profile)))
