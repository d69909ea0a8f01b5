"""The life of a comparison's processes: its workers die with it, and one comparison at a time writes a folder.

* A worker (one run, ``python -m drconv_yolo.cli _worker``) starts in a process group of its own, so a Ctrl-C in the
  terminal reaches the comparison only, which then stops the worker's whole group (the worker and its dataloader
  processes) itself: one line on the terminal, no traceback from the worker.
* The comparison killed outright (SIGKILL) cannot stop anything, so the worker watches its parent: on Linux the kernel
  sends it SIGTERM when the parent dies (``prctl(PR_SET_PDEATHSIG)``, set before the worker's program starts), which
  the worker answers by killing its whole group (dataloader and DDP processes included, :func:`watch_parent`); and on
  every system a daemon thread in the worker checks once a second that its parent is still the comparison and takes
  its own group down when it is not. The parent may be the comparison or, under Ray, the task that launched the run:
  a lost node or a cancelled task ends the run's processes the same way.
* SIGTERM or SIGHUP (the terminal closed) to the comparison: :func:`termination_signals` turns them into
  :class:`Terminated`, which unwinds the comparison, stopping its worker on the way (:func:`run_worker`).
* :class:`FolderLock`: an output folder is locked (``OUT/.compare.lock``, ``fcntl.flock``, holding the pid) while a
  comparison writes it. The kernel releases the lock when its process dies however it dies, so there are no stale
  locks to clear; a second comparison on the same folder is refused, naming the pid that holds it.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from .settings import CompareError

__all__ = [
    "LOCK_FILE",
    "FolderLock",
    "Terminated",
    "run_worker",
    "set_parent_death_signal",
    "termination_signals",
    "watch_parent",
]

LOCK_FILE = ".compare.lock"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
PARENT_POLL_S = 1.0  # how often a worker checks that its comparison is alive
STOP_GRACE_S = 5.0  # SIGTERM to a worker's group, then SIGKILL after this long
EXIT_SIGNAL_BASE = 128  # a process ended by signal N exits 128 + N, as shells report it
TERMINATION_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived; a BaseException like KeyboardInterrupt so no ``except Exception`` swallows it.

    Attributes:
        signum: The signal's number.
    """

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """128 + the signal's number."""
        return EXIT_SIGNAL_BASE + self.signum

    def __str__(self) -> str:
        return f"terminated by {signal.Signals(self.signum).name}"


@contextlib.contextmanager
def termination_signals() -> Iterator[None]:
    """Raise :class:`Terminated` in the main thread on SIGTERM/SIGHUP while inside; a no-op in other threads."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated(signum)

    old = {s: signal.signal(s, handler) for s in TERMINATION_SIGNALS}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def set_parent_death_signal(signum: int = signal.SIGTERM) -> None:
    """Linux: ask the kernel to send ``signum`` to this process when its parent dies (kept across ``exec``); a worker
    turns it into the end of its group (:func:`watch_parent`); elsewhere nothing."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)


def _child_setup() -> None:
    """Run in the forked worker before ``exec``: parent-death signal (its own group comes from the session)."""
    set_parent_death_signal()


def _stop_group(proc: subprocess.Popen) -> None:
    """Stop a worker and every process of its group: SIGTERM, then SIGKILL after :data:`STOP_GRACE_S`."""
    if os.name != "posix":
        proc.kill()
        proc.wait()
        return
    for sig, wait in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError):  # the group may outlive its leader (dataloader processes)
        os.killpg(proc.pid, signal.SIGKILL)


def run_worker(command: Sequence[str], env: Mapping[str, str] | None = None, log: Path | None = None) -> int:
    """Run a worker to its end in a process group of its own; on any exception (Ctrl-C, :class:`Terminated`, a Ray
    cancellation) stop the group first, then let the exception go on.

    Args:
        command: The worker's command line.
        env: Its environment (default: this process's).
        log: A file that takes the worker's stdout and stderr (appended), instead of this process's.

    Returns:
        The worker's exit code.
    """
    posix = os.name == "posix"
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(open(log, "ab")) if log is not None else None
        proc = subprocess.Popen(
            list(command),
            start_new_session=posix,
            preexec_fn=_child_setup if posix else None,
            env=None if env is None else dict(env),
            stdout=out,
            stderr=subprocess.STDOUT if out is not None else None,
        )
        try:
            return proc.wait()
        finally:
            if proc.poll() is None:
                _stop_group(proc)


def _exit_now() -> None:
    """End this worker and its group (its dataloader processes) at once, without cleanup: its parent is gone."""
    if os.name == "posix" and os.getpgid(0) == os.getpid():
        os.killpg(0, signal.SIGKILL)
    os._exit(EXIT_SIGNAL_BASE + signal.SIGTERM)


def watch_parent(parent_pid: int, interval: float = PARENT_POLL_S) -> threading.Thread:
    """Exit this process and its group as soon as its parent is no longer ``parent_pid`` (checked now, then every
    ``interval``) or SIGTERM arrives (the parent-death signal, or a stop from the comparison).

    Args:
        parent_pid: The comparison's pid, as it passed it to the worker.
        interval: Seconds between checks.

    Returns:
        The daemon thread doing the checks.
    """
    if os.getppid() != parent_pid:
        _exit_now()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: _exit_now())

    def watch():
        stop = threading.Event()
        while not stop.wait(interval):
            if os.getppid() != parent_pid:
                _exit_now()

    thread = threading.Thread(target=watch, name="drconv-yolo-parent-watch", daemon=True)
    thread.start()
    return thread


class FolderLock:
    """An exclusive lock on a comparison's output folder for as long as the ``with`` block runs.

    Args:
        folder: The output folder (created if missing).

    Raises:
        CompareError: On entry, when another live process holds the folder's lock.
    """

    def __init__(self, folder: str | os.PathLike):
        self.path = Path(folder) / LOCK_FILE
        self._fd: int | None = None

    def __enter__(self) -> FolderLock:
        try:
            import fcntl
        except ImportError:  # no flock (Windows): unlocked, as before
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # The lock file is a lock, not content: opened in place (no atomic write), its pid only informs the message.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise CompareError(
                f"{self.path.parent} is being written by another compare (pid {holder}, lock {self.path}); wait "
                "for it to finish, or use another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the flock; the file stays, so a waiting opener never locks a removed one
            self._fd = None
