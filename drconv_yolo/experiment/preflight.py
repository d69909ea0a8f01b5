"""The pre-flight: what would make a comparison fail after hours, checked in seconds before the first epoch.

:func:`preflight` prints one line per check and raises :class:`~drconv_yolo.experiment.settings.CompareError` (exit 2)
naming the arm, file or setting at the first failure, before anything trains:

* **data**: the training split and the evaluated one read by Ultralytics' own label check (the images it scores,
  the ones it skips with its reasons; :func:`drconv_yolo.data.yolo.scored_split`). A split it would train or score
  no image of is refused.
* **ground truth**: built or checked when the plan was made (:func:`~drconv_yolo.experiment.settings.check_data`);
  its line says how many images and boxes it holds.
* **every arm** that has runs to train: built from its YAML or weights for the dataset's classes (parameters,
  GFLOPs), then a training step (forward, loss, backward) and an inference on a random batch at the run's
  image size and batch on the run's device, with the mixed precision training uses there (catching a shape error,
  an op failing on that device or dtype, an out-of-memory at that batch): one step and one inference on a CPU, two
  on a GPU (the first warms up). The last ones are timed, for :func:`estimate_minutes`. This runs in a child
  process like the runs themselves (a GPU's memory is given back when it ends), or in this one with
  ``--in-process``.
* **output folder**: writable, with room for every run's weights (:data:`WEIGHT_BYTES_PER_PARAM`).
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..io import atomic_write_json
from .plan import Plan, RunSpec
from .process import run_worker
from .settings import CompareError

__all__ = ["ArmCheck", "Preflight", "check_arms", "estimate_minutes", "preflight", "preflight_command", "run_job_file"]

# An Ultralytics checkpoint written while training holds the EMA model in float16 (2 bytes per parameter) and the
# optimizer's state in float32 (up to 2 tensors: 8 bytes); last.pt and best.pt both exist while a run trains.
WEIGHT_BYTES_PER_PARAM = 2 * (2 + 8)
SPARE_BYTES = 256 * 2**20  # evaluation predictions, plots, logs
CUDA_STEPS = 2  # training steps and inferences per arm on a GPU: the first warms up (cuDNN), the second is timed
SPEC_FILE = "preflight.json"
RESULT_FILE = "preflight_result.json"
PROBE_FILE = ".preflight-probe"
MIB = 2**20


@dataclass
class ArmCheck:
    """One arm built and stepped by the pre-flight.

    Attributes:
        arm: Arm name.
        params: Parameters (built for the dataset's classes).
        gflops: GFLOPs at the run's image size (None when Ultralytics' counter gives none).
        step_s: Seconds of one training step (forward, loss, backward) at the run's batch and image size.
        infer_s: Seconds of one inference of a batch.
    """

    arm: str
    params: int
    gflops: float | None
    step_s: float
    infer_s: float


@dataclass
class Preflight:
    """What the pre-flight found: the arms it stepped and how long it took."""

    arms: dict[str, ArmCheck]
    seconds: float


# ----------------------------------------------------------------------------------------------------------------------
# The arms: built, stepped and timed (in a child process unless --in-process)
# ----------------------------------------------------------------------------------------------------------------------


def _batch(batch: int, imgsz: int, device: Any) -> dict[str, Any]:
    """A random training batch in Ultralytics' form: one box per image."""
    import torch

    g = torch.Generator().manual_seed(0)
    return {
        "img": torch.rand(batch, 3, imgsz, imgsz, generator=g).to(device),
        "batch_idx": torch.arange(batch, dtype=torch.float32).to(device),
        "cls": torch.zeros(batch, 1).to(device),
        "bboxes": torch.tensor([[0.5, 0.5, 0.25, 0.25]]).repeat(batch, 1).to(device),
    }


def _build(model: str, nc: int) -> Any:
    """The detection model of an arm for ``nc`` classes, as the trainer builds it (a YAML, or a checkpoint's YAML)."""
    from ultralytics.nn.tasks import DetectionModel

    from ..evaluation import load_yolo

    cfg = model if Path(model).suffix != ".pt" else load_yolo(model).model.yaml
    return DetectionModel(cfg, nc=nc, verbose=False)


def _step_arm(model: str, nc: int, imgsz: int, batch: int, device: str, amp: bool) -> dict[str, Any]:
    """Build one arm, take training steps and inferences (timing the last); returns :class:`ArmCheck`'s fields."""
    import copy

    import torch
    from ultralytics.cfg import get_cfg
    from ultralytics.utils.torch_utils import select_device

    from ..measure import gflops, sync

    net = _build(model, nc)
    params = sum(p.numel() for p in net.parameters())
    fused = copy.deepcopy(net).eval()
    flops, _ = gflops(fused.fuse(verbose=False) if hasattr(fused, "fuse") else fused, imgsz)
    del fused
    dev = select_device(device, verbose=False)
    net.args = get_cfg()  # the loss's hyperparameters (box, cls, dfl), as the trainer sets them
    net = net.to(dev).train()
    data = _batch(batch, imgsz, dev)
    autocast = torch.autocast(dev.type, enabled=amp and dev.type == "cuda")
    steps = CUDA_STEPS if dev.type == "cuda" else 1  # a CPU's first step is already a steady one
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        with autocast:
            loss, _ = net.loss(data)
        loss.sum().backward()
        net.zero_grad(set_to_none=True)
        sync(dev)
        times.append(time.perf_counter() - t0)
    net.eval()
    infer = []
    with torch.no_grad():
        for _ in range(steps):
            t0 = time.perf_counter()
            with autocast:
                net(data["img"])
            sync(dev)
            infer.append(time.perf_counter() - t0)
    return {"params": int(params), "gflops": flops, "step_s": times[-1], "infer_s": infer[-1]}


