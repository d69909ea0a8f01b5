"""Standard evaluation: Ultralytics validation plus pycocotools against a COCO-format ground truth.

:func:`evaluate` runs ``YOLO(model).val(data=..., save_json=True, max_det=...)``, keeps Ultralytics' own mAP50 and
mAP50-95, maps its JSON predictions onto the ground truth and scores them with pycocotools (:func:`coco_metrics`):
AP, AP50, AP75, APs, APm, APl, AR at maxDets 1/10/100/``max_det`` and per-class AP. Everything goes to a JSON file
(written atomically) and is printed as a table.

Mapping Ultralytics' predictions (ultralytics 8.3/8.4 ``DetectionValidator.pred_to_json``):

* ``image_id`` is ``int(stem)`` when the image stem is numeric, else the stem; 8.4 also writes ``file_name``.
  Predictions are matched to ground-truth images by file name when present, else by that stem key.
* ``category_id`` is ``class_map[class]``: ``1..nc`` for any dataset, except COCO-style datasets whose ``val`` is a
  ``.../val2017.txt`` list (then COCO's 91-id map). The validator's actual ``class_map`` is read back, inverted to
  the YOLO class, and the class is mapped to the ``i``-th ground-truth category (ascending id).

pycocotools caps detections per image *and category* at ``maxDets``, Ultralytics caps them per image: AP here uses
``maxDets = max_det`` (COCO's official summary uses 100: pass ``max_det=100`` to reproduce it). Use ``max_det=1000``
on VisDrone. Ultralytics' own COCO pass (faster-coco-eval, which it may try to pip-install) is skipped.

The ground truth is the one given, else the one ``prepare`` wrote, else one built from the split's YOLO labels and
cached (:func:`drconv_yolo.data.yolo.resolve_ground_truth`); it is checked against the split's images and the
model's classes before validation runs. ``imgsz`` defaults to the checkpoint's training size.

The command line is :mod:`drconv_yolo.cli.eval`.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .data.yolo import GroundTruth, resolve_ground_truth
from .errors import UserError
from .io import DataError, DataNotFoundError, atomic_write_json, read_gt_json

__all__ = [
    "EvaluationError",
    "check_categories",
    "coco_metrics",
    "default_gt_cache",
    "evaluate",
    "format_report",
    "load_yolo",
    "map_predictions",
]

_AREAS = {"all": 0, "small": 1, "medium": 2, "large": 3}  # pycocotools' default areaRngLbl order
COCO_MAX_DETS = (1, 10, 100)  # pycocotools' default maxDets below the largest; 100 is COCO's official one
OFFICIAL_MAX_DETS = 100
IOU_AP50, IOU_AP75 = 0.5, 0.75
DEFAULT_MAX_DET = 300  # Ultralytics' default
DEFAULT_IMGSZ = 640
DEFAULT_BATCH = 16
DEFAULT_CONF = 0.001  # Ultralytics' validation default: keep (nearly) every detection for mAP
DEFAULT_IOU = 0.7  # Ultralytics' NMS IoU default
BOX_TASKS = ("detect", "segment", "pose")  # tasks whose predictions carry boxes
REPORT_FILE = "coco_eval.json"
IMGSZ_SOURCES = {
    "given": "as given",
    "checkpoint": "the checkpoint's training size",
    "default": "the default: the model carries no training size",
}
GT_CACHE_FOLDER = "ground_truth"  # beside the run folders: built ground truths, keyed by dataset fingerprint
PREDICTIONS_FILE = "predictions_gt_ids.json"
REPORT_INDENT = 1
EXAMPLES_SHOWN = 5  # image ids or class names quoted in a message
COLUMN = 8  # width of a figure column in the printed report
MIN_NAME_WIDTH = 5


class EvaluationError(UserError, ValueError):
    """The model or dataset cannot be evaluated as asked (no such split, a task without boxes)."""


# ----------------------------------------------------------------------------------------------------------------------
# pycocotools scoring (pure)
# ----------------------------------------------------------------------------------------------------------------------


def _quiet():
    """Silence pycocotools' progress prints."""
    return contextlib.redirect_stdout(io.StringIO())


