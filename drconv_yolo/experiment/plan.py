"""The plan of a comparison: checked inputs, the arguments shared by every run, one :class:`RunSpec` per arm x seed.

A run's folder is ``OUT/runs/<arm>/seed<k>``; its ``run.json`` (written last) marks it finished and records the
settings it was made with, the data included (the dataset's fingerprint and the ground truth's content), so a second
invocation reuses it only when they match (:func:`run_state`): a changed label is a changed setting.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from .settings import CompareError, CompareSettings, DataInfo, arm_names, check_data, check_model

__all__ = ["RUN_FILE", "Plan", "RunSpec", "default_device", "first_device", "make_plan", "plan_runs", "run_state"]

RUN_FILE = "run.json"  # a run's record, written last: its completion marker
MAX_DIFFS_SHOWN = 6  # settings differences named when an earlier run conflicts
SHORT_HASH = 12  # hex digits of a fingerprint shown in a message
GT_CACHE = "ground_truth"  # OUT/ground_truth: ground truths built from a dataset's YOLO labels
COMPARED = ("model", "train", "eval", "measure", "data")  # RunSpec fields a reused run must match
# Where the ground truth lies is not compared (a built one moves with OUT); its content is (data.gt_sha256).
# left out of reuse: where the deployed latency is measured (a run finished before it existed is reused, its figure n/a)
NOT_COMPARED = {"eval": ("gt_json",), "data": ("gt",), "measure": ("deploy_runtime",)}
# Fixed for every run so arms differ by the model only: reproducible training, no Ultralytics plots.
FIXED_TRAIN = {"deterministic": True, "plots": False, "val": True}


@dataclass
class RunSpec:
    """Everything one run needs; saved as ``spec.json`` for the worker and inside ``run.json``.

    Attributes:
        index: 1-based position in the plan.
        total: Number of runs in the plan.
        arm: Arm name.
        seed: Training seed.
        model: Model YAML/weights (as resolved by :func:`check_model`).
        run_dir: Absolute run folder.
        train: Ultralytics train arguments (without project/name/exist_ok).
        eval: :func:`drconv_yolo.evaluation.evaluate` arguments.
        measure: ``latency_runs``, ``latency_warmup``, ``device`` (single device for latency), ``deploy_runtime``.
        data: What the run was trained and scored on: ``fingerprint`` (the dataset's train and evaluated splits),
            ``gt_sha256`` (the ground-truth JSON's content) and ``gt`` (its provenance,
            :meth:`~drconv_yolo.data.yolo.GroundTruth.to_dict`).
    """

    index: int
    total: int
    arm: str
    seed: int
    model: str
    run_dir: str
    train: dict
    eval: dict
    measure: dict
    data: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        """``[run 3/6] yolov8n-drconv seed 1``."""
        return f"[run {self.index}/{self.total}] {self.arm} seed {self.seed}"

    def settings(self) -> dict[str, Any]:
        """What must match for a finished run to be reused (as JSON stores it: tuples become lists)."""
        return comparable({k: getattr(self, k) for k in COMPARED})


def comparable(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of a run's spec (a :class:`RunSpec`'s fields, or ``run.json``'s ``spec``) that reuse compares."""
    out = json.loads(json.dumps({k: spec.get(k) for k in COMPARED}))
    for key, left_out in NOT_COMPARED.items():
        out[key] = {k: v for k, v in (out[key] or {}).items() if k not in left_out}
    return out


def first_device(device: str) -> str:
    """The single device latency and evaluation use: ``"0,1"`` -> ``"0"``, ``"cuda:1"`` -> ``"cuda:1"``."""
    return str(device).split(",")[0].strip() or "cpu"


def default_device() -> str:
    """``"0"`` when CUDA is available, else ``"cpu"``."""
    import torch

    return "0" if torch.cuda.is_available() else "cpu"


def plan_runs(
    models: Sequence[str],
    names: Sequence[str],
    seeds: Sequence[int],
    train: Mapping[str, Any],
    evaluation: Mapping[str, Any],
    measure: Mapping[str, Any],
    out: Path,
    data: Mapping[str, Any] | None = None,
) -> list[RunSpec]:
    """One :class:`RunSpec` per seed x arm, seed-major (both arms of seed 0 first: a partial result is paired).

    Args:
        models: Checked models.
        names: Arm names.
        seeds: Seeds.
        train: Train arguments shared by every run (seed added per run).
        evaluation: Evaluation arguments.
        measure: Measurement arguments.
        out: Output folder.
        data: The dataset's fingerprint and ground truth (:attr:`RunSpec.data`).

    Returns:
        The runs in execution order.
    """
    total = len(models) * len(seeds)
    runs = []
    for seed in seeds:
        for model, name in zip(models, names):
            runs.append(
                RunSpec(
                    index=len(runs) + 1,
                    total=total,
                    arm=name,
                    seed=int(seed),
                    model=model,
                    run_dir=str(out / "runs" / name / f"seed{seed}"),
                    train={**train, "seed": int(seed)},
                    eval=dict(evaluation),
                    measure=dict(measure),
                    data=dict(data or {}),
                )
            )
    return runs


@dataclass
class Plan:
    """A checked comparison: what every run shares and the runs in execution order."""

    settings: CompareSettings
    models: list  # checked, as :func:`check_model` returns them
    names: list  # arm names; names[0] is the baseline
    data: DataInfo
    device: str
    out: Path
    train: dict
    evaluation: dict
    measure: dict
    runs: list

    def describe(self) -> dict[str, Any]:
        """The ``settings`` section of ``results.json``."""
        return {
            "data": self.data.yaml,
            "data_fingerprint": self.data.fingerprint,
            "gt_json": self.data.gt_json,
            "ground_truth": self.data.gt.to_dict(),
            "split": self.data.split,
            "n_train": self.data.n_train,
            "n_eval": self.data.n_val,
            "classes": self.data.names,
            "arms": dict(zip(self.names, self.models)),
            "baseline": self.names[0],
            "seeds": [int(s) for s in self.settings.seeds],
            "train": dict(self.train),
            "eval": self.evaluation,
            "measure": self.measure,
            "subprocess_per_run": not self.settings.in_process,
            "backend": self.settings.backend,
            "command": self.settings.command,
        }

    def headline(self) -> str:
        """The line printed before training starts."""
        s, names = self.settings, self.names
        return (
            f"compare: {len(names)} arms ({', '.join(names)}; baseline {names[0]}) x {len(s.seeds)} seeds "
            f"= {len(self.runs)} runs, {s.epochs} epochs at {s.imgsz} px on {self.device}, {self.data.n_train} train "
            f"/ {self.data.n_val} {s.split} images -> {self.out}\ncompare: ground truth: {self.data.gt.describe()}"
        )


def make_plan(settings: CompareSettings, device: str | None = None) -> Plan:
    """Check every input (before any training) and plan the runs.

    Args:
        settings: The comparison.
        device: The runs' device, as the backend decides it (default ``settings.device``, else GPU 0 if available,
            else the CPU).

    Returns:
        The plan.

    Raises:
        CompareError: For a bad setting, a missing model, dataset or ground truth.
        UserError: For a dataset or ground truth that does not match (:func:`check_data`).

    A dataset without a given or prepared ground truth has one built into ``OUT/ground_truth`` here.
    """
    settings.validate()
    models = [check_model(m) for m in settings.models]
    out = Path(settings.out).expanduser().resolve()
    data = check_data(settings.data, settings.split, settings.gt, cache_dir=out / GT_CACHE)
    names = arm_names(settings.models)
    device = device if device not in (None, "") else settings.device
    device = str(device) if device not in (None, "") else default_device()
    train = {
        "data": data.yaml,
        "epochs": int(settings.epochs),
        "imgsz": int(settings.imgsz),
        "batch": int(settings.batch),
        "device": device,
        "workers": int(settings.workers),
        **FIXED_TRAIN,
        **dict(settings.overrides or {}),
    }
    evaluation = {
        "max_det": int(settings.max_det),
        "split": settings.split,
        "gt_json": data.gt_json,
        "batch": int(settings.batch),
    }
    measure = {
        "latency_runs": int(settings.latency_runs),
        "latency_warmup": int(settings.latency_warmup),
        "device": first_device(device),
        "deploy_runtime": settings.deploy_runtime,
    }
    trained_on = {
        "fingerprint": data.fingerprint,
        "gt_sha256": hashlib.sha256(data.gt.path.read_bytes()).hexdigest(),
        "gt": data.gt.to_dict(),
    }
    runs = plan_runs(models, names, settings.seeds, train, evaluation, measure, out, trained_on)
    return Plan(settings, models, names, data, device, out, train, evaluation, measure, runs)


def _diff(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Human-readable differences between two nested settings dicts."""
    out = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key, "<unset>"), new.get(key, "<unset>")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += _diff(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def _explain(diff: Sequence[str], spec: RunSpec) -> list[str]:
    """The differences with the dataset's named once, in words, instead of two hashes."""
    data = [d for d in diff if d.startswith("data.")]
    if not data:
        return list(diff)
    what = "images or labels" if any(d.startswith("data.fingerprint") for d in data) else "ground truth"
    short = spec.data.get("fingerprint", "")[:SHORT_HASH]
    line = f"dataset {spec.train.get('data')}: its {what} changed (fingerprint now {short}...)"
    return [line, *(d for d in diff if not d.startswith("data."))]


def run_state(spec: RunSpec) -> str:
    """``"done"`` (``run.json`` with the same settings), ``"partial"`` (folder without it) or ``"new"``.

    Raises:
        CompareError: If ``run.json`` records other settings (another experiment in the same folder, or the same
            experiment on a dataset whose images, labels or ground truth changed since).
    """
    run_dir = Path(spec.run_dir)
    record = run_dir / RUN_FILE
    if record.is_file():
        try:
            old = json.loads(record.read_text(encoding="utf-8"))["spec"]
        except (OSError, ValueError, KeyError):
            return "partial"
        diff = _explain(_diff(comparable(old), spec.settings()), spec)
        if diff:
            raise CompareError(
                f"{run_dir} holds a finished run made with other settings ({'; '.join(diff[:MAX_DIFFS_SHOWN])}); "
                "use another --out, or delete that folder to train it again"
            )
        return "done"
    return "partial" if run_dir.exists() else "new"
