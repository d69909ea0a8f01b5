"""A comparison's processes: its worker dies with it (SIGKILL, SIGTERM, Ctrl-C), one comparison per output folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from _procs import cmdlines, needs_proc, running, wait_until

from drconv_yolo.experiment import process

WAIT_S = 240  # for the worker to start: two Python processes importing torch and Ultralytics on a busy machine
GONE_S = 15  # for the worker to be gone once its comparison is


def _workers(marker: str) -> list[int]:
    """Pids of live workers whose command line mentions ``marker`` (a spec path under the test's folder)."""
    return running(marker, "_worker")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from drconv_yolo.data.synthetic import generate

    return generate(tmp_path_factory.mktemp("data") / "syn", n_train=8, n_val=4, imgsz=64, seed=0, verbose=False)


def _compare_argv(data: Path, out: Path, epochs: int) -> list[str]:
    return [
        *("compare", "--data", str(data), "--models", "yolov8n.yaml", "yolov8n-drconv.yaml", "--seeds", "0"),
        *("--epochs", str(epochs), "--imgsz", "32", "--batch", "4", "--workers", "0", "--device", "cpu"),
        *("--latency-runs", "1", "--latency-warmup", "0", "--out", str(out)),
    ]


@needs_proc
@pytest.mark.slow
@pytest.mark.parametrize(
    "sig, to_group, code, line",
    [
        (signal.SIGKILL, False, -signal.SIGKILL, None),
        (signal.SIGTERM, False, 128 + signal.SIGTERM, "terminated by SIGTERM"),
        (signal.SIGHUP, True, 128 + signal.SIGHUP, "terminated by SIGHUP"),  # the terminal closed
        (signal.SIGINT, True, 130, "interrupted"),  # Ctrl-C: the terminal signals the whole foreground group
    ],
    ids=["SIGKILL", "SIGTERM", "terminal-closed", "Ctrl-C"],
)
def test_the_worker_never_outlives_its_compare(tiny, tmp_path, sig, to_group, code, line):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "drconv_yolo.cli", *_compare_argv(tiny, out, epochs=1000)]
    # a group of its own, as a shell starts a job: a signal to the group reaches what a terminal's would
    parent = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    marker = str(out / "runs")
    try:
        training = out / "runs" / "yolov8n" / "seed0" / "args.yaml"  # written by Ultralytics as training starts
        assert wait_until(lambda: training.is_file() or parent.poll() is not None, WAIT_S), "no worker started"
        assert parent.poll() is None and _workers(marker), parent.stderr.read()
        os.killpg(parent.pid, sig) if to_group else parent.send_signal(sig)
        _, err = parent.communicate(timeout=GONE_S * 2)
        assert parent.returncode == code, err[-2000:]
        assert wait_until(lambda: not _workers(marker), GONE_S), f"worker left running: {_workers(marker)}"
        if line is not None:  # one line, no traceback from the comparison or its worker
            assert [x for x in err.splitlines() if x.startswith("drconv-yolo")] == [f"drconv-yolo compare: {line}"], err
            assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-2000:]
    finally:
        for pid in [parent.pid, *_workers(marker)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        parent.wait()


WATCHED = """
import sys, time
from drconv_yolo.experiment.process import watch_parent
watch_parent(int(sys.argv[1]), interval=0.2)
print("watching", flush=True)
time.sleep(120)
"""
MIDDLE = """
import subprocess, sys, os, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], str(os.getpid())], stdout=subprocess.PIPE, text=True)
print(child.pid, flush=True)
print(child.stdout.readline().strip(), flush=True)
time.sleep(120)
"""


@needs_proc
def test_a_watched_worker_exits_when_its_parent_dies_without_the_death_signal():
    """The portable fallback alone (no prctl): the parent SIGKILLed, the watching child exits by itself."""
    middle = subprocess.Popen([sys.executable, "-c", MIDDLE, WATCHED], stdout=subprocess.PIPE, text=True)
    try:
        child = int(middle.stdout.readline())
        assert middle.stdout.readline().strip() == "watching"
        middle.kill()
        middle.wait()
        assert wait_until(lambda: child not in cmdlines(), GONE_S), "the watching child outlived its parent"
    finally:
        middle.kill()
        middle.wait()


GROUPED = """
import os, subprocess, sys, time
from drconv_yolo.experiment.process import watch_parent
watch_parent(int(sys.argv[1]), interval=600)  # the portable check too slow to matter: the death signal must act
grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])  # same group, like DDP's
print(grandchild.pid, flush=True)
time.sleep(120)
"""
LAUNCHER = """
import os, sys
from drconv_yolo.experiment.process import run_worker
run_worker([sys.executable, "-c", sys.argv[1], str(os.getpid())])
"""


@needs_proc
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_a_workers_whole_group_dies_with_its_parent_by_the_death_signal():
    """The launcher (a comparison, or a Ray task) SIGKILLed: the worker and its own children (DDP, dataloaders) end."""
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER, GROUPED], stdout=subprocess.PIPE, text=True)
    try:
        grandchild = int(launcher.stdout.readline())
        assert grandchild in cmdlines()
        launcher.kill()
        launcher.wait()
        assert wait_until(lambda: grandchild not in cmdlines(), GONE_S), "the worker's child outlived the launcher"
    finally:
        launcher.kill()
        launcher.wait()


def test_a_locked_folder_is_refused_and_released_after(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    with process.FolderLock(out):
        holder = subprocess.run(
            [sys.executable, "-m", "drconv_yolo.cli", *_compare_argv(tiny, out, epochs=1)],
            capture_output=True,
            text=True,
            timeout=WAIT_S,
        )
        assert holder.returncode == 2, holder.stderr[-2000:]
        assert f"pid {os.getpid()}" in holder.stderr and "another compare" in holder.stderr
        assert "Traceback" not in holder.stderr
        assert not (out / "runs").exists()  # refused before any training
    with process.FolderLock(out):  # released on exit: taken again
        pass


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path):
    """A killed comparison leaves its lock file: the next one takes the folder (the kernel released the lock)."""
    out = tmp_path / "out"
    lines = ["import sys, os", "from drconv_yolo.experiment.process import FolderLock"]
    code = "\n".join([*lines, "FolderLock(sys.argv[1]).__enter__()", "os._exit(9)"])
    subprocess.run([sys.executable, "-c", code, str(out)], check=False, timeout=WAIT_S)
    assert (out / process.LOCK_FILE).is_file()
    with process.FolderLock(out):
        assert (out / process.LOCK_FILE).read_text().strip() == str(os.getpid())


def test_terminated_maps_to_the_signal_exit_code():
    e = process.Terminated(signal.SIGTERM)
    assert e.exit_code == 143 and str(e) == "terminated by SIGTERM"


def test_a_run_given_cpus_trains_with_that_many_threads_after_ultralytics_picks_its_device():
    import torch
    from ultralytics.utils import torch_utils

    from drconv_yolo.experiment.worker import use_cpus

    before = (torch_utils.NUM_THREADS, torch.get_num_threads())
    try:
        assert use_cpus(3) == 3
        torch_utils.select_device("cpu", verbose=False)  # what Ultralytics' trainer calls: it resets the threads
        assert torch.get_num_threads() == 3
        assert use_cpus(0.5) == 1  # a fractional Ray share still gets one thread
    finally:
        torch_utils.NUM_THREADS = before[0]
        torch.set_num_threads(before[1])