def _load_gt(gt_json: str | Path | Mapping):
    """Return a pycocotools ``COCO`` object for a path or an already parsed ground-truth dict."""
    from pycocotools.coco import COCO

    dataset = copy.deepcopy(dict(gt_json)) if isinstance(gt_json, Mapping) else read_gt_json(gt_json)
    dataset.setdefault("info", {})
    coco = COCO()
    coco.dataset = dataset
    with _quiet():
        coco.createIndex()
    return coco


def _load_results(gt, predictions: list[dict]):
    """Return a pycocotools result object; unlike ``loadRes`` this also accepts an empty list."""
    from pycocotools.coco import COCO

    known = set(gt.getImgIds())
    unknown = sorted({str(p["image_id"]) for p in predictions if p["image_id"] not in known})
    if unknown:
        raise DataError(
            f"{len(unknown)} prediction image id(s) not in the ground truth, e.g. {unknown[:EXAMPLES_SHOWN]}"
        )
    if predictions:
        with _quiet():
            return gt.loadRes(predictions)
    res = COCO()
    res.dataset = {"images": list(gt.dataset["images"]), "categories": copy.deepcopy(gt.dataset["categories"])}
    res.dataset["annotations"] = []
    with _quiet():
        res.createIndex()
    return res


def _mean_valid(x: np.ndarray) -> float | None:
    """Mean of the entries > -1 (pycocotools marks undefined cells with -1), or ``None`` if there are none."""
    valid = x[x > -1]
    return float(np.mean(valid)) if valid.size else None


def coco_metrics(
    gt_json: str | Path | Mapping,
    predictions: Iterable[Mapping[str, Any]] | str | Path,
    max_det: int = DEFAULT_MAX_DET,
    img_ids: Iterable[int] | None = None,
) -> dict[str, Any]:
    """Score COCO-format box predictions against a ground truth with pycocotools.

    Pure function: no model, no printing; the inputs are not modified.

    Args:
        gt_json: Ground-truth JSON path or parsed dict (``images``, ``annotations``, ``categories``).
        predictions: ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` per detection, with ground-truth
            image and category ids, or a path to a JSON list of them.
        max_det: Largest maxDets: ``params.maxDets = [1, 10, 100, max_det]`` (values above ``max_det`` dropped).
            AP and the area-range figures use ``max_det``.
        img_ids: Restrict the evaluation to these ground-truth image ids (default: all images).

    Returns:
        ``{"AP", "AP50", "AP75", "APs", "APm", "APl", "AP_maxDets100", "AR@1", "AR@10", "AR@100",
        "AR@<max_det>", "ARs", "ARm", "ARl", "max_dets", "n_images", "n_predictions", "n_gt", "per_class"}``
        (``AP_maxDets100``: AP with COCO's official maxDets=100, ``None`` when ``max_det < 100``). Figures are in
        [0, 1], ``None`` where pycocotools has nothing to average (no ground truth in that area range: its -1).
        ``per_class`` is a list of ``{"category_id", "name", "class", "n_gt", "AP", "AP50", "AP75", "AR"}`` in
        category-id order (``class``: YOLO index; ``AR`` at ``max_det``).

    Raises:
        DataError: If a prediction refers to an image id absent from the ground truth.
        DataNotFoundError: If the ground-truth JSON file is missing.
    """
    from pycocotools.cocoeval import COCOeval

    if isinstance(predictions, (str, Path)):
        with open(predictions, encoding="utf-8") as f:
            predictions = json.load(f)
    preds = [{**p, "bbox": [float(v) for v in p["bbox"]]} for p in predictions]
    gt = _load_gt(gt_json)
    dt = _load_results(gt, preds)
    max_det = int(max_det)
    max_dets = sorted({d for d in COCO_MAX_DETS if d < max_det} | {max_det})
    ev = COCOeval(gt, dt, "bbox")
    ev.params.maxDets = max_dets
    if img_ids is not None:
        ev.params.imgIds = sorted(set(img_ids))
    with _quiet():
        ev.evaluate()
        ev.accumulate()
    precision, recall = ev.eval["precision"], ev.eval["recall"]  # [T, R, K, A, M], [T, K, A, M]
    m = len(max_dets) - 1
    t50, t75 = (int(np.argmin(np.abs(ev.params.iouThrs - t))) for t in (IOU_AP50, IOU_AP75))
    out: dict[str, Any] = {
        "AP": _mean_valid(precision[:, :, :, 0, m]),
        "AP50": _mean_valid(precision[t50, :, :, 0, m]),
        "AP75": _mean_valid(precision[t75, :, :, 0, m]),
    }
    for key, area in (("APs", "small"), ("APm", "medium"), ("APl", "large")):
        out[key] = _mean_valid(precision[:, :, :, _AREAS[area], m])
    # COCO's official AP[.50:.95] uses maxDets=100: reported beside it for comparison with published COCO figures.
    official = max_dets.index(OFFICIAL_MAX_DETS) if OFFICIAL_MAX_DETS in max_dets else None
    out["AP_maxDets100"] = None if official is None else _mean_valid(precision[:, :, :, 0, official])
    for i, d in enumerate(max_dets):
        out[f"AR@{d}"] = _mean_valid(recall[:, :, 0, i])
    for key, area in (("ARs", "small"), ("ARm", "medium"), ("ARl", "large")):
        out[key] = _mean_valid(recall[:, :, _AREAS[area], m])
    image_set = set(ev.params.imgIds)
    gt_anns = [a for a in gt.dataset["annotations"] if a["image_id"] in image_set and not a.get("iscrowd", 0)]
    out.update(
        max_dets=max_dets,
        n_images=len(image_set),
        n_predictions=sum(p["image_id"] in image_set for p in preds),
        n_gt=len(gt_anns),
        per_class=_per_class(ev, gt, gt_anns, t50, t75, m),
    )
    return out