def _failure(arm: str, model: str, e: BaseException, batch: int, imgsz: int, device: str) -> str:
    """The one line that says which arm failed and why."""
    import torch

    from ..errors import UserError

    if isinstance(e, torch.cuda.OutOfMemoryError):
        return (
            f"arm {arm} ({model}): out of memory for one training step at batch {batch}, {imgsz} px on device "
            f"{device}; lower --batch or --imgsz"
        )
    if isinstance(e, UserError):
        return f"arm {arm} ({model}): {e}"
    reason = (str(e).strip().splitlines() or [""])[0]
    return (
        f"arm {arm} ({model}): one training step at batch {batch}, {imgsz} px on device {device} failed: "
        f"{type(e).__name__}: {reason}"
    )


def _arm_line(check: ArmCheck, job: Mapping[str, Any]) -> str:
    flops = "GFLOPs n/a" if check.gflops is None else f"{check.gflops:.2f} GFLOPs"
    return (
        f"pre-flight: arm {check.arm}: {check.params / 1e6:.3f} M params, {flops} at {job['imgsz']} px; a training "
        f"step at batch {job['batch']} on {job['device']} {check.step_s:.2f} s, an inference {check.infer_s:.2f} s"
    )


def check_arms(job: Mapping[str, Any]) -> dict[str, Any]:
    """Build and step every arm of a pre-flight job, printing one line per arm; never raises for an arm's fault.

    Args:
        job: ``{"arms": {name: model}, "nc", "imgsz", "batch", "device", "amp"}``.

    Returns:
        ``{"arms": {name: ArmCheck fields}}``, or ``{"error": line}`` at the first arm that fails.
    """
    out: dict[str, Any] = {"arms": {}}
    for arm, model in job["arms"].items():
        try:
            fields = _step_arm(model, job["nc"], job["imgsz"], job["batch"], job["device"], job["amp"])
        except Exception as e:  # any fault of an arm is reported as that arm's, with its reason
            return {"error": _failure(arm, model, e, job["batch"], job["imgsz"], job["device"])}
        finally:
            _free_cuda()
        out["arms"][arm] = fields
        print(_arm_line(ArmCheck(arm, **fields), job), flush=True)
    return out


def _free_cuda() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _cuda_here() -> bool:
    """Whether this machine has a CUDA GPU (a cluster backend's driver may have none)."""
    import torch

    return torch.cuda.is_available()


def preflight_command(job_path: Path) -> list[str]:
    """The child process that runs :func:`check_arms` on a job file (served by ``drconv_yolo.cli.worker``)."""
    import os

    return [
        *(sys.executable, "-m", "drconv_yolo.cli", "_worker", str(job_path)),
        "--preflight",
        "--parent-pid",
        str(os.getpid()),
    ]


