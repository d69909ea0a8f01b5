"""What a comparison is asked to do (:class:`CompareSettings`) and the checks of its inputs, made before any training.

The checks never download anything: a model is a local YAML or weights file or a config bundled with drconv-yolo or
Ultralytics (looked up through Ultralytics, so DRConv must be registered: the command line registers, and so does
the start-up hook when a library caller imports Ultralytics); a dataset is any local Ultralytics detection YAML, its
ground truth given, prepared beside it, or built from its YOLO labels (:mod:`drconv_yolo.data.yolo`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence, Union

from ..errors import UserError

if TYPE_CHECKING:
    from ..data.yolo import GroundTruth

__all__ = [
    "DEFAULT_OUT",
    "CompareError",
    "CompareSettings",
    "DataInfo",
    "arm_names",
    "check_data",
    "check_model",
    "parse_overrides",
    "parse_slurm_time",
]

DEFAULT_OUT = "runs/compare"
# Set by the comparison itself (per run or per arm): not accepted as key=value overrides.
RESERVED_KEYS = {
    "model": "give the models with --models",
    "data": "give the dataset with --data",
    "seed": "give the seeds with --seeds",
    "project": "the run folders live under --out",
    "name": "run folders are named <arm>/seed<k>",
    "exist_ok": "set by compare",
    "resume": "compare resumes by itself: run it again with the same --out",
    "mode": "compare trains",
    "task": "the task comes from the model",
}


class CompareError(UserError):
    """A problem with the user's input (missing file, bad argument, conflicting earlier runs) or a failed run."""


BACKENDS = ("local", "ray", "slurm")  # --backend (one module each in drconv_yolo.experiment.backends)
DEPLOY_RUNTIMES = ("onnxruntime", "openvino", "none")  # --deploy-runtime (drconv_yolo.deploy.RUNTIMES + none)


