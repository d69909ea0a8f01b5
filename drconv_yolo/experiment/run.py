"""The baseline comparison: every model x seed trained with one recipe, evaluated, measured and reported.

:func:`compare` trains each model (an *arm*; the first one is the baseline) once per seed with identical Ultralytics
arguments (only ``model`` differs; ``seed`` differs between seeds, not between arms), evaluates ``best.pt`` with
:func:`drconv_yolo.evaluation.evaluate` (Ultralytics mAP50/mAP50-95 and pycocotools AP/AR on the prepared ground
truth), measures parameters, GFLOPs, batch-1 latency, training throughput, wall time and peak memory
(:mod:`~drconv_yolo.experiment.worker`), and writes a report (:mod:`~drconv_yolo.experiment.report`).

Output folder::

    OUT/report.md results.csv results.json map_per_epoch.png deltas.png   (each written to a temp name, renamed)
    OUT/runs/<arm>/seed<k>/           Ultralytics' run folder: weights/best.pt, results.csv (per epoch), args.yaml
    OUT/runs/<arm>/seed<k>/eval/      the evaluation: coco_eval.json, predictions
    OUT/runs/<arm>/seed<k>/run.json   the run's record, written last: its completion marker
    OUT/ground_truth/<key>/           a ground truth built from the dataset's YOLO labels (when none was given or
                                      prepared), keyed by the dataset's fingerprint
    OUT/.compare.lock                 held while a comparison writes OUT

Processes: one comparison at a time writes an output folder (``OUT/.compare.lock``); a worker never outlives its
comparison, whichever way it ends (:mod:`~drconv_yolo.experiment.process`).

Resuming: a run whose ``run.json`` exists (with the same settings, the same dataset fingerprint and ground-truth
content included) is skipped; a run folder without it was
interrupted and is deleted and trained again from scratch. A folder holding runs made with other settings is refused.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..io import atomic_write_json, atomic_write_text
from ..measure import environment
from . import plots
from . import report as rep
from .backends import make_backend
from .plan import RUN_FILE, Plan, RunSpec, make_plan, run_state
from .preflight import Preflight, estimate_minutes, preflight
from .process import FolderLock, termination_signals
from .settings import CompareSettings

__all__ = ["compare", "write_report"]

RESULTS_INDENT = 1


def _reuse(spec: RunSpec) -> dict[str, Any]:
    """The record of a run finished earlier, its paths updated to where the folder is now."""
    run_dir = Path(spec.run_dir)
    print(f"{spec.label}: finished earlier ({run_dir / RUN_FILE}), skipped", flush=True)
    record = json.loads((run_dir / RUN_FILE).read_text(encoding="utf-8"))
    record["spec"].update(index=spec.index, total=spec.total, run_dir=spec.run_dir)  # the folder may have moved
    record["weights"] = str(run_dir / "weights" / Path(record["weights"]).name)
    return record


def _run_all(plan: Plan, states: Sequence[str], backend: Any) -> tuple[list[dict], int]:
    """Reuse finished runs, have the backend train the rest (interrupted ones from scratch); return (records in plan
    order, number trained now)."""
    todo = [s for s, state in zip(plan.runs, states) if state != "done"]
    interrupted = [s for s, state in zip(plan.runs, states) if state == "partial"]
    reused = {s.label: _reuse(s) for s, state in zip(plan.runs, states) if state == "done"}
    trained = dict(zip((s.label for s in todo), backend.run(plan, todo, interrupted) if todo else []))
    return [reused.get(s.label) or trained[s.label] for s in plan.runs], len(todo)


def write_report(
    out: Path, records: Sequence[Mapping[str, Any]], settings: Mapping[str, Any], env: Mapping[str, Any]
) -> dict[str, Any]:
    """Write plots, ``results.csv``, ``results.json`` and ``report.md`` (last) into ``out``, each atomically.

    Args:
        out: Output folder.
        records: Run records.
        settings: Comparison settings (:meth:`~drconv_yolo.experiment.plan.Plan.describe`).
        env: :func:`drconv_yolo.measure.environment`.

    Returns:
        The results dict with ``"paths"`` (``{"report", "csv", "json", "curves", "deltas"}`` absolute paths).
    """
    results = rep.build_results(records, settings, env)
    paths = {k: Path(out) / v for k, v in rep.FILES.items()}
    plots.plot_curves(results, paths["curves"])
    plots.plot_deltas(results, paths["deltas"])
    plots.plot_region_usage(results["runs"], results["arms"], Path(out))
    atomic_write_text(paths["csv"], rep.csv_text(results["runs"]))
    atomic_write_json(paths["json"], results, indent=RESULTS_INDENT)
    atomic_write_text(paths["report"], rep.markdown_report(results))
    results["paths"] = {k: str(v) for k, v in paths.items()}
    return results


STATE_WORDS = {"done": "reused (finished earlier)", "partial": "trains again (interrupted)", "new": "trains"}


def _dry_run(plan: Plan, states: Sequence[str], todo: Sequence[RunSpec], checked: Preflight) -> dict[str, Any]:
    """Print the plan after the pre-flight, train nothing; returns ``{"dry_run", "runs", "estimate_min"}``."""
    for spec, state in zip(plan.runs, states):
        print(f"{spec.label}: {STATE_WORDS[state]} -> {spec.run_dir}", flush=True)
    minutes = estimate_minutes(plan, todo, checked)
    took = f"{minutes:.1f} min" if minutes >= 1 else f"{minutes * 60:.0f} s"
    print(
        f"compare --dry-run: {len(todo)} run(s) to train, {len(plan.runs) - len(todo)} reused; estimate at least "
        f"{took} of training and evaluation on {plan.device} (the pre-flight's timed step x "
        f"{plan.train['epochs']} epochs; data loading not counted); nothing trained",
        flush=True,
    )
    return {"dry_run": True, "runs": dict(zip((s.label for s in plan.runs), states)), "estimate_min": minutes}


def compare(settings: CompareSettings) -> dict[str, Any]:
    """Train and evaluate every model x seed with one recipe and write the report.

    Args:
        settings: The comparison (:class:`~drconv_yolo.experiment.settings.CompareSettings`).

    Returns:
        ``results.json``'s content plus ``"paths"`` (written files) and ``"trained"`` (runs trained by this call).

    Raises:
        CompareError: For a missing model, dataset or ground truth, a bad argument, or a conflicting earlier run
            (all checked before any training), another comparison writing the same folder, and a failed run.
        Terminated: On SIGTERM or SIGHUP, after the running worker was stopped (see
            :mod:`~drconv_yolo.experiment.process`).
    """
    settings.validate()
    t0 = time.perf_counter()
    with make_backend(settings) as backend, termination_signals():
        plan = make_plan(settings, device=backend.device(settings.device))
        print(plan.headline(), flush=True)
        with FolderLock(plan.out):
            states = [run_state(s) for s in plan.runs]  # raises before any training if an old run conflicts
            todo = [s for s, state in zip(plan.runs, states) if state != "done"]
            checked = preflight(plan, todo, backend)
            if settings.dry_run:
                return _dry_run(plan, states, todo, checked)
            records, trained = _run_all(plan, states, backend)
            results = write_report(plan.out, records, plan.describe(), environment(plan.device))
    print(rep.console_summary(results), flush=True)
    print(
        f"compare: {trained} run(s) trained now, {len(plan.runs) - trained} reused, "
        f"{(time.perf_counter() - t0) / 60:.1f} min; report: {results['paths']['report']}",
        flush=True,
    )
    results["trained"] = trained
    return results
