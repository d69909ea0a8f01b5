"""``compare --backend slurm``: its options, and a tiny comparison on a real single-node SLURM (tests/_slurm.py).

The SLURM tests start ``munged``, ``slurmctld`` and ``slurmd`` from the OS packages for the session (CI installs them:
``.ci/install-slurm.sh``) and skip, saying why, where they are missing or do not start; with
``DRCONV_YOLO_REQUIRE_SLURM=1`` (CI) they fail instead.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from _procs import wait_until
from _slurm import PARTITION, SlurmUnavailable, start_slurm

from drconv_yolo.experiment import CompareSettings
from drconv_yolo.experiment.settings import CompareError, parse_slurm_time

REQUIRE_ENV = "DRCONV_YOLO_REQUIRE_SLURM"  # CI: a SLURM that cannot start fails the tests instead of skipping them
RUN_S = 400  # for one tiny comparison through SLURM on a busy 2-core machine
SEEN_S = 240  # for a task to reach a given point (queued, training, a checkpoint written)


def _unavailable(reason: str) -> None:
    if os.environ.get(REQUIRE_ENV, "") not in ("", "0"):
        pytest.fail(f"{REQUIRE_ENV} is set but {reason}")
    pytest.skip(reason)


def _settings(**kw) -> CompareSettings:
    return CompareSettings(data="d.yaml", models=["a.yaml", "b.yaml"], **kw)


# -- options (no SLURM needed) -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, minutes",
    [("90", 90), (45, 45), ("1:30", 2), ("1:30:00", 90), ("2-00:00:00", 2880), ("1-2", 1560), ("0:0:30", 1)],
)
def test_slurm_time_is_whole_minutes_for_each_slurm_format(value, minutes):
    assert parse_slurm_time(value) == minutes


@pytest.mark.parametrize("value", ["x", "-5", "0", "1:2:3:4", "1.5", "1-"])
def test_slurm_time_is_refused_when_not_a_slurm_time(value):
    with pytest.raises(CompareError, match="--slurm-time"):
        parse_slurm_time(value)


@pytest.mark.parametrize("backend", ["local", "ray"])
def test_slurm_options_are_refused_with_another_backend(backend):
    with pytest.raises(CompareError, match=r"--slurm-partition, --slurm-max-parallel: only with --backend slurm"):
        _settings(backend=backend, slurm_partition="gpu", slurm_max_parallel=2).validate()


@pytest.mark.parametrize(
    "kw, words",
    [
        ({"cpus_per_run": 1.5}, "--cpus-per-run 1.5: SLURM gives whole CPUs"),
        ({"gpus_per_run": 0.5}, "--gpus-per-run 0.5: SLURM gives whole CPUs and GPUs"),
        ({"slurm_max_parallel": 0}, "--slurm-max-parallel must be >= 1"),
        ({"slurm_time": "soon"}, "--slurm-time must be minutes"),
        ({"device": "0"}, "--device 0: with --backend slurm"),
    ],
)
def test_slurm_settings_are_refused_when_slurm_cannot_honour_them(kw, words):
    with pytest.raises(CompareError, match=words):
        _settings(backend="slurm", **kw).validate()


def test_slurm_settings_pass_when_valid():
    _settings(backend="slurm", cpus_per_run=2, gpus_per_run=1, slurm_time="1:00:00", slurm_max_parallel=4).validate()


def test_the_command_line_gives_the_slurm_options_to_the_settings():
    from drconv_yolo.cli.compare import BACKEND_FIELDS, build_parser

    args = build_parser().parse_args(
        [
            *("--data", "d.yaml", "--models", "a.yaml", "b.yaml", "--backend", "slurm", "--slurm-partition", "gpu"),
            *("--slurm-time", "2:00:00", "--slurm-account", "lab", "--slurm-max-parallel", "3"),
        ]
    )
    fields = {k: getattr(args, k) for k in BACKEND_FIELDS}
    assert fields["backend"] == "slurm" and fields["slurm_partition"] == "gpu" and fields["slurm_time"] == "2:00:00"
    assert fields["slurm_account"] == "lab" and fields["slurm_max_parallel"] == 3


def test_a_missing_submitit_names_the_extra_to_install(monkeypatch):
    from drconv_yolo.experiment.backends import make_backend

    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit raises ImportError
    with pytest.raises(CompareError, match=r'--backend slurm needs submitit: pip install "drconv-yolo\[slurm\]"'):
        make_backend(_settings(backend="slurm"))


@pytest.mark.parametrize(
    "gres, gpus", [("(null)", 0), ("gpu:2", 2), ("gpu:a100:4(S:0-1)", 4), ("gpu:a100:2,gpu:v100:1,shard:8", 3)]
)
def test_gpus_are_counted_from_a_nodes_gres(gres, gpus):
    from drconv_yolo.experiment.backends.slurm import parse_gres_gpus

    assert parse_gres_gpus(gres) == gpus


def test_missing_slurm_clients_are_named(monkeypatch, tmp_path):
    pytest.importorskip("submitit", reason="submitit is not installed (the 'slurm' extra)")
    from drconv_yolo.experiment.backends.slurm import SlurmBackend

    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, squeue, ... here
    with pytest.raises(CompareError, match=r"the SLURM clients sbatch, squeue, scancel, sinfo, srun are not on PATH"):
        with SlurmBackend(_settings(backend="slurm")):
            pass


class _FakeSlurm:
    """A :class:`SlurmBackend` whose queue and results are given by the test (no submitit, no SLURM)."""

    def __init__(self, monkeypatch, queue, results, retries=2):
        from drconv_yolo.experiment.backends import slurm as mod

        monkeypatch.setattr(mod, "POLL_S", 0.0)
        monkeypatch.setattr(mod, "LOST_GRACE_S", 0.0)
        backend = object.__new__(mod.SlurmBackend)
        backend.partition, backend.retries, backend.retried = PARTITION, retries, {}
        self.submitted, self.cancelled, self.mod = [], [], mod
        backend._submit = self.submit
        backend._queue = lambda out: dict(queue)
        backend._result = lambda plan, task: results.get(task.spec.arm)
        backend._cancel = lambda tasks: self.cancelled.extend(t.job for t in tasks)
        self.backend, self.n = backend, 0

    def submit(self, plan, specs):
        tasks = []
        for spec, attempt in specs:
            tasks.append(self.mod._Task(spec, f"7_{self.n}", attempt))
            self.submitted.append((spec.arm, attempt))
            self.n += 1
        return tasks


def _fake_runs(tmp_path):
    from types import SimpleNamespace

    plan = SimpleNamespace(out=tmp_path, data=SimpleNamespace(n_train=8))
    runs = [
        SimpleNamespace(arm=arm, label=f"[run {i}/2] {arm} seed 0", run_dir=str(tmp_path / arm), train={"epochs": 2})
        for i, arm in enumerate(("a", "b"), 1)
    ]
    return plan, runs


def test_a_run_that_fails_by_itself_cancels_the_others_and_ends_the_comparison_with_its_error(monkeypatch, tmp_path):
    plan, runs = _fake_runs(tmp_path)
    trace = "Traceback (most recent call last):\n  ...\ndrconv_yolo.experiment.settings.CompareError: a failed (exit 1)"
    fake = _FakeSlurm(monkeypatch, queue={"7_1": ("RUNNING", "node1", "None")}, results={"a": ("error", trace)})
    with pytest.raises(CompareError, match=r"^a failed \(exit 1\)$"):
        fake.backend.run(plan, runs, [])
    assert fake.submitted == [("a", 1), ("b", 1)]  # one array, never resubmitted: it failed by itself
    assert fake.cancelled == ["7_1"]  # the other run's task


def test_a_run_lost_more_often_than_the_retries_allow_ends_the_comparison(monkeypatch, tmp_path):
    plan, runs = _fake_runs(tmp_path)
    fake = _FakeSlurm(monkeypatch, queue={"7_1": ("PENDING", "", "Priority")}, results={}, retries=1)
    with pytest.raises(CompareError, match=r"a seed 0: its SLURM task 7_2 left the queue without a result 2 time"):
        fake.backend.run(plan, runs, [])
    assert fake.submitted == [("a", 1), ("b", 1), ("a", 2)]  # lost once: submitted again, alone
    assert fake.cancelled == ["7_1"]
    assert "submitting it again from a clean folder (attempt 2 of at most 2)" in (tmp_path / "progress.log").read_text()


# -- a real SLURM ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """A single-node SLURM for the session (SLURM_CONF exported for this process and what it starts)."""
    try:
        import submitit  # noqa: F401
    except ImportError:
        _unavailable('submitit is not installed (pip install "drconv-yolo[slurm]")')
    try:
        cluster = start_slurm(tmp_path_factory.mktemp("slurm"))
    except SlurmUnavailable as e:
        _unavailable(str(e))
    old = os.environ.get("SLURM_CONF")
    cluster.activate()
    yield cluster
    cluster.stop()
    if old is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = old


@pytest.fixture
def cluster(slurm):
    """The session's SLURM, with no job of a test left behind after it."""
    yield slurm
    slurm.run("scancel", "--user", str(os.getuid()))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from drconv_yolo.data.synthetic import generate

    return generate(tmp_path_factory.mktemp("data") / "syn", n_train=8, n_val=4, imgsz=64, seed=0, verbose=False)