def _per_class(ev, gt, gt_anns: list[dict], t50: int, t75: int, m: int) -> list[dict[str, Any]]:
    """Per-category AP/AP50/AP75/AR at the largest maxDets."""
    precision, recall = ev.eval["precision"], ev.eval["recall"]
    n_gt: dict[int, int] = {}
    for a in gt_anns:
        n_gt[a["category_id"]] = n_gt.get(a["category_id"], 0) + 1
    rows = []
    for k, cat_id in enumerate(ev.params.catIds):  # sorted category ids, so k is the YOLO class index
        cat_id = int(cat_id)  # pycocotools hands back numpy integers
        rows.append(
            {
                "category_id": cat_id,
                "name": gt.cats[cat_id].get("name", str(cat_id)),
                "class": k,
                "n_gt": n_gt.get(cat_id, 0),
                "AP": _mean_valid(precision[:, :, k, 0, m]),
                "AP50": _mean_valid(precision[t50, :, k, 0, m]),
                "AP75": _mean_valid(precision[t75, :, k, 0, m]),
                "AR": _mean_valid(recall[:, k, 0, m]),
            }
        )
    return rows


# ----------------------------------------------------------------------------------------------------------------------
# Ultralytics predictions -> ground-truth ids
# ----------------------------------------------------------------------------------------------------------------------


def _stem_key(stem: str) -> int | str:
    """Ultralytics' prediction image id for a file stem: ``int(stem)`` if numeric, else the stem."""
    return int(stem) if stem.isnumeric() else stem


