"""Test helpers: the live processes of this machine, read from Linux's /proc (tests needing it skip elsewhere)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

PROC = Path("/proc")
needs_proc = pytest.mark.skipif(not (PROC / "self" / "cmdline").is_file(), reason="needs Linux /proc")
POLL_S = 0.2


def cmdlines() -> dict[int, list[str]]:
    """Every live process's command line, by pid (zombies and unreadable ones left out)."""
    out = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if raw and state != "Z":
            out[int(entry.name)] = raw.decode("utf-8", "replace").split("\0")
    return out


def running(*markers: str) -> list[int]:
    """Pids of live processes whose command line has an argument containing each marker."""
    return [pid for pid, args in cmdlines().items() if all(any(m in a for a in args) for m in markers)]


def wait_until(predicate, timeout: float) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds passed; returns its last value."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(POLL_S)
    return bool(predicate())