def _argv(data: Path, out: Path, epochs: int = 2, *extra: str) -> list[str]:
    return [
        *(sys.executable, "-m", "drconv_yolo.cli", "compare", "--data", str(data), "--seeds", "0"),
        *("--models", "yolov8n.yaml", "yolov8n-drconv.yaml", "--epochs", str(epochs), "--imgsz", "32"),
        *("--batch", "4", "--workers", "0", "--latency-runs", "1", "--latency-warmup", "0", "--deploy-runtime", "none"),
        *("--out", str(out), "--backend", "slurm", *extra),
    ]


def _compare(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=RUN_S, cwd=cwd, check=False)


def _start(argv: list[str], cwd: Path) -> subprocess.Popen:
    """A compare in a group of its own (as a shell starts a job), its output to files beside ``cwd``."""
    return subprocess.Popen(
        argv,
        cwd=cwd,
        stdout=open(cwd / "compare.out", "w"),
        stderr=open(cwd / "compare.err", "w"),
        start_new_session=True,
    )


def _output(cwd: Path) -> str:
    return (cwd / "compare.out").read_text() + (cwd / "compare.err").read_text()


def _record(out: Path, arm: str) -> dict:
    return json.loads((out / "runs" / arm / "seed0" / "run.json").read_text())


def _placement_file(out: Path, arm: str) -> dict:
    try:
        return json.loads((out / "runs" / arm / "seed0" / "placement.json").read_text())
    except (OSError, ValueError):
        return {}