def map_predictions(
    predictions: Iterable[Mapping[str, Any]], gt: Mapping, class_map: Sequence[int] | None = None
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Map Ultralytics JSON predictions onto ground-truth image and category ids.

    Args:
        predictions: Ultralytics' ``predictions.json`` rows (``image_id``, optional ``file_name``, ``category_id``,
            ``bbox``, ``score``).
        gt: Parsed ground-truth JSON (``images`` with ``file_name``; ``categories``, the i-th by ascending id being
            YOLO class ``i``).
        class_map: The validator's ``class_map`` (YOLO class -> prediction ``category_id``); default
            ``1..len(categories)``.

    Returns:
        ``(mapped predictions, counts)`` where counts has ``"mapped"``, ``"unknown_image"`` (no ground-truth image,
        or several, with that file name or stem) and ``"unknown_class"`` (a class the ground truth has no category
        for).
    """
    by_name: dict[str, Any] = {}
    by_stem: dict[int | str, Any] = {}
    ambiguous = object()  # two ground-truth images share this name or stem key: predictions cannot be placed
    for im in gt["images"]:
        name = Path(im["file_name"]).name
        key = _stem_key(Path(name).stem)
        by_name[name] = ambiguous if name in by_name else im["id"]
        by_stem[key] = ambiguous if key in by_stem else im["id"]
    categories = sorted(c["id"] for c in gt["categories"])
    class_map = list(class_map) if class_map is not None else list(range(1, len(categories) + 1))
    class_of = {int(c): i for i, c in enumerate(class_map)}
    mapped, counts = [], {"mapped": 0, "unknown_image": 0, "unknown_class": 0}
    for p in predictions:
        image_id = by_name.get(Path(str(p.get("file_name", ""))).name) if p.get("file_name") else None
        if image_id is None or image_id is ambiguous:
            raw = p["image_id"]
            image_id = by_stem.get(raw if isinstance(raw, int) else _stem_key(str(raw)))
        cls = class_of.get(int(p["category_id"]))
        if image_id is None or image_id is ambiguous:
            counts["unknown_image"] += 1
        elif cls is None or cls >= len(categories):
            counts["unknown_class"] += 1
        else:
            bbox = [float(v) for v in p["bbox"]]
            mapped.append({"image_id": image_id, "category_id": categories[cls], "bbox": bbox, "score": p["score"]})
            counts["mapped"] += 1
    return mapped, counts


# ----------------------------------------------------------------------------------------------------------------------
# Model evaluation
# ----------------------------------------------------------------------------------------------------------------------


def train_imgsz(yolo) -> int | list[int] | None:
    """The image size a checkpoint was trained at (its saved ``train_args``), or ``None`` (a model YAML, weights
    saved without training). Not ``model.args``: Ultralytics fills that with its 640 default when the size is unknown.
    """
    ckpt = getattr(yolo, "ckpt", None) or {}
    return (ckpt.get("train_args") or {}).get("imgsz")


def _imgsz(imgsz: int | None, yolo) -> tuple[int | list[int], str]:
    """The inference size to use and where it comes from (a key of :data:`IMGSZ_SOURCES`)."""
    if imgsz:
        return imgsz, "given"
    trained = train_imgsz(yolo)
    return (trained, "checkpoint") if trained else (DEFAULT_IMGSZ, "default")


def default_gt_cache(out: str | Path | None, project: str | Path | None, task: str) -> Path:
    """Where :func:`evaluate` caches ground truths it builds: beside ``out``, else in the run folder's parent.

    The run folder's parent is Ultralytics' own choice: ``project`` if absolute, else ``<runs_dir>/<task>/<project>``.
    """
    if out is not None:
        return Path(out).resolve().parent / GT_CACHE_FOLDER
    if project is not None and Path(project).is_absolute():
        return Path(project) / GT_CACHE_FOLDER
    from ultralytics.utils import SETTINGS

    return Path(SETTINGS["runs_dir"]) / task / (project or "") / GT_CACHE_FOLDER


def check_categories(gt: Mapping, path: str | Path, names: Mapping[int, str] | Sequence[str], model: Any) -> None:
    """Refuse a ground truth with more categories than the model has classes (the i-th category is class ``i``).

    Raises:
        EvaluationError: Naming the file, the category ids beyond the model's classes and the model.
    """
    ids = sorted(c["id"] for c in gt["categories"])
    if len(ids) > len(names):
        raise EvaluationError(
            f"ground truth {path} has {len(ids)} categories but the model {model} only {len(names)} classes: "
            f"category ids {ids[len(names) :][:EXAMPLES_SHOWN]} are outside the model's classes"
        )


def _validator_class(yolo):
    """Subclass the model's validator to keep it (for its class_map, jdict, ...) and skip its own COCO pass."""
    base = yolo.task_map[yolo.task]["validator"]

    class _KeepValidator(base):
        instance = None

        def finalize_metrics(self, *args, **kwargs):
            type(self).instance = self
            return super().finalize_metrics(*args, **kwargs)

        def eval_json(self, stats):  # pycocotools runs afterwards on the prepared ground truth instead
            return stats

    return _KeepValidator


