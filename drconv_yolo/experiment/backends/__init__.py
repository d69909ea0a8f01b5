"""Where a comparison's runs run: one module per backend, chosen here (:func:`make_backend`) and nowhere else.

A backend takes the runs that must train (one run = one arm x seed: train, evaluate, measure, write ``run.json``)
and returns their records; everything else (the plan, reuse, the pre-flight, the report, the folder lock) is the
comparison's (:mod:`~drconv_yolo.experiment.run`). Each backend is a context manager (it may connect to a cluster
on entry and must let go of it on exit) with:

* ``device(requested)``: the plan's device (the local backend: ``--device``; a cluster backend: ``"cpu"`` or
  ``"0"``.. relative to the GPUs each run is given, which its worker trains on, see
  :mod:`~drconv_yolo.experiment.worker`);
* ``check(plan)``: a pre-flight line saying the backend is reachable and can run the plan (raises
  :class:`~drconv_yolo.experiment.settings.CompareError` when not), or None;
* ``run(plan, todo, interrupted)``: train ``todo`` (``interrupted`` ones had a partial folder) and return their
  records in the same order; a failed run raises ``CompareError`` after the other runs were stopped.

* :mod:`~.local`: one run after another on this machine (the default).
* :mod:`~.ray`: a Ray task per run, on this machine or a Ray cluster (the ``ray`` extra).
* :mod:`~.slurm`: one SLURM job array, a task per run (the ``slurm`` extra: submitit).
"""

from __future__ import annotations

from typing import Any

from ..settings import BACKENDS, CompareError

__all__ = ["BACKENDS", "make_backend"]


def make_backend(settings: Any) -> Any:
    """The backend ``settings.backend`` names (imported only when chosen: Ray and submitit are optional extras).

    Raises:
        CompareError: For an unknown backend, or a missing optional dependency (named, with how to install it).
    """
    name = getattr(settings, "backend", "local") or "local"
    if name == "local":
        from .local import LocalBackend

        return LocalBackend(settings)
    if name == "ray":
        from .ray import RayBackend

        return RayBackend(settings)
    if name == "slurm":
        from .slurm import SlurmBackend

        return SlurmBackend(settings)
    raise CompareError(f"--backend must be one of {list(BACKENDS)}, got {name!r}")