def _jobs(out: Path) -> dict:
    return json.loads((out / ".slurm" / "jobs.json").read_text())["runs"]


def _squeue(cluster, job: str) -> str:
    """``STATE REASON`` of one task, or "" once it has left the queue."""
    return cluster.run("squeue", "-h", "-t", "all", "-j", job, "-o", "%T %r").stdout.strip()


ARMS = ("yolov8n", "yolov8n-drconv")


def test_check_names_an_unknown_partition_and_the_known_ones(cluster):
    from drconv_yolo.experiment.backends.slurm import SlurmBackend

    with SlurmBackend(_settings(backend="slurm", slurm_partition="nope")) as backend:
        with pytest.raises(CompareError, match=rf"--slurm-partition nope: no such partition \(partitions: {PARTITION}"):
            backend.check(None)


def test_check_refuses_a_run_no_node_can_hold(cluster):
    from drconv_yolo.experiment.backends.slurm import SlurmBackend

    with SlurmBackend(_settings(backend="slurm", cpus_per_run=4096)) as backend:
        assert backend.partition == PARTITION and backend.device(None) == "cpu"  # the default partition, no GPUs
        with pytest.raises(CompareError, match=rf"no node of partition {PARTITION} .* has 4096 CPU\(s\) and 0 GPU"):
            backend.check(None)


@pytest.mark.slow
def test_a_job_array_runs_every_run_and_the_report_says_where(cluster, tiny, tmp_path):
    out = tmp_path / "out"
    r = _compare(_argv(tiny, out, 2, "--slurm-time", "30"), tmp_path)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert "pre-flight" in r.stdout and f"backend: SLURM partition {PARTITION}" in r.stdout
    placements = [_record(out, arm)["placement"] for arm in ARMS]
    array = {p["job_id"] for p in placements}
    assert len(array) == 1, placements  # one job array ...
    assert sorted(p["array_task_id"] for p in placements) == ["0", "1"]  # ... a task per run
    for p in placements:
        assert p["backend"] == "slurm" and p["partition"] == PARTITION and p["node"] == "localhost"
        assert p["cpus"] == 1 and p["gpus"] == [] and p["attempt"] == 1 and p["requeued"] == 0
        assert p["slurm_job"] == f"{p['job_id']}_{p['array_task_id']}" and p["started"] <= p["finished"]
    assert {v["job"] for v in _jobs(out).values()} == {p["slurm_job"] for p in placements}
    report = (out / "report.md").read_text()
    where = report.split("## Where the runs ran")[1].split("## ")[0]
    for arm, p in zip(ARMS, placements):
        rows = [line for line in where.splitlines() if line.startswith(f"| {arm} | 0 | slurm |")]
        assert len(rows) == 1 and f"localhost (job {p['slurm_job']})" in rows[0], where
    assert "No run was retried." in where
    assert "#SBATCH --time=30" in next((out / ".slurm").glob("*_submission.sh")).read_text()

    again = _compare(_argv(tiny, out, 2, "--slurm-time", "30"), tmp_path)  # the same command: nothing to train
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    assert "compare: 0 run(s) trained now, 2 reused" in again.stdout
    assert "submitted" not in again.stdout
    assert [_record(out, arm)["placement"] for arm in ARMS] == placements


