"""The Ray backend (``--backend ray``, the ``ray`` extra): one Ray task per run, as many at once as the resources allow.

* Where: ``--ray-address`` (or ``RAY_ADDRESS``) names a running Ray cluster; without one, Ray is started on this
  machine for the comparison and stopped after it (N GPUs: N runs at once; a CPU machine: one run per
  ``--cpus-per-run`` CPUs), listening on the loopback address only.
* Resources: each task asks for ``--cpus-per-run`` CPUs and ``--gpus-per-run`` GPUs (default 1 where the cluster has
  GPUs, else 0). Ray sets ``CUDA_VISIBLE_DEVICES`` to the GPUs it gave the task; the run's worker gets the same ids
  as its Ultralytics ``device`` (Ultralytics rewrites ``CUDA_VISIBLE_DEVICES`` from ``device``, so it must be exactly
  those ids: two runs never share a GPU, and Ultralytics never picks "idle" GPUs itself). GPUs declared as logical
  resources (tests, ``DRCONV_YOLO_LOGICAL_GPUS=1`` on the nodes) are given and recorded the same way while the run
  trains on the CPU.
* The output folder must be the same folder on every node: before any run, a probe task on each node reads a file
  the driver wrote there and writes one back (:meth:`RayBackend.check`); a node that cannot is named, with the path.
* A run's node or worker lost (machine gone, worker killed, Ray's out-of-memory killer) is run again from a clean
  folder, up to ``--retries`` times, wherever Ray places it; ``run.json`` records the attempt and the report names
  the runs that were retried. A run that fails by itself (a Python error, exit code != 0) is not retried: the other
  runs are cancelled (their workers stopped) and the comparison exits with that run's error.
* Processes: each run's worker is a process group of its own, started by its task (:func:`~drconv_yolo.experiment.
  worker.launch`), that ends when the task's process ends however it ends (the parent-death signal and the worker's
  watch of its parent, :mod:`~drconv_yolo.experiment.process`): a cancelled task, a killed driver (Ray then kills
  the job's workers) or a lost node leaves no training process behind, DDP children included.
* The worker's output goes to ``OUT/runs/<arm>/seed<k>/worker.log``; the driver shows one progress line per run
  (:mod:`~drconv_yolo.experiment.progress`).
"""

from __future__ import annotations

import os
import socket
import sys
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

from ..plan import Plan, RunSpec
from ..progress import Progress
from ..settings import CompareError
from ..worker import launch
from .local import done_line

__all__ = ["LOGICAL_GPUS_ENV", "MIN_PYTHON", "RayBackend", "import_ray"]

MIN_PYTHON = (3, 10)  # Ray's own floor
LOGICAL_GPUS_ENV = "DRCONV_YOLO_LOGICAL_GPUS"  # on a node: its GPUs are logical (tests); runs train on the CPU
WAIT_S = 2.0  # progress refresh while runs are in flight
PROBE_TIMEOUT_S = 120.0  # for every node's probe task to answer (a busy or starting node is slow)
CANCEL_GRACE_S = 10.0  # after a polite cancel (the worker's group stopped by its task), before a forced one
PROBE_DIR = ".ray-probe"
LOST_ERRORS = ("WorkerCrashedError", "NodeDiedError", "LocalRayletDiedError", "ObjectLostError", "OutOfMemoryError")
WORKER_LOG = "worker.log"
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray uses 127.0.0.1 for its node (and every server)


def import_ray(local: bool = False) -> Any:
    """Ray, or a :class:`CompareError` saying what to install (or that this Python is too old for Ray).

    Args:
        local: Ray will be started on this machine for the comparison: it then listens on the loopback address
            only (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, read by Ray as it is imported), not on the network.
    """
    if sys.version_info < MIN_PYTHON:
        have = ".".join(map(str, sys.version_info[:2]))
        need = ".".join(map(str, MIN_PYTHON))
        raise CompareError(f"--backend ray needs Python >= {need} (Ray does not support Python {have})")
    if local:
        os.environ.setdefault(LOOPBACK_ENV, "0")
    try:
        import ray
    except ImportError:
        raise CompareError('--backend ray needs Ray: pip install "drconv-yolo[ray]"') from None
    return ray


def _lost_errors(ray: Any) -> tuple[type, ...]:
    """Ray's errors for a task whose node, worker or result was lost (run again), as opposed to its own failure."""
    e = ray.exceptions
    return tuple(getattr(e, name) for name in LOST_ERRORS if hasattr(e, name))