def evaluate(
    model: Any,
    data: str | Path,
    *,
    gt_json: str | Path | GroundTruth | None = None,
    max_det: int = DEFAULT_MAX_DET,
    imgsz: int | None = None,
    batch: int = DEFAULT_BATCH,
    device: str | int | None = None,
    conf: float = DEFAULT_CONF,
    iou: float = DEFAULT_IOU,
    split: str = "val",
    project: str | Path | None = None,
    name: str | None = None,
    out: str | Path | None = None,
    gt_cache: str | Path | None = None,
    plots: bool = False,
    verbose: bool = True,
    **val_kwargs: Any,
) -> dict[str, Any]:
    """Validate a model with Ultralytics and score its predictions with pycocotools.

    The ground truth and the model are checked before validation starts: a ground truth that does not describe the
    split's images (file names, sizes) or has categories beyond the model's classes is an error, not a warning.

    Args:
        model: Weights or model YAML path (anything ``ultralytics.YOLO`` accepts) or a ``YOLO`` object.
        data: Dataset YAML: any that ``yolo val`` accepts.
        gt_json: Ground-truth JSON, or a :class:`~drconv_yolo.data.yolo.GroundTruth` already resolved; default
            ``<dataset path>/annotations/instances_<split>.json`` if present, else built from the split's YOLO
            labels and cached in ``gt_cache`` (see :func:`~drconv_yolo.data.yolo.resolve_ground_truth`).
        max_det: Detections per image, for Ultralytics and as pycocotools' largest maxDets (1000 for VisDrone).
            If Ultralytics raises its default 300 to the densest image's object count, that value is used for both.
        imgsz: Inference size; default the checkpoint's training size, else :data:`DEFAULT_IMGSZ`.
        batch: Batch size.
        device: Ultralytics device string (``"cpu"``, ``0``, ...); default: Ultralytics' choice.
        conf: Confidence threshold (keep 0.001 for mAP).
        iou: NMS IoU threshold.
        split: Dataset split to evaluate (``"val"`` or ``"test"``).
        project: Ultralytics run folder parent.
        name: Ultralytics run folder name.
        out: Report JSON path; default ``<run folder>/coco_eval.json``.
        gt_cache: Folder for built ground truths; default :func:`default_gt_cache` (outside the dataset).
        plots: Let Ultralytics draw its plots.
        verbose: Print Ultralytics' per-class table and the report table.
        **val_kwargs: Further ``YOLO.val`` arguments (``half``, ``workers``, ``rect``, ...).

    Returns:
        The report: ``model``, ``data``, ``split``, ``gt_json``, ``ground_truth`` (``path``, ``source``, ``split``,
        ``fingerprint``), ``max_det`` (used), ``max_det_requested``, ``imgsz``, ``imgsz_source``, ``conf``, ``iou``,
        ``ultralytics`` (``mAP50``, ``mAP50-95``, ``precision``, ``recall``), ``pycocotools`` (see
        :func:`coco_metrics`), ``predictions`` (mapping counts), ``warnings``, ``run_dir``, ``report`` (its path).

    Raises:
        FileNotFoundError: If the model, the dataset or a given ground-truth JSON is missing.
        DataError: If the ground truth is not valid JSON or does not match the split's images.
        EvaluationError: If the task has no boxes to score or the ground truth has categories beyond the model's.
    """
    yolo = _load_model(model)
    truth = gt_json
    if not isinstance(truth, GroundTruth):
        truth = resolve_ground_truth(data, split, gt_json, gt_cache or default_gt_cache(out, project, yolo.task))
    gt = read_gt_json(truth.path)
    check_categories(gt, truth.path, yolo.names, model)
    imgsz, imgsz_source = _imgsz(imgsz, yolo)
    if verbose:
        print(f"eval: ground truth {truth.describe()}", flush=True)
        print(f"eval: imgsz {imgsz} ({IMGSZ_SOURCES[imgsz_source]})", flush=True)
    validator = _validator_class(yolo)
    args = dict(data=str(data), split=split, save_json=True, max_det=int(max_det), imgsz=imgsz, batch=batch)
    args.update(conf=conf, iou=iou, plots=plots, verbose=verbose, **val_kwargs)
    if device is not None:
        args["device"] = device
    if project is not None:
        args["project"] = str(project)
    if name is not None:
        args["name"] = name
    yolo.val(validator=validator, **args)
    v = validator.instance
    report = _report(v, yolo, model, data, split, gt, int(max_det), conf, iou)
    report.update(gt_json=str(truth.path), ground_truth=truth.to_dict(), imgsz=imgsz, imgsz_source=imgsz_source)
    report["warnings"][:0] = list(truth.warnings)
    path = Path(out) if out is not None else Path(v.save_dir) / REPORT_FILE
    report["report"] = str(path)
    atomic_write_json(path, report, indent=REPORT_INDENT)
    if verbose:
        print(format_report(report), flush=True)
    return report