@pytest.mark.slow
def test_a_cancelled_task_is_submitted_again_and_finishes(cluster, tiny, tmp_path):
    out = tmp_path / "out"
    proc = _start(_argv(tiny, out, 10), tmp_path)
    try:
        started = out / "runs" / "yolov8n" / "seed0" / "args.yaml"  # Ultralytics writes it as training starts
        assert wait_until(lambda: started.is_file() or proc.poll() is not None, SEEN_S), _output(tmp_path)
        first = _placement_file(out, "yolov8n")["slurm_job"]
        assert cluster.run("scancel", first).returncode == 0
        assert proc.wait(timeout=RUN_S) == 0, _output(tmp_path)[-4000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    log = _output(tmp_path)
    assert f"its SLURM task {first} left the queue without a result" in log and "(attempt 2 of at most 3)" in log
    p = _record(out, "yolov8n")["placement"]
    assert p["attempt"] == 2 and p["slurm_job"] != first and "resumed_from" not in p  # again, from a clean folder
    assert _record(out, "yolov8n")["epochs_completed"] == 10
    assert _record(out, "yolov8n-drconv")["placement"]["attempt"] == 1
    booked = _jobs(out)["runs/yolov8n/seed0"]
    assert (booked["job"], booked["attempt"]) == (p["slurm_job"], 2)
    report = (out / "report.md").read_text()
    assert "Run again after their node or worker was lost: yolov8n seed 0 (attempt 2)." in report


@pytest.mark.slow
def test_a_preempted_task_is_requeued_and_resumes_from_its_last_checkpoint(cluster, tiny, tmp_path):
    out = tmp_path / "out"
    proc = _start(_argv(tiny, out, 30), tmp_path)  # long enough that it is still training when signalled
    run = out / "runs" / "yolov8n" / "seed0"
    try:
        assert wait_until(lambda: (run / "weights" / "last.pt").is_file() or proc.poll() is not None, SEEN_S)
        job = _placement_file(out, "yolov8n")["slurm_job"]
        # what SLURM sends before a time limit or a preemption (submitit: checkpoint, then scontrol requeue)
        assert cluster.run("scancel", "--signal=USR2", job).returncode == 0
        assert wait_until(lambda: _squeue(cluster, job).startswith("PENDING"), SEEN_S), _squeue(cluster, job)
        cluster.run("scontrol", "update", f"JobId={job}", "StartTime=now")  # skip SLURM's delay before a requeued start
        assert proc.wait(timeout=RUN_S) == 0, _output(tmp_path)[-4000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    record = _record(out, "yolov8n")
    p = record["placement"]
    assert p["slurm_job"] == job and p["requeued"] == 1 and p["attempt"] == 2  # the same task, requeued
    assert p["resumed_from"] == str(run / "weights" / "last.pt")
    assert record["epochs_completed"] == 30 and [row["epoch"] for row in record["per_epoch"]] == list(range(1, 31))
    retried = "Run again after their node or worker was lost: yolov8n seed 0 (attempt 2)."
    assert retried in (out / "report.md").read_text()


@pytest.mark.slow
def test_a_stopped_compare_leaves_its_array_and_the_same_command_collects_it(cluster, tiny, tmp_path):
    out = tmp_path / "out"
    argv = _argv(tiny, out, 2, "--slurm-max-parallel", "1")
    first = tmp_path / "first"
    first.mkdir()
    proc = _start(argv, first)
    try:
        assert wait_until(lambda: (out / ".slurm" / "jobs.json").is_file() or proc.poll() is not None, SEEN_S)
        tasks = {key: v["job"] for key, v in _jobs(out).items()}
        array = {job.split("_")[0] for job in tasks.values()}.pop()
        cluster.run("scontrol", "hold", array)  # what has not started waits, so the rerun finds it still queued
        second = tasks["runs/yolov8n-drconv/seed0"]  # the array's second task: the cap keeps it pending
        assert wait_until(lambda: "JobHeld" in _squeue(cluster, second), SEEN_S), _squeue(cluster, second)
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
        assert proc.wait(timeout=60) == 130, _output(first)[-4000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert "keep running as SLURM task(s)" in _output(first) and "run the same command again" in _output(first)
    assert _squeue(cluster, second).startswith("PENDING")  # not cancelled
    assert "#SBATCH --array=0-1%1" in (out / ".slurm" / f"{array}_submission.sh").read_text()

    rerun = tmp_path / "rerun"
    rerun.mkdir()
    proc = _start(argv, rerun)
    try:
        log = out / "progress.log"
        waiting = "from an earlier compare on this folder"
        assert wait_until(lambda: waiting in log.read_text() or proc.poll() is not None, SEEN_S), _output(rerun)
        cluster.run("scontrol", "release", array)
        assert proc.wait(timeout=RUN_S) == 0, _output(rerun)[-4000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert "submitted" not in _output(rerun)  # nothing submitted twice
    assert {_record(out, arm)["placement"]["slurm_job"] for arm in ARMS} == set(tasks.values())
    assert (out / "report.md").is_file()