def _run_task(spec_fields: dict, n_train: int, attempt: int, cpus: float) -> dict[str, Any]:
    """A Ray task: one run on the GPUs and CPUs Ray gave it, from a clean folder; returns its record."""
    import ray

    spec = RunSpec(**spec_fields)
    gpus = [str(g) for g in ray.get_gpu_ids()]
    logical = os.environ.get(LOGICAL_GPUS_ENV, "") not in ("", "0")
    placement = {
        "backend": "ray",
        "node": ray.get_runtime_context().get_node_id(),
        "host": socket.gethostname(),
        "ip": ray.util.get_node_ip_address(),
        "gpus": gpus,
        "cpus": cpus,
        "attempt": attempt,
        "device": ",".join(gpus) if gpus and not logical else "cpu",
    }
    env = {"CUDA_VISIBLE_DEVICES": ",".join(gpus)} if gpus else {"CUDA_VISIBLE_DEVICES": ""}
    return launch(spec, n_train, placement, env=env, log=WORKER_LOG)


def _probe_task(folder: str, token: str) -> dict[str, Any]:
    """A Ray task pinned to one node: read the driver's probe file in ``folder``, write this node's beside it."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    here = {"node": node, "host": socket.gethostname(), "ip": ray.util.get_node_ip_address()}
    driver = Path(folder) / f"driver-{token}"
    try:
        if driver.read_text(encoding="utf-8") != token:
            return {**here, "error": f"{driver} holds something else"}
        (Path(folder) / f"node-{node}-{token}").write_text(token, encoding="utf-8")
    except OSError as e:
        return {**here, "error": f"{type(e).__name__}: {e}"}
    return here


def _fmt(x: float) -> str:
    """``1`` for 1.0, ``0.5`` for 0.5."""
    return f"{x:g}"


class RayBackend:
    """Runs as Ray tasks (see the module docstring).

    Args:
        settings: The comparison's :class:`~drconv_yolo.experiment.settings.CompareSettings`.

    Raises:
        CompareError: If Ray is missing or this Python is too old for it.
    """

    name = "ray"

    def __init__(self, settings: Any):
        self.address = settings.ray_address or os.environ.get("RAY_ADDRESS") or None
        self.ray = import_ray(local=self.address is None)
        self.gpus_per_run = settings.gpus_per_run
        self.cpus_per_run = float(settings.cpus_per_run)
        self.retries = int(settings.retries)
        self.started = False
        self.retried: dict[str, int] = {}

    def __enter__(self) -> RayBackend:
        ray = self.ray
        if not ray.is_initialized():
            where = self.address or "this machine (a new local Ray)"
            print(f"compare: connecting to Ray at {where} ...", flush=True)
            try:
                ray.init(address=self.address, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
            except Exception as e:  # Ray raises ConnectionError, RuntimeError, ValueError for a bad or dead address
                raise CompareError(f"--backend ray: cannot reach the Ray cluster at {where}: {e}") from None
            self.started = True
        if self.gpus_per_run is None:
            self.gpus_per_run = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
        self.gpus_per_run = float(self.gpus_per_run)
        return self

    def __exit__(self, *exc) -> None:
        if self.started:
            self.ray.shutdown()
            self.started = False

    def device(self, requested: str | None) -> str:
        """The plan's device, relative to the GPUs each run is given: ``cpu``, ``0``, ``0,1`` (DDP in one run)."""
        n = int(self.gpus_per_run or 0)
        return ",".join(str(i) for i in range(n)) if n else "cpu"

    def _nodes(self) -> list[dict[str, Any]]:
        """Live nodes that can run tasks."""
        return [n for n in self.ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]

    def _fits(self, node: dict[str, Any]) -> int:
        """How many runs fit on a node at once."""
        res = node.get("Resources", {})
        fit = int(res.get("CPU", 0) // self.cpus_per_run)
        if self.gpus_per_run:
            fit = min(fit, int(res.get("GPU", 0) // self.gpus_per_run))
        return fit

    def check(self, plan: Plan) -> str:
        """The cluster can run the plan and every node sees the output folder; returns the pre-flight line.

        Raises:
            CompareError: No node fits a run, or a node cannot read and write the output folder (named, with the path).
        """
        nodes = self._nodes()
        fits = sum(self._fits(n) for n in nodes)
        need = f"{_fmt(self.cpus_per_run)} CPU(s) and {_fmt(self.gpus_per_run)} GPU(s)"
        if not fits:
            have = ", ".join(f"{n['NodeManagerAddress']}: {n['Resources']}" for n in nodes) or "no live node"
            raise CompareError(
                f"--backend ray: no node has {need} for one run ({have}); change --cpus-per-run or --gpus-per-run"
            )
        self._probe(plan.out, nodes)
        return (
            f"backend: Ray at {self.address or 'this machine'}: {len(nodes)} node(s); each run gets {need}, up to "
            f"{fits} at once; every node reads and writes the output folder {plan.out}"
        )

    def _probe(self, out: Path, nodes: Sequence[dict[str, Any]]) -> None:
        """A task on each node reads the driver's file in ``out`` and writes one back; the driver reads them all."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        ray, token = self.ray, uuid.uuid4().hex
        folder = out / PROBE_DIR
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"driver-{token}").write_text(token, encoding="utf-8")
        probe = ray.remote(_probe_task)
        try:
            refs = {
                probe.options(
                    num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
                ).remote(str(folder), token): n
                for n in nodes
            }
            try:
                answers = ray.get(list(refs), timeout=PROBE_TIMEOUT_S)
            except ray.exceptions.GetTimeoutError:
                raise CompareError(
                    f"--backend ray: not every node answered the output-folder probe within {PROBE_TIMEOUT_S:.0f} s"
                ) from None
            for a in answers:
                seen = folder / f"node-{a['node']}-{token}"
                if "error" not in a and not seen.is_file():
                    a["error"] = f"what it wrote is not in {folder} as this machine sees it"
                if "error" in a:
                    raise CompareError(
                        f"--backend ray: node {a['node'][:12]} ({a['host']}, {a['ip']}) cannot use the output folder "
                        f"{out} ({a['error']}); every node must see --out at the same path (a shared file system), "
                        "or its results would be lost"
                    )
        finally:
            import shutil

            shutil.rmtree(folder, ignore_errors=True)

    def run(self, plan: Plan, todo: Sequence[RunSpec], interrupted: Sequence[RunSpec]) -> list[dict[str, Any]]:
        """Submit every run, show progress, retry lost ones; returns the records in ``todo``'s order.

        Raises:
            CompareError: A run failed by itself (after the others were stopped), or was lost more than
                ``--retries`` times.
        """
        ray = self.ray
        lost = _lost_errors(ray)
        task = ray.remote(_run_task).options(
            num_cpus=self.cpus_per_run, num_gpus=self.gpus_per_run, max_retries=0, retry_exceptions=False
        )
        progress = Progress(todo, plan.out)
        pending: dict[Any, tuple[RunSpec, int]] = {}

        def submit(spec: RunSpec, attempt: int) -> None:
            pending[task.remote(asdict(spec), plan.data.n_train, attempt, self.cpus_per_run)] = (spec, attempt)
            progress.set(spec, "running")

        for spec in todo:
            submit(spec, 1)
        records: dict[str, dict[str, Any]] = {}
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=WAIT_S)
                for ref in ready:
                    spec, attempt = pending.pop(ref)
                    try:
                        record = ray.get(ref)
                    except lost as e:
                        self._lost(progress, spec, attempt, e)
                        submit(spec, attempt + 1)
                        continue
                    except ray.exceptions.RayTaskError as e:
                        progress.set(spec, "failed")
                        progress.refresh()
                        cause = getattr(e, "cause", None)
                        raise CompareError(
                            str(cause) if isinstance(cause, CompareError) else f"{spec.label}: {e}"
                        ) from None
                    records[spec.label] = record
                    m = record["metrics"]
                    progress.set(spec, f"done: mAP50-95 {m['mAP50-95']:.4f}, mAP50 {m['mAP50']:.4f}")
                progress.refresh()
        finally:
            if pending:
                self._cancel(list(pending))
        for spec in todo:
            print(done_line(spec, records[spec.label], records[spec.label]["metrics"]["wall_s"]), flush=True)
        return [records[s.label] for s in todo]

    def _lost(self, progress: Progress, spec: RunSpec, attempt: int, error: BaseException) -> None:
        """A run's node or worker was lost: note it, or give up after ``--retries``."""
        why = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
        if attempt > self.retries:
            progress.set(spec, f"failed: lost {attempt} time(s)")
            progress.refresh()
            raise CompareError(
                f"{spec.label}: its node or worker was lost {attempt} time(s) (last: {why}); giving up after "
                f"--retries {self.retries}. Run the same command again to train what is missing"
            )
        self.retried[spec.label] = attempt
        progress.note(
            f"{spec.label}: its node or worker was lost ({why}); running it again from a clean folder "
            f"(attempt {attempt + 1} of at most {self.retries + 1})"
        )
        progress.set(spec, "running")

    def _cancel(self, refs: list) -> None:
        """Stop runs in flight: a polite cancel first (each task stops its worker's group), then a forced one."""
        ray = self.ray
        for ref in refs:
            ray.cancel(ref, force=False)
        _, left = ray.wait(refs, num_returns=len(refs), timeout=CANCEL_GRACE_S)
        for ref in left:
            try:
                ray.cancel(ref, force=True)
            except Exception:  # already finished or gone
                pass
