"""The SLURM backend (``--backend slurm``, the ``slurm`` extra: submitit): one job array, one array task per run.

* Where: ``compare`` runs on a machine with the SLURM clients (a login node): it submits the runs that must train as
  one job array (``sbatch`` through submitit) to ``--slurm-partition`` (default: the cluster's default partition),
  charged to ``--slurm-account``, at most ``--slurm-max-parallel`` tasks at once (the array's ``%N``), each task
  with ``--cpus-per-run`` CPUs, ``--gpus-per-run`` GPUs (``--gres=gpu:N``; default 1 where the partition's nodes
  have GPUs, else 0) and the time limit ``--slurm-time`` (default: the partition's). It then waits, showing one
  progress line per run (:mod:`~drconv_yolo.experiment.progress`), and writes the report as every backend does.
* The output folder must be the same folder on every node (a shared file system): the array task writes the run
  folder, ``run.json`` included, and ``compare`` reads it there. submitit's own files (the pickled task, its
  result, the task's log) go to ``OUT/.slurm/``; each run's worker output to ``OUT/runs/<arm>/seed<k>/worker.log``.
  The nodes need the same Python environment as ``compare`` (the job exports it: ``sbatch``'s default
  ``--export=ALL``, and runs ``sys.executable``).
* A task runs its run in a fresh worker process group (:func:`~drconv_yolo.experiment.worker.launch`), placed as
  SLURM placed it: ``run.json``'s placement records the array job id and task id, the node (``SLURMD_NODENAME``),
  the host, the GPUs (``CUDA_VISIBLE_DEVICES`` as SLURM set it) and CPUs given, the start and end, the attempt and
  how often SLURM requeued it.
* Time limits and preemption: SLURM warns a task (``USR2``, 90 s before its time limit or when it is preempted);
  submitit then requeues it (``scontrol requeue``) and the requeued task resumes its training from the run's
  ``weights/last.pt`` (:func:`~drconv_yolo.experiment.worker.resumable`) instead of starting over.
* Lost runs: the state of the tasks comes from ``squeue`` (no accounting database, ``sacct``, is needed). A task
  that left the queue without a ``run.json`` and without a Python error (cancelled with ``scancel``, its node
  lost, killed at its time limit) is submitted again, alone, from a clean folder, up to ``--retries`` times; the
  report names the runs that were run again. A task that failed by itself (a Python error, the worker's exit code
  != 0) is not: the other tasks are cancelled (``scancel``) and ``compare`` exits with that run's error.
* Stopping ``compare`` (Ctrl-C, SIGTERM, the terminal closed, even SIGKILL) leaves the array running: its job ids
  are in ``OUT/.slurm/jobs.json``, and running the same command again collects what the array finished (its
  ``run.json``), waits for the tasks still queued or running (instead of submitting them twice) and submits only
  what is missing. ``scancel`` the jobs to stop them instead.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import shutil
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from ...io import atomic_write_json
from ..plan import RUN_FILE, Plan, RunSpec
from ..progress import Progress
from ..settings import CompareError, parse_slurm_time
from ..worker import launch, now_utc
from .local import done_line

__all__ = ["JOBS_FILE", "SLURM_DIR", "RunTask", "SlurmBackend", "import_submitit", "parse_gres_gpus"]

SLURM_DIR = ".slurm"  # under OUT: submitit's files and jobs.json
JOBS_FILE = "jobs.json"  # the array task of each run submitted, for a later compare on the same folder
WORKER_LOG = "worker.log"
CLIENTS = ("sbatch", "squeue", "scancel", "sinfo", "srun")
POLL_S = 5.0  # squeue and progress refresh while runs are in flight
LOST_GRACE_S = 15.0  # a task gone from the queue without a result: its files may still be on their way (NFS)
QUEUE_FAILURES = 12  # squeue failing this many times in a row (a minute) ends the comparison
CLIENT_TIMEOUT_S = 60.0
STOP_SETTLE_S = 1.0  # a run failed: let a stop signal that reached its worker reach its task too
INFINITE_MIN = 7 * 24 * 60  # --time for a partition without a limit: a week (submitit always sets one)
SHOWN_NODES = 4
RUNNING_STATES = ("RUNNING", "COMPLETING", "CONFIGURING")
# A task in one of these has left the queue for good (squeue lists it for a while, MinJobAge): its result decides.
DONE_STATES = (
    *("COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE"),
    "OUT_OF_MEMORY",
)


def import_submitit() -> Any:
    """submitit, or a :class:`CompareError` saying what to install."""
    try:
        import submitit
    except ImportError:
        raise CompareError('--backend slurm needs submitit: pip install "drconv-yolo[slurm]"') from None
    return submitit


def parse_gres_gpus(gres: str) -> int:
    """GPUs in a node's ``sinfo %G`` GRES: ``gpu:2``, ``gpu:a100:4(S:0-1),shard:8`` -> 2, 4; ``(null)`` -> 0."""
    total = 0
    for item in gres.split(","):
        item = item.split("(")[0].strip()
        if item.startswith("gpu:"):
            count = item.rsplit(":", 1)[-1]
            total += int(count) if count.isdigit() else 0
    return total


