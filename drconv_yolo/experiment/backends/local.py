"""The local backend (``--backend local``, the default): the runs one after another on this machine, each in a fresh
worker process (or in the comparison's own process with ``--in-process``), on the plan's ``--device``."""

from __future__ import annotations

import time
from typing import Any, Sequence

from ..plan import Plan, RunSpec
from ..worker import clean_folder, launch, now_utc, placement_here, run_one

__all__ = ["LocalBackend"]


def done_line(spec: RunSpec, record: dict[str, Any], seconds: float) -> str:
    """``[run 2/4] arm seed 0: done in 1.2 min: mAP50-95 ..., mAP50 ..., latency ... ms``."""
    m = record["metrics"]
    return (
        f"{spec.label}: done in {seconds / 60:.1f} min: mAP50-95 {m['mAP50-95']:.4f}, mAP50 {m['mAP50']:.4f}, "
        f"latency {m['latency_ms']:.1f} ms"
    )


class LocalBackend:
    """Sequential runs on this machine (today's ``compare``): nothing to connect to, nothing to check."""

    name = "local"

    def __init__(self, settings: Any):
        self.in_process = bool(settings.in_process)

    def __enter__(self) -> LocalBackend:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def device(self, requested: str | None) -> str | None:
        """The plan's device: the one asked for (None: Ultralytics' default choice, see ``make_plan``)."""
        return requested

    def check(self, plan: Plan) -> str | None:
        """Nothing to reach: no pre-flight line."""
        return None

    def run(self, plan: Plan, todo: Sequence[RunSpec], interrupted: Sequence[RunSpec]) -> list[dict[str, Any]]:
        """Train ``todo`` in order, one at a time; returns their records in that order."""
        records = []
        for spec in todo:
            if spec in interrupted:
                print(f"{spec.label}: {spec.run_dir} was interrupted; deleting it and training again", flush=True)
            print(f"{spec.label}: training {spec.model} ...", flush=True)
            t0 = time.perf_counter()
            placement = placement_here(self.name, spec.train["device"])
            if self.in_process:
                clean_folder(spec)
                placement["started"] = now_utc()
                record = run_one(spec, plan.data.n_train, in_process=True, placement=placement)
            else:
                record = launch(spec, plan.data.n_train, placement)
            print(done_line(spec, record, time.perf_counter() - t0), flush=True)
            records.append(record)
        return records