def load_yolo(model: Any):
    """``YOLO(model)`` (or ``model`` itself), a weights file that is not a readable checkpoint refused by name.

    Args:
        model: Weights (``.pt``), a model YAML or a ``YOLO``.

    Returns:
        The ``YOLO``.

    Raises:
        DataNotFoundError: If the weights file is missing.
        EvaluationError: If it is not a checkpoint Ultralytics can load (truncated, another kind of file).
    """
    from ultralytics import YOLO

    if isinstance(model, YOLO):
        return model
    if Path(str(model)).suffix != ".pt":
        return YOLO(str(model))
    if not Path(str(model)).is_file():
        raise DataNotFoundError(f"model weights not found: {model}")
    try:
        return YOLO(str(model))
    except UserError:
        raise
    except Exception as e:  # torch.load and Ultralytics raise many kinds for a file that is not a checkpoint
        reason = (str(e).strip().splitlines() or [""])[0]
        raise EvaluationError(
            f"model weights {model}: not a readable Ultralytics checkpoint ({type(e).__name__}: {reason})"
        ) from None


def _load_model(model: Any):
    """:func:`load_yolo`, refusing a task without boxes."""
    yolo = load_yolo(model)
    if yolo.task not in BOX_TASKS:
        raise EvaluationError(f"cannot score task {yolo.task!r} with box pycocotools ({', '.join(BOX_TASKS)} only)")
    return yolo


def _report(v, yolo, model, data, split, gt: dict, max_det: int, conf, iou) -> dict[str, Any]:
    """Map the validator's predictions, run pycocotools and assemble the report."""
    warnings: list[str] = []
    used_max_det = int(v.args.max_det)
    if used_max_det != max_det:
        warnings.append(f"Ultralytics raised max_det from {max_det} to {used_max_det}; pycocotools uses it too")
    preds, counts = map_predictions(v.jdict, gt, v.class_map)
    for key, what in (("unknown_image", "images absent from the ground truth"), ("unknown_class", "unknown classes")):
        if counts[key]:
            warnings.append(f"{counts[key]} prediction(s) on {what} were left out")
    gt_names = [c["name"] for c in sorted(gt["categories"], key=lambda c: c["id"])]
    model_names = [v.names[i] for i in sorted(v.names)] if isinstance(v.names, dict) else list(v.names)
    if model_names[: len(gt_names)] != gt_names:
        warnings.append(
            f"model class names {model_names[:EXAMPLES_SHOWN]}... differ from ground-truth categories "
            f"{gt_names[:EXAMPLES_SHOWN]}..."
        )
    by_name = {Path(im["file_name"]).name: im["id"] for im in gt["images"]}
    evaluated = [by_name.get(Path(f).name) for f in v.dataloader.dataset.im_files]
    if None in evaluated:
        warnings.append(f"{evaluated.count(None)} evaluated image(s) are not in the ground truth")
    img_ids = [i for i in evaluated if i is not None]
    if len(set(img_ids)) < len(gt["images"]):
        warnings.append(f"{len(gt['images']) - len(set(img_ids))} ground-truth image(s) were not evaluated")
    metrics = v.metrics.results_dict
    atomic_write_json(Path(v.save_dir) / PREDICTIONS_FILE, preds)
    return {
        "model": str(getattr(yolo, "ckpt_path", None) or model),
        "data": str(data),
        "split": split,
        "max_det": used_max_det,
        "max_det_requested": max_det,
        "conf": conf,
        "iou": iou,
        "ultralytics": {
            "mAP50": float(metrics.get("metrics/mAP50(B)", float("nan"))),
            "mAP50-95": float(metrics.get("metrics/mAP50-95(B)", float("nan"))),
            "precision": float(metrics.get("metrics/precision(B)", float("nan"))),
            "recall": float(metrics.get("metrics/recall(B)", float("nan"))),
        },
        "pycocotools": coco_metrics(gt, preds, used_max_det, img_ids),
        "predictions": counts,
        "warnings": warnings,
        "run_dir": str(v.save_dir),
    }