def _limit_minutes(text: str) -> int | None:
    """A partition's ``sinfo %l`` time limit in minutes; None for ``infinite``."""
    if text.strip().lower() in ("infinite", "unlimited", "n/a", ""):
        return None
    return parse_slurm_time(text.strip())


def _job_gpus(gpus_per_run: int) -> list[str]:
    """The GPUs SLURM gave this task (``CUDA_VISIBLE_DEVICES``, else ``SLURM_STEP_GPUS``/``SLURM_JOB_GPUS``)."""
    if not gpus_per_run:
        return []
    for var in ("CUDA_VISIBLE_DEVICES", "SLURM_STEP_GPUS", "SLURM_JOB_GPUS"):
        value = os.environ.get(var, "").strip()
        if value:
            return [g.strip() for g in value.split(",") if g.strip()]
    return []


class RunTask:
    """An array task: one run on what SLURM gave it (a submitit callable; checkpointable, so SLURM may requeue it).

    Args:
        spec_fields: The run (``asdict(RunSpec)``).
        n_train: Training images (throughput fallback under DDP).
        attempt: The driver's submission of this run (1, then 2 after it was lost once, ...).
        cpus: CPUs per run.
        gpus: GPUs per run.
    """

    def __init__(self, spec_fields: dict, n_train: int, attempt: int, cpus: int, gpus: int):
        self.spec_fields, self.n_train, self.attempt, self.cpus, self.gpus = spec_fields, n_train, attempt, cpus, gpus

    def placement(self) -> dict[str, Any]:
        """Where SLURM placed this task (see the module docstring)."""
        restarts = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
        job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID")
        task = os.environ.get("SLURM_ARRAY_TASK_ID")
        gpus = _job_gpus(self.gpus)
        return {
            "backend": "slurm",
            "job_id": job,
            "array_task_id": task,
            "slurm_job": f"{job}_{task}" if task is not None else job,
            "partition": os.environ.get("SLURM_JOB_PARTITION"),
            "node": os.environ.get("SLURMD_NODENAME"),
            "host": socket.gethostname(),
            "gpus": gpus,
            "cpus": int(os.environ.get("SLURM_CPUS_PER_TASK") or self.cpus),
            "attempt": self.attempt + restarts,
            "requeued": restarts,
            "device": ",".join(gpus) if gpus else "cpu",
        }

    def __call__(self) -> dict[str, Any]:
        """Run the run (resuming from its ``last.pt`` when SLURM requeued this task); returns its record.

        SIGTERM (``scancel``, the time limit reached) stops the worker's group and ends the task without a result,
        so the comparison sees a lost task, not a failed run.
        """
        from ..process import termination_signals

        spec = RunSpec(**self.spec_fields)
        placement = self.placement()
        env = {"CUDA_VISIBLE_DEVICES": ",".join(placement["gpus"])}
        with termination_signals():
            try:
                return launch(spec, self.n_train, placement, env=env, log=WORKER_LOG, resume=placement["requeued"] > 0)
            except CompareError:
                time.sleep(STOP_SETTLE_S)  # a stop signal that ended the worker ends this task here, not as an error
                raise

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Before a requeue (submitit, on SLURM's warning signal): the same task again; it resumes from ``last.pt``."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)


@dataclass
class _Node:
    name: str
    partition: str
    default: bool
    cpus: int
    memory_mb: int
    gpus: int
    limit_min: int | None
    state: str


@dataclass
class _Task:
    """A run's array task in flight."""

    spec: RunSpec
    job: str  # "<array job id>_<task id>"
    attempt: int
    gone_since: float | None = None


class SlurmBackend:
    """Runs as the tasks of a SLURM job array (see the module docstring).

    Args:
        settings: The comparison's :class:`~drconv_yolo.experiment.settings.CompareSettings`.

    Raises:
        CompareError: If submitit is missing.
    """

    name = "slurm"

    def __init__(self, settings: Any):
        self.submitit = import_submitit()
        self.partition = settings.slurm_partition
        self.time_min = parse_slurm_time(settings.slurm_time) if settings.slurm_time else None
        self.account = settings.slurm_account
        self.max_parallel = settings.slurm_max_parallel
        self.gpus_per_run = None if settings.gpus_per_run is None else int(float(settings.gpus_per_run))
        self.cpus_per_run = int(float(settings.cpus_per_run))
        self.retries = int(settings.retries)
        self.nodes: list[_Node] = []
        self.retried: dict[str, int] = {}

    # -- the cluster -------------------------------------------------------------------------------------------------

    def _client(self, *args: str) -> subprocess.CompletedProcess:
        """A SLURM client command; :class:`CompareError` when it cannot run (not on PATH, timed out)."""
        try:
            return subprocess.run(list(args), capture_output=True, text=True, timeout=CLIENT_TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise CompareError(f"--backend slurm: `{' '.join(args)}` did not run: {e}") from None

    def __enter__(self) -> SlurmBackend:
        missing = [c for c in CLIENTS if shutil.which(c) is None]
        if missing:
            raise CompareError(
                f"--backend slurm: the SLURM clients {', '.join(missing)} are not on PATH; run compare where jobs "
                "are submitted (a login node of the cluster)"
            )
        self.nodes = self._sinfo()
        if self.partition is None:
            defaults = sorted({n.partition for n in self.nodes if n.default})
            if not defaults:
                raise CompareError(
                    "--backend slurm: the cluster has no default partition; name one with --slurm-partition "
                    f"(partitions: {', '.join(sorted({n.partition for n in self.nodes})) or 'none'})"
                )
            self.partition = defaults[0]
        if self.gpus_per_run is None:
            self.gpus_per_run = 1 if any(n.gpus for n in self._mine()) else 0
        return self

    def __exit__(self, *exc) -> None:
        return None

    def _sinfo(self) -> list[_Node]:
        """Every node of every partition, from ``sinfo``."""
        r = self._client("sinfo", "-h", "-N", "-o", "%N|%P|%c|%m|%G|%l|%t")
        if r.returncode != 0:
            raise CompareError(f"--backend slurm: cannot reach SLURM (sinfo: {(r.stderr or r.stdout).strip()})")
        nodes = []
        for line in r.stdout.splitlines():
            parts = line.strip().split("|")
            if len(parts) != 7:
                continue
            name, part, cpus, mem, gres, limit, state = parts
            nodes.append(
                _Node(
                    name=name,
                    partition=part.rstrip("*"),
                    default=part.endswith("*"),
                    cpus=int(cpus) if cpus.isdigit() else 0,
                    memory_mb=int(mem) if mem.isdigit() else 0,
                    gpus=parse_gres_gpus(gres),
                    limit_min=_limit_minutes(limit),
                    state=state.rstrip("*~#!%$@^-"),
                )
            )
        return nodes

    def _mine(self) -> list[_Node]:
        """The nodes of the partition the array goes to."""
        return [n for n in self.nodes if n.partition == self.partition]

    def device(self, requested: str | None) -> str:
        """The plan's device, relative to the GPUs each task is given: ``cpu``, ``0``, ``0,1`` (DDP in one run)."""
        n = int(self.gpus_per_run or 0)
        return ",".join(str(i) for i in range(n)) if n else "cpu"

    def _time(self) -> int:
        """Each task's time limit in minutes: ``--slurm-time``, else the partition's."""
        if self.time_min is not None:
            return self.time_min
        limits = [n.limit_min for n in self._mine()]
        return INFINITE_MIN if not limits or None in limits else max(limits)

    def check(self, plan: Plan) -> str:
        """The partition exists, a node of it fits one run, the time limit is allowed; returns the pre-flight line.

        Raises:
            CompareError: An unknown partition (the known ones named), no node with the CPUs and GPUs of a run (the
                nodes' named), or a ``--slurm-time`` over the partition's limit.
        """
        nodes = self._mine()
        need = f"{self.cpus_per_run} CPU(s) and {self.gpus_per_run} GPU(s)"
        if not nodes:
            known = ", ".join(sorted({n.partition for n in self.nodes})) or "none"
            raise CompareError(f"--slurm-partition {self.partition}: no such partition (partitions: {known})")
        up = [n for n in nodes if not n.state.startswith(("down", "drain", "fail", "inval"))]
        fit = [n for n in up if n.cpus >= self.cpus_per_run and n.gpus >= int(self.gpus_per_run or 0)]
        if not fit:
            have = ", ".join(f"{n.name}: {n.cpus} CPU(s), {n.gpus} GPU(s), {n.state}" for n in nodes[:SHOWN_NODES])
            raise CompareError(
                f"--backend slurm: no node of partition {self.partition} that is up has {need} for one run ({have}); "
                "change --cpus-per-run or --gpus-per-run, or choose another --slurm-partition"
            )
        limits = [n.limit_min for n in nodes if n.limit_min is not None]
        if self.time_min is not None and limits and len(limits) == len(nodes) and self.time_min > max(limits):
            raise CompareError(
                f"--slurm-time {self.time_min} min is over partition {self.partition}'s limit of {max(limits)} min"
            )
        cap = f"up to {self.max_parallel} at once" if self.max_parallel else "all at once"
        return (
            f"backend: SLURM partition {self.partition}: {len(fit)} node(s) fit a run; each run is an array task with "
            f"{need}, {self._time()} min, {cap}; every node must see the output folder {plan.out} at this path"
        )

    # -- the array ---------------------------------------------------------------------------------------------------

    def _job_name(self, out: Path) -> str:
        """The array's name: the same for every compare on one output folder (``squeue --name`` finds its tasks)."""
        return "drconv-compare-" + hashlib.sha1(str(Path(out).resolve()).encode()).hexdigest()[:8]

    def _executor(self, out: Path, count: int) -> Any:
        ex = self.submitit.SlurmExecutor(folder=str(Path(out) / SLURM_DIR))
        params: dict[str, Any] = {
            "job_name": self._job_name(out),
            "partition": self.partition,
            "time": self._time(),
            "nodes": 1,
            "ntasks_per_node": 1,
            "cpus_per_task": self.cpus_per_run,
            "array_parallelism": min(count, self.max_parallel or count),
            "stderr_to_stdout": True,
        }
        if self.gpus_per_run:
            params["gres"] = f"gpu:{int(self.gpus_per_run)}"
        if self.account:
            params["account"] = self.account
        ex.update_parameters(**params)
        return ex

    def _submit(self, plan: Plan, specs: Sequence[tuple[RunSpec, int]]) -> list[_Task]:
        """Submit ``(run, attempt)`` pairs as one job array; returns their tasks (recorded in ``jobs.json``)."""
        ex = self._executor(plan.out, len(specs))
        calls = [
            RunTask(asdict(s), plan.data.n_train, attempt, self.cpus_per_run, int(self.gpus_per_run or 0))
            for s, attempt in specs
        ]
        try:
            with ex.batch():
                jobs = [ex.submit(c) for c in calls]
        except Exception as e:  # submitit raises FailedJobError / subprocess errors for a refused sbatch
            raise CompareError(f"--backend slurm: sbatch refused the job array: {str(e).strip()[:2000]}") from None
        tasks = [_Task(s, str(j.job_id), attempt) for (s, attempt), j in zip(specs, jobs)]
        self._book(plan, tasks)
        return tasks

    def _book(self, plan: Plan, tasks: Sequence[_Task]) -> None:
        """Record the tasks in ``OUT/.slurm/jobs.json`` (atomically), keyed by run folder."""
        book = self._read_book(plan)
        for t in tasks:
            book[_key(plan, t.spec)] = {"job": t.job, "attempt": t.attempt, "submitted": now_utc()}
        atomic_write_json(Path(plan.out) / SLURM_DIR / JOBS_FILE, {"runs": book}, indent=1)

    def _read_book(self, plan: Plan) -> dict[str, Any]:
        """``jobs.json``'s runs (empty when there is none or it cannot be read)."""
        try:
            return json.loads((Path(plan.out) / SLURM_DIR / JOBS_FILE).read_text(encoding="utf-8"))["runs"]
        except (OSError, ValueError, KeyError, TypeError):
            return {}

    def _queue(self, out: Path) -> dict[str, tuple[str, str, str]] | None:
        """``{"<job>_<task>": (state, node, reason)}`` of this folder's array tasks still in the queue (pending,
        running, requeued, suspended...; not those that ended); None if squeue failed."""
        name, user = self._job_name(out), getpass.getuser()
        try:
            r = self._client("squeue", "-h", "-r", "-t", "all", "-u", user, "--name", name, "-o", "%i|%T|%N|%r")
        except CompareError:
            return None
        if r.returncode != 0:
            return None
        queue = {}
        for line in r.stdout.splitlines():
            parts = line.strip().split("|")
            if len(parts) == 4 and parts[1] not in DONE_STATES:
                queue[parts[0]] = (parts[1], parts[2], parts[3])
        return queue

    def _result(self, plan: Plan, task: _Task) -> tuple[str, Any] | None:
        """What a task that left the queue left behind: submitit's result (``("success", record)`` or ``("error",
        traceback)``), else ``("success", record)`` from a ``run.json`` this very task wrote, else None (lost)."""
        from submitit.core.utils import JobPaths, pickle_load

        paths = JobPaths(Path(plan.out) / SLURM_DIR, job_id=task.job, task_id=0)
        if paths.result_pickle.is_file():
            try:
                return pickle_load(paths.result_pickle)
            except Exception:  # half-written or unreadable: decide from run.json, or after the grace
                pass
        record = Path(task.spec.run_dir) / RUN_FILE
        if record.is_file():
            try:
                data = json.loads(record.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return None
            if (data.get("placement") or {}).get("slurm_job") == task.job:
                return ("success", data)
        return None

    def _log(self, plan: Plan, task: _Task) -> Path:
        """submitit's log of the task (its stdout and stderr)."""
        from submitit.core.utils import JobPaths

        return JobPaths(Path(plan.out) / SLURM_DIR, job_id=task.job, task_id=0).stdout

    def run(self, plan: Plan, todo: Sequence[RunSpec], interrupted: Sequence[RunSpec]) -> list[dict[str, Any]]:
        """Submit the runs as one job array (waiting for those an earlier compare left queued or running), show
        progress, resubmit lost tasks; returns the records in ``todo``'s order.

        Raises:
            CompareError: A run failed by itself (after the other tasks were cancelled), or was lost more than
                ``--retries`` times, or SLURM stopped answering.
        """
        progress = Progress(todo, plan.out)
        queue = self._queue(plan.out) or {}
        book = self._read_book(plan)
        pending: dict[str, _Task] = {}
        for spec in todo:
            entry = book.get(_key(plan, spec)) or {}
            if entry.get("job") in queue:
                pending[spec.label] = _Task(spec, entry["job"], int(entry.get("attempt") or 1))
        if pending:
            progress.note(
                f"compare: {len(pending)} run(s) are still queued or running from an earlier compare on this folder "
                f"(SLURM task(s) {', '.join(t.job for t in pending.values())}): waiting for them, not submitting "
                "them again"
            )
        fresh = [s for s in todo if s.label not in pending]
        for spec in fresh:
            if spec in interrupted:
                progress.note(f"{spec.label}: {spec.run_dir} was interrupted; its task trains it again from scratch")
        if fresh:
            tasks = self._submit(plan, [(s, 1) for s in fresh])
            pending.update({t.spec.label: t for t in tasks})
            ids = sorted({t.job.split("_")[0] for t in tasks})
            progress.note(
                f"compare: submitted {len(tasks)} run(s) as SLURM job array {', '.join(ids)} to partition "
                f"{self.partition} (files in {Path(plan.out) / SLURM_DIR})"
            )
        records: dict[str, dict[str, Any]] = {}
        failures = 0
        try:
            while pending:
                queue = self._queue(plan.out)
                if queue is None:
                    failures += 1
                    if failures >= QUEUE_FAILURES:
                        raise CompareError(
                            f"--backend slurm: squeue failed {failures} times in a row; SLURM stopped answering. The "
                            "tasks may still run: run the same command again to collect them"
                        )
                    time.sleep(POLL_S)
                    continue
                failures = 0
                lost: list[_Task] = []
                for label, task in list(pending.items()):
                    if task.job in queue:
                        task.gone_since = None
                        state, node, reason = queue[task.job]
                        if state in RUNNING_STATES:
                            progress.set(task.spec, "running")
                        else:
                            why = f", {reason}" if reason and reason != "None" else ""
                            progress.set(task.spec, f"queued as SLURM task {task.job} ({state.lower()}{why})")
                        continue
                    result = self._result(plan, task)
                    if result is None:
                        now = time.monotonic()
                        task.gone_since = task.gone_since or now
                        if now - task.gone_since >= LOST_GRACE_S:
                            del pending[label]
                            lost.append(task)
                        continue
                    del pending[label]
                    kind, value = result
                    if kind != "success":
                        progress.set(task.spec, "failed")
                        progress.refresh()
                        raise CompareError(self._failure(plan, task, str(value)))
                    records[label] = value
                    m = value["metrics"]
                    progress.set(task.spec, f"done: mAP50-95 {m['mAP50-95']:.4f}, mAP50 {m['mAP50']:.4f}")
                if lost:
                    for task in lost:
                        self._lost(progress, task)
                    again = self._submit(plan, [(t.spec, t.attempt + 1) for t in lost])
                    pending.update({t.spec.label: t for t in again})
                progress.refresh()
                if pending:
                    time.sleep(POLL_S)
        except CompareError:
            if pending:
                self._cancel(list(pending.values()))
            raise
        except BaseException:  # Ctrl-C, SIGTERM, the terminal closed: the array goes on; a rerun collects it
            if pending:
                ids = ", ".join(t.job for t in pending.values())
                progress.note(
                    f"compare: stopped; {len(pending)} run(s) keep running as SLURM task(s) {ids}: run the same "
                    "command again to collect them (scancel to stop them)"
                )
            raise
        for spec in todo:
            print(done_line(spec, records[spec.label], records[spec.label]["metrics"]["wall_s"]), flush=True)
        return [records[s.label] for s in todo]

    def _failure(self, plan: Plan, task: _Task, trace: str) -> str:
        """The error of a task that failed by itself: the run's own message when it is a CompareError."""
        marker = "CompareError: "
        if marker in trace:
            return trace.rsplit(marker, 1)[1].strip()
        last = trace.strip().splitlines()[-1] if trace.strip() else "no traceback"
        return f"{task.spec.label}: its SLURM task {task.job} failed: {last} (log: {self._log(plan, task)})"

    def _lost(self, progress: Progress, task: _Task) -> None:
        """A task left the queue without a result: note it, or give up after ``--retries``."""
        spec, attempt = task.spec, task.attempt
        if attempt > self.retries:
            progress.set(spec, f"failed: lost {attempt} time(s)")
            progress.refresh()
            raise CompareError(
                f"{spec.label}: its SLURM task {task.job} left the queue without a result {attempt} time(s); giving "
                f"up after --retries {self.retries}. Run the same command again to train what is missing"
            )
        self.retried[spec.label] = attempt
        progress.note(
            f"{spec.label}: its SLURM task {task.job} left the queue without a result (cancelled, its node lost or "
            f"killed at its time limit); submitting it again from a clean folder (attempt {attempt + 1} of at most "
            f"{self.retries + 1})"
        )
        progress.set(spec, f"lost; submitted again (attempt {attempt + 1})")

    def _cancel(self, tasks: Sequence[_Task]) -> None:
        """Cancel tasks in flight (SLURM stops their processes: each task stops its worker's group)."""
        try:
            self._client("scancel", *[t.job for t in tasks])
        except CompareError:
            pass


def _key(plan: Plan, spec: RunSpec) -> str:
    """A run's key in ``jobs.json``: its folder relative to the output folder (stable when the plan grows)."""
    try:
        return str(Path(spec.run_dir).resolve().relative_to(Path(plan.out).resolve()))
    except ValueError:
        return str(spec.run_dir)