@dataclass
class CompareSettings:
    """Everything :func:`drconv_yolo.experiment.compare` takes; the defaults are the command line's.

    Attributes:
        data: Any Ultralytics detection dataset YAML.
        models: Model YAMLs or weights; the first is the baseline.
        seeds: Training seeds (each arm trains once per seed).
        epochs: Training epochs.
        imgsz: Training, evaluation and latency image size.
        batch: Training and evaluation batch size.
        device: Ultralytics device (``"cpu"``, ``"0"``, ``"0,1"`` for DDP); None: GPU 0 if available, else CPU.
        workers: Dataloader workers (Ultralytics uses 0 on CPU).
        out: Output folder.
        overrides: Further Ultralytics train arguments, the same for every run.
        max_det: Detections per image for evaluation.
        split: Split evaluated.
        gt: Ground-truth JSON (default: the prepared one beside the dataset, else built from the YOLO labels).
        latency_runs: Timed batch-1 forward passes (median reported).
        latency_warmup: Untimed passes before them.
        deploy_runtime: Where the deployed latency is measured (each run's ``best.pt`` exported to ONNX and run at
            batch 1 on the CPU): ``"onnxruntime"``, ``"openvino"``, or ``"none"`` to skip it.
        in_process: Train in this process instead of one subprocess per run.
        backend: Where the runs run (:mod:`~drconv_yolo.experiment.backends`): ``"local"`` (one after another on
            this machine, on ``device``), ``"ray"`` (a Ray task per run, as many at once as the resources allow) or
            ``"slurm"`` (one SLURM job array, a task per run).
        gpus_per_run: GPUs each run is given by a cluster backend; None: 1 where the cluster has GPUs, else 0.
        cpus_per_run: CPUs each run is given by a cluster backend.
        ray_address: The Ray cluster to run on (default ``RAY_ADDRESS``, else Ray is started on this machine).
        retries: How many times a cluster backend runs a run again whose node or worker was lost (never a run that
            failed by itself).
        slurm_partition: The SLURM partition the job array goes to (default: the cluster's default partition).
        slurm_time: Each array task's time limit: minutes (``90``) or ``[D-]HH:MM:SS``; default the partition's.
        slurm_account: The SLURM account the array is charged to (default: the user's default account).
        slurm_max_parallel: At most this many array tasks (runs) at once (default: every run at once).
        dry_run: Run the pre-flight and print the plan (what is reused, what would train, a time estimate); train
            nothing.
        command: The command line, for the report.
    """

    data: str
    models: Sequence[str]
    seeds: Sequence[int] = (0,)
    epochs: int = 100
    imgsz: int = 640
    batch: int = 16
    device: Optional[str] = None
    workers: int = 8
    out: Union[str, Path] = DEFAULT_OUT
    overrides: Mapping[str, Any] = field(default_factory=dict)
    max_det: int = 300
    split: str = "val"
    gt: Optional[str] = None
    latency_runs: int = 50
    latency_warmup: int = 10
    deploy_runtime: str = "onnxruntime"
    in_process: bool = False
    backend: str = "local"
    gpus_per_run: Optional[float] = None
    cpus_per_run: float = 1
    ray_address: Optional[str] = None
    retries: int = 2
    slurm_partition: Optional[str] = None
    slurm_time: Optional[str] = None
    slurm_account: Optional[str] = None
    slurm_max_parallel: Optional[int] = None
    dry_run: bool = False
    command: Optional[str] = None

    def validate(self) -> None:
        """Check the counts and sizes (the files are checked by :func:`check_model` and :func:`check_data`).

        Raises:
            CompareError: For fewer than two models, repeated or no seeds, or a size below 1.
        """
        if len(self.models) < 2:
            raise CompareError("--models needs a baseline and at least one other model (the first one is the baseline)")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise CompareError(f"--seeds must be distinct and non-empty, got {list(self.seeds)}")
        sizes = (("epochs", self.epochs), ("imgsz", self.imgsz), ("batch", self.batch))
        for name, value in (*sizes, ("latency-runs", self.latency_runs)):
            if int(value) < 1:
                raise CompareError(f"--{name} must be >= 1, got {value}")
        self._validate_backend()
        if self.deploy_runtime not in DEPLOY_RUNTIMES:
            raise CompareError(f"--deploy-runtime must be one of {list(DEPLOY_RUNTIMES)}, got {self.deploy_runtime!r}")

    def _validate_slurm(self) -> None:
        """The ``--slurm-*`` options: only with ``--backend slurm``; whole CPUs and GPUs; a valid time and cap."""
        given = [f"--{name.replace('_', '-')}" for name in SLURM_OPTIONS if getattr(self, name) is not None]
        if self.backend != "slurm":
            if given:
                raise CompareError(f"{', '.join(given)}: only with --backend slurm (the backend is {self.backend})")
            return
        if self.slurm_time is not None:
            parse_slurm_time(self.slurm_time)
        if self.slurm_max_parallel is not None and int(self.slurm_max_parallel) < 1:
            raise CompareError(f"--slurm-max-parallel must be >= 1, got {self.slurm_max_parallel}")
        for name, value in (("cpus-per-run", self.cpus_per_run), ("gpus-per-run", self.gpus_per_run)):
            if value is not None and float(value) != int(float(value)):
                raise CompareError(f"--{name} {value:g}: SLURM gives whole CPUs and GPUs to a task")

    def _validate_backend(self) -> None:
        """The backend's options: known backend, sane resources, no option the backend decides itself."""
        if self.backend not in BACKENDS:
            raise CompareError(f"--backend must be one of {list(BACKENDS)}, got {self.backend!r}")
        if self.gpus_per_run is not None and float(self.gpus_per_run) < 0:
            raise CompareError(f"--gpus-per-run must be >= 0, got {self.gpus_per_run}")
        if float(self.cpus_per_run) <= 0:
            raise CompareError(f"--cpus-per-run must be > 0, got {self.cpus_per_run}")
        if int(self.retries) < 0:
            raise CompareError(f"--retries must be >= 0, got {self.retries}")
        self._validate_slurm()
        if self.backend == "local":
            return
        if self.device not in (None, ""):
            raise CompareError(
                f"--device {self.device}: with --backend {self.backend} each run trains on the GPUs its task is "
                "given; choose how many with --gpus-per-run (0 for the CPU)"
            )
        if self.in_process:
            raise CompareError(f"--in-process: with --backend {self.backend} every run is a task of its own")