def _fmt(x: float | None) -> str:
    return "    -" if x is None else f"{x:.4f}"


def _table(figures: Mapping[str, Any], keys: Sequence[str]) -> list[str]:
    """Two lines: the keys and their figures, right-aligned in :data:`COLUMN`-wide columns."""
    return [
        "  " + "".join(f"{k:>{COLUMN}}" for k in keys),
        "  " + "".join(f"{_fmt(figures[k]):>{COLUMN}}" for k in keys),
    ]


def format_report(report: Mapping[str, Any]) -> str:
    """Render an :func:`evaluate` report (or ``{"pycocotools": coco_metrics(...)}``) as a text table."""
    c = report["pycocotools"]
    md = c["max_dets"][-1]
    lines = [f"pycocotools bbox evaluation against {report['gt_json']}"] if "gt_json" in report else []
    if "ground_truth" in report:
        lines.append(f"  ground truth: {report['ground_truth']['description']}")
    lines.append(
        f"  {c['n_images']} images, {c['n_gt']} ground-truth boxes, {c['n_predictions']} predictions, "
        f"maxDets {'/'.join(str(d) for d in c['max_dets'])} (AP and area figures at {md})"
    )
    lines += _table(c, ["AP", "AP50", "AP75", "APs", "APm", "APl"])
    lines += _table(c, [f"AR@{d}" for d in c["max_dets"]] + ["ARs", "ARm", "ARl"])
    if md != OFFICIAL_MAX_DETS and c.get("AP_maxDets100") is not None:
        lines.append(f"  AP with COCO's official maxDets={OFFICIAL_MAX_DETS}: {_fmt(c['AP_maxDets100'])}")
    if "ultralytics" in report:
        u = report["ultralytics"]
        lines.append(
            f"Ultralytics (max_det {report['max_det']}): mAP50 {u['mAP50']:.4f}  mAP50-95 {u['mAP50-95']:.4f}  "
            f"P {u['precision']:.4f}  R {u['recall']:.4f}"
        )
    lines += _per_class_table(c["per_class"])
    lines += [f"warning: {w}" for w in report.get("warnings", [])]
    if report.get("report"):
        lines.append(f"report: {report['report']}")
    return "\n".join(lines)


def _per_class_table(per_class: Sequence[Mapping[str, Any]]) -> list[str]:
    """The per-class rows of :func:`format_report`; classes without ground truth or AP are left out."""
    keys = ("AP", "AP50", "AP75", "AR")
    width = max([len(r["name"]) for r in per_class] + [MIN_NAME_WIDTH])
    rows = [r for r in per_class if r["n_gt"] or r["AP"] is not None]
    hidden = len(per_class) - len(rows)
    lines = ["per class (pycocotools)" + (f", {hidden} classes without ground truth not shown:" if hidden else ":")]
    lines.append(f"  {'cls':>4} {'name':<{width}} {'n_gt':>7}" + "".join(f"{k:>{COLUMN}}" for k in keys))
    for r in rows:
        vals = "".join(f"{_fmt(r[k]):>{COLUMN}}" for k in keys)
        lines.append(f"  {r['class']:>4} {r['name']:<{width}} {r['n_gt']:>7}{vals}")
    return lines