def _arms(plan: Plan, todo: Sequence[RunSpec]) -> dict[str, ArmCheck]:
    """Run :func:`check_arms` for the arms with runs to train, in a child process unless ``in_process``."""
    arms = {s.arm: s.model for s in todo}
    if not arms:
        return {}
    train = plan.train
    batch, imgsz = int(train["batch"]), int(train["imgsz"])
    devices = [d for d in str(plan.device).split(",") if d.strip()]
    if plan.settings.backend != "local" and devices and devices[0] != "cpu" and not _cuda_here():
        print("pre-flight: no GPU on this machine: the arms are stepped on the CPU, not on the runs' GPUs", flush=True)
        devices = ["cpu"]
    job = {
        "arms": arms,
        "nc": len(plan.data.names),
        "imgsz": imgsz,
        "batch": max(1, batch // len(devices)) if len(devices) > 1 else batch,  # DDP splits the batch
        "device": devices[0] if devices else "cpu",
        "amp": bool(train.get("amp", True)),
    }
    if plan.settings.in_process:
        result = check_arms(job)
    else:
        folder = plan.out / ".preflight"
        folder.mkdir(parents=True, exist_ok=True)
        try:
            rc = run_worker(preflight_command(atomic_write_json(folder / SPEC_FILE, job)))
            done = folder / RESULT_FILE
            if rc != 0 or not done.is_file():
                raise CompareError(f"pre-flight: the process that builds and steps the arms failed (exit code {rc})")
            result = json.loads(done.read_text(encoding="utf-8"))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    if "error" in result:
        raise CompareError(f"pre-flight: {result['error']}")
    return {arm: ArmCheck(arm, **fields) for arm, fields in result["arms"].items()}


def run_job_file(job_path: str | Path) -> None:
    """The child's side of :func:`_arms`: read the job, write the result beside it (last)."""
    job_path = Path(job_path)
    result = check_arms(json.loads(job_path.read_text(encoding="utf-8")))
    atomic_write_json(job_path.parent / RESULT_FILE, result)


# ----------------------------------------------------------------------------------------------------------------------
# Data, output folder, and the whole pre-flight
# ----------------------------------------------------------------------------------------------------------------------


def _data_line(plan: Plan) -> str:
    """Ultralytics' view of the training split (the evaluated one was read for the ground truth)."""
    from ..data.yolo import load_split, scored_split, skipped_line

    train = scored_split(load_split(plan.data.yaml, "train"))
    if train.n_scored == 0:
        raise CompareError(
            f"pre-flight: split 'train' of {plan.data.yaml}: Ultralytics skips every image "
            f"({train.skipped[0][1] if train.skipped else 'no images'})"
        )
    gt = plan.data.gt
    n_eval = plan.data.n_val - len(gt.skipped)
    parts = [
        f"train {train.n_scored} of {len(train.labels)} images scored, {sum(len(r[0]) for r in train.labels if r)} "
        f"boxes",
        f"{plan.data.split} {n_eval} of {plan.data.n_val} images scored",
    ]
    line = f"data: {'; '.join(parts)} (Ultralytics' label check)"
    for split, skipped, n in (("train", train.skipped, len(train.labels)), (plan.data.split, gt.skipped, None)):
        if skipped:
            line += f"; {skipped_line(skipped, n or plan.data.n_val, split)}"
    return line


def _gt_line(plan: Plan) -> str:
    from ..io import read_gt_json

    gt = read_gt_json(plan.data.gt.path)
    return (
        f"ground truth: {len(gt['images'])} images, {len(gt['annotations'])} boxes, {len(gt['categories'])} "
        f"categories ({plan.data.gt.source}: {plan.data.gt.path})"
    )


def _folder_line(plan: Plan, todo: Sequence[RunSpec], arms: Mapping[str, ArmCheck]) -> str:
    """OUT writable (a probe written and removed) with room for the weights of every run to train."""
    probe = plan.out / PROBE_FILE
    try:
        plan.out.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"probe")
        probe.unlink()
    except OSError as e:
        raise CompareError(f"pre-flight: output folder {plan.out} is not writable ({e})") from None
    need = sum(WEIGHT_BYTES_PER_PARAM * arms[s.arm].params for s in todo if s.arm in arms) + SPARE_BYTES
    free = shutil.disk_usage(plan.out).free
    if free < need:
        raise CompareError(
            f"pre-flight: output folder {plan.out} has {free / MIB:.0f} MiB free but the {len(todo)} run(s) to "
            f"train need about {need / MIB:.0f} MiB for their weights; free some space or choose another --out"
        )
    return f"output folder: {plan.out} writable, {free / MIB:.0f} MiB free, about {need / MIB:.0f} MiB needed"


def preflight(plan: Plan, todo: Sequence[RunSpec], backend: Any = None) -> Preflight:
    """Check everything a comparison needs before it trains (see the module docstring); prints one line per check.

    Args:
        plan: The comparison's plan (its inputs already checked by :func:`~drconv_yolo.experiment.plan.make_plan`).
        todo: The runs that will train (not reused).
        backend: Where the runs will run (:mod:`~drconv_yolo.experiment.backends`): its ``check`` (reachable, the
            output folder seen by every node) runs first.

    Returns:
        What it found.

    Raises:
        CompareError: At the first failed check, naming the arm, file or setting.
    """
    t0 = time.perf_counter()
    line = backend.check(plan) if backend is not None and todo else None
    if line:
        print(f"pre-flight: {line}", flush=True)
    print(f"pre-flight: {_data_line(plan)}", flush=True)
    print(f"pre-flight: {_gt_line(plan)}", flush=True)
    arms = _arms(plan, todo)  # one line per arm, printed as each one passes
    print(f"pre-flight: {_folder_line(plan, todo, arms)}", flush=True)
    seconds = time.perf_counter() - t0
    print(f"pre-flight: passed in {seconds:.1f} s", flush=True)
    return Preflight(arms, seconds)


def estimate_minutes(plan: Plan, todo: Sequence[RunSpec], checked: Preflight) -> float:
    """Training and evaluation time of the runs to train from the pre-flight's timed step, in minutes.

    Per run: ``epochs x ceil(train images / batch)`` training steps, plus ``(epochs + 1) x ceil(evaluated images /
    batch)`` inferences (Ultralytics validates every epoch, and the comparison once more). Data loading,
    augmentation, NMS and the latency measurements are not counted: a lower bound, typically within 2x on a GPU.
    """
    train, batch = plan.train, int(plan.train["batch"])
    steps = int(train["epochs"]) * math.ceil(plan.data.n_train / batch)
    evals = (int(train["epochs"]) + 1) * math.ceil(plan.data.n_val / batch)
    seconds = sum(checked.arms[s.arm].step_s * steps + checked.arms[s.arm].infer_s * evals for s in todo)
    return seconds / 60