SLURM_OPTIONS = ("slurm_partition", "slurm_time", "slurm_account", "slurm_max_parallel")


def parse_slurm_time(value: Union[str, int]) -> int:
    """A SLURM time limit in whole minutes (rounded up): ``90`` (minutes), ``MM:SS``, ``HH:MM:SS``, ``D-HH[:MM[:SS]]``.

    Raises:
        CompareError: For anything else, or a limit of zero.
    """
    text = str(value).strip()
    bad = CompareError(f"--slurm-time must be minutes (90) or [D-]HH:MM:SS (1:30:00, 2-00:00:00), got {value!r}")
    days, _, rest = text.rpartition("-") if "-" in text else ("", "", text)
    parts = rest.split(":")
    if not all(p.isdigit() for p in parts) or ("-" in text and not days.isdigit()) or len(parts) > 3:
        raise bad
    nums = [int(p) for p in parts]
    if days:  # D-HH, D-HH:MM, D-HH:MM:SS
        nums += [0] * (3 - len(nums))
        seconds = int(days) * 86400 + nums[0] * 3600 + nums[1] * 60 + nums[2]
    elif len(nums) == 1:  # minutes
        seconds = nums[0] * 60
    elif len(nums) == 2:  # MM:SS
        seconds = nums[0] * 60 + nums[1]
    else:
        seconds = nums[0] * 3600 + nums[1] * 60 + nums[2]
    if seconds <= 0:
        raise CompareError(f"--slurm-time must be more than zero, got {value!r}")
    return -(-seconds // 60)


def arm_names(models: Sequence[str]) -> list[str]:
    """Unique arm names from model file stems (``yolov8n.yaml`` -> ``yolov8n``).

    Colliding stems (``a/weights/best.pt``, ``b/weights/best.pt``) get the nearest parent folder that is not
    ``weights`` as a prefix (``a-best``, ``b-best``); anything still colliding gets ``-2``, ``-3``, ...

    Args:
        models: Model YAML or weights paths, in order.

    Returns:
        One name per model, in the same order.
    """
    paths = [Path(str(m)) for m in models]
    stems = [p.stem for p in paths]
    names = list(stems)
    for i, p in enumerate(paths):
        if stems.count(p.stem) > 1:
            parents = [q.name for q in p.parents if q.name and q.name != "weights"]
            names[i] = f"{parents[0]}-{p.stem}" if parents else p.stem
    out: list[str] = []
    for name in names:
        unique, k = name, 2
        while unique in out:
            unique, k = f"{name}-{k}", k + 1
        out.append(unique)
    return out


def check_model(model: str) -> str:
    """Check that a model YAML (local, bundled or Ultralytics') or a weights file exists; return what to train from.

    Args:
        model: ``.yaml``/``.yml`` config (a bare name such as ``yolov8n-drconv.yaml`` is looked up like Ultralytics
            does, bundled DRConv configs included once DRConv is registered) or a ``.pt`` weights file (never
            downloaded).

    Returns:
        The absolute path for a local file, else the name as given (Ultralytics resolves it again).

    Raises:
        CompareError: If the file cannot be found or has another suffix.
    """
    path = Path(model).expanduser()
    if path.suffix in (".yaml", ".yml"):
        if path.is_file():
            return str(path.resolve())
        from ultralytics.nn.tasks import yaml_model_load

        try:
            yaml_model_load(model)
        except FileNotFoundError:
            raise CompareError(
                f"model YAML not found: {model} (neither a file nor a config bundled with drconv-yolo or Ultralytics)"
            ) from None
        return model
    if path.suffix == ".pt":
        if not path.is_file():
            raise CompareError(f"model weights not found: {model} (compare never downloads weights)")
        return str(path.resolve())
    raise CompareError(f"model {model!r}: expected a model YAML (.yaml) or a weights file (.pt)")


@dataclass
class DataInfo:
    """A checked dataset: its YAML, fingerprint, ground truth and image counts.

    Attributes:
        yaml: The data YAML (absolute).
        split: The split evaluated.
        n_train: Training images.
        n_val: Images of the evaluated split.
        names: Class names.
        fingerprint: :func:`drconv_yolo.data.yolo.dataset_fingerprint` of the training and the evaluated split.
        gt: The ground truth the evaluated split is scored against, with its provenance.
    """

    yaml: str
    split: str
    n_train: int
    n_val: int
    names: list
    fingerprint: str
    gt: GroundTruth

    @property
    def gt_json(self) -> str:
        """The ground-truth JSON's path."""
        return str(self.gt.path)


def check_data(data: str, split: str = "val", gt: str | None = None, cache_dir: str | Path | None = None) -> DataInfo:
    """Check any Ultralytics detection dataset YAML and find, check or build its ground truth; nothing is downloaded.

    Args:
        data: Dataset YAML path.
        split: Split evaluated after training.
        gt: Ground-truth JSON; default the prepared one beside the dataset, else one built from the split's YOLO
            labels into ``cache_dir`` (:func:`drconv_yolo.data.yolo.resolve_ground_truth`).
        cache_dir: Where a built ground truth is cached (the comparison's ``OUT/ground_truth``).

    Returns:
        The checked dataset.

    Raises:
        UserError: If the YAML, a split or its images are missing, or a given or prepared ground truth does not
            match the split (:class:`~drconv_yolo.io.DataError` and :class:`~drconv_yolo.io.DataNotFoundError`
            name the file).
    """
    from ..data.yolo import dataset_fingerprint, load_split, resolve_ground_truth

    path = Path(data).expanduser()
    if not path.is_file():
        raise CompareError(f"dataset YAML not found: {data}")
    path = path.resolve()
    if gt is not None and not Path(gt).expanduser().is_file():
        raise CompareError(f"ground-truth JSON not found: {gt} (given with --gt)")
    evaluated = load_split(path, split)
    truth = resolve_ground_truth(path, split, Path(gt).expanduser().resolve() if gt else None, cache_dir)
    return DataInfo(
        yaml=str(path),
        split=split,
        n_train=len(load_split(path, "train").images),
        n_val=len(evaluated.images),
        names=list(evaluated.names),
        fingerprint=dataset_fingerprint(path, ("train", split)),
        gt=truth,
    )


def parse_overrides(tokens: Sequence[str]) -> dict[str, Any]:
    """Parse Ultralytics ``key=value`` train arguments (values typed like the ``yolo`` CLI does).

    Args:
        tokens: ``["lr0=0.01", "mosaic=0", ...]``.

    Returns:
        ``{key: typed value}``.

    Raises:
        CompareError: For a token without ``=``, an unknown key, or a key compare sets itself.
    """
    from ultralytics.cfg import smart_value
    from ultralytics.utils import DEFAULT_CFG_DICT

    out: dict[str, Any] = {}
    for token in tokens:
        key, sep, value = token.partition("=")
        key = key.strip().lstrip("-").replace("-", "_")
        if not sep or not key:
            raise CompareError(f"argument {token!r}: expected an Ultralytics train argument as key=value")
        if key in RESERVED_KEYS:
            raise CompareError(f"argument {token!r}: '{key}' cannot be overridden ({RESERVED_KEYS[key]})")
        if key not in DEFAULT_CFG_DICT:
            raise CompareError(f"argument {token!r}: '{key}' is not an Ultralytics train argument")
        out[key] = smart_value(value)
    return out
