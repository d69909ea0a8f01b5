"""The baseline comparison, split along its seams.

* :mod:`~.settings`: :class:`CompareSettings` (what a comparison is asked to do) and the input checks.
* :mod:`~.plan`: the checked plan, one :class:`RunSpec` per arm x seed, and which runs are finished.
* :mod:`~.worker`: one run (train, evaluate, measure), in a process of its own by default.
* :mod:`~.run`: :func:`compare`, the orchestration: plan, run or reuse every run, write the report.
* :mod:`~.process`: the worker dies with its comparison; one comparison at a time per output folder.
* :mod:`~.report` and :mod:`~.plots`: statistics, tables, report.md, CSV, JSON and PNGs; :mod:`~.intervals`: the
  paired confidence intervals (Student's t without SciPy).
* :mod:`~.contrast`: an arm's paired gain on a main dataset against its gain on a control dataset.
* :mod:`~.demo_profiles`: the built-in default, :func:`demo`, with its profiles and time model.
"""

from .demo_profiles import DEMO_MODELS, DEMO_PROFILES, DEMO_TRAIN, demo, demo_profile, estimate_seconds
from .plan import RunSpec
from .run import compare
from .settings import CompareError, CompareSettings, arm_names, check_data, check_model, parse_overrides

__all__ = [
    "DEMO_MODELS",
    "DEMO_PROFILES",
    "DEMO_TRAIN",
    "CompareError",
    "CompareSettings",
    "RunSpec",
    "arm_names",
    "check_data",
    "check_model",
    "compare",
    "demo",
    "demo_profile",
    "estimate_seconds",
    "parse_overrides",
]
