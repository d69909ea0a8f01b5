"""Progress of runs in flight (cluster backends): one line per run, refreshed in place on a terminal, and every change
appended as a plain, time-stamped line to ``OUT/progress.log``.

A run's line is ``queued``, ``running on HOST (node ID), epoch k/N, ETA m min``, ``done: mAP50-95 x``, ``lost on
HOST, running again (attempt 2)`` or ``failed``. The epoch comes from the run folder as training writes it
(Ultralytics' ``results.csv``, one row per finished epoch), the host from ``placement.json``
(:mod:`~drconv_yolo.experiment.worker`): progress needs nothing from the processes doing the work.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence, TextIO

from .plan import RunSpec
from .worker import PLACEMENT_FILE

__all__ = ["LOG_FILE", "Progress"]

LOG_FILE = "progress.log"
NODE_ID_SHOWN = 8  # hex digits of a Ray node id in a line


def _epochs_done(run_dir: Path) -> int:
    """Rows of Ultralytics' ``results.csv`` (finished epochs); 0 before the first."""
    try:
        return max(0, len((run_dir / "results.csv").read_text(encoding="utf-8").strip().splitlines()) - 1)
    except OSError:
        return 0


def _where(placement: Mapping[str, Any]) -> str:
    """``host (node 1a2b3c4d, GPU 0)``."""
    node = str(placement.get("node") or "")
    node = node[:NODE_ID_SHOWN] if placement.get("backend") == "ray" else node  # a Ray id is long; a name is not
    extra = [f"node {node}"] if node else []
    if placement.get("slurm_job"):
        extra.append(f"job {placement['slurm_job']}")
    if placement.get("gpus"):
        extra.append(f"GPU {','.join(map(str, placement['gpus']))}")
    return f"{placement.get('host', '?')}" + (f" ({', '.join(extra)})" if extra else "")


class Progress:
    """The lines of the runs a backend has in flight.

    Args:
        runs: The runs being trained now.
        out: The comparison's output folder (``progress.log`` goes there).
        stream: Where the lines go (default stdout); refreshed in place when it is a terminal.
    """

    def __init__(self, runs: Sequence[RunSpec], out: Path, stream: TextIO | None = None):
        self.runs = list(runs)
        self.stream = stream or sys.stdout
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.log = Path(out) / LOG_FILE
        self.status: dict[str, str] = {s.label: "queued" for s in self.runs}  # set by the backend
        self.started: dict[str, float] = {}
        self.shown: dict[str, str] = {}
        self.drawn = 0

    def set(self, spec: RunSpec, status: str) -> None:
        """Set a run's status: ``queued``, ``running``, ``done: ...``, ``lost ...``, ``failed ...``."""
        self.status[spec.label] = status
        if status == "running":
            self.started.setdefault(spec.label, time.monotonic())
        else:
            self.started.pop(spec.label, None)

    def line(self, spec: RunSpec) -> str:
        """The run's line now."""
        status = self.status[spec.label]
        run_dir = Path(spec.run_dir)
        if status not in ("queued", "running"):
            return f"{spec.label}: {status}"
        try:
            placement = json.loads((run_dir / PLACEMENT_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return f"{spec.label}: queued"  # submitted; its task has not started yet
        epochs, done = int(spec.train["epochs"]), _epochs_done(run_dir)
        line = f"{spec.label}: running on {_where(placement)}, epoch {min(done + 1, epochs)}/{epochs}"
        t0 = self.started.get(spec.label)
        if done and t0 is not None:
            eta = (time.monotonic() - t0) / done * max(0, epochs - done)  # a resumed epoch may be logged twice
            line += f", ETA {eta / 60:.1f} min"
        return line

    def refresh(self) -> None:
        """Show every run's line: in place on a terminal, else the lines that changed; log the changes."""
        lines = {s.label: self.line(s) for s in self.runs}
        changed = [text for label, text in lines.items() if self.shown.get(label) != text]
        if not changed:
            return
        if self.tty:
            if self.drawn:
                self.stream.write(f"\x1b[{self.drawn}F")  # back to the first line drawn
            self.stream.write("".join(f"\x1b[2K{text}\n" for text in lines.values()))
            self.drawn = len(lines)
        else:
            self.stream.write("".join(f"{text}\n" for text in changed))
        self.stream.flush()
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with open(self.log, "a", encoding="utf-8") as f:  # a log: appended, never rewritten
            f.write("".join(f"{stamp} {text}\n" for text in changed))
        self.shown = lines

    def note(self, text: str) -> None:
        """A message between refreshes (a retry, a failure): printed above the lines and logged."""
        if self.tty and self.drawn:
            self.stream.write(f"\x1b[{self.drawn}F\x1b[J")
            self.drawn, self.shown = 0, {}
        self.stream.write(f"{text}\n")
        self.stream.flush()
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with open(self.log, "a", encoding="utf-8") as f:
            f.write(f"{stamp} {text}\n")
