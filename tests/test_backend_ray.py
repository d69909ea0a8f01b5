"""``compare --backend ray`` on a real Ray cluster made on this machine (``ray.cluster_utils.Cluster``).

The cluster is a head and one or two more nodes, every Ray server on 127.0.0.1 (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``
before Ray is imported). GPUs are declared as logical resources and the nodes run with ``DRCONV_YOLO_LOGICAL_GPUS=1``:
each run is *given* GPU ids exactly as on a GPU cluster (and records them) while it trains on the CPU. Each
comparison runs in a subprocess, as a user's would, against the cluster's address.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from _procs import needs_proc, running, wait_until

from drconv_yolo.experiment.settings import CompareError, CompareSettings

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # loopback only: read by Ray as it is imported
try:
    import ray  # noqa: F401
    from ray.cluster_utils import Cluster
except ImportError:  # the tests of the cluster skip; the option tests below still run
    Cluster = None

needs_ray = pytest.mark.skipif(
    Cluster is None or sys.version_info < (3, 10),
    reason='needs Ray (pip install "drconv-yolo[ray]", Python >= 3.10); CI installs it',
)
RUN_S = 600  # one tiny comparison on a busy 2-core machine, Ray's start-up included
WAIT_S = 240  # for a run to start training
ARMS = ("yolov8n.yaml", "yolov8n-drconv.yaml")
ARM_NAMES = ("yolov8n", "yolov8n-drconv")  # sorted
GONE_S = 30  # for a run's processes to be gone once its driver or node is


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from drconv_yolo.data.synthetic import generate

    return generate(tmp_path_factory.mktemp("data") / "syn", n_train=8, n_val=4, imgsz=64, seed=0, verbose=False)


@pytest.fixture(scope="module")
def cluster():
    """A head with 2 CPUs and 2 logical GPUs; nodes are added by the tests that need them."""
    if Cluster is None:
        pytest.skip("needs Ray")
    os.environ["DRCONV_YOLO_LOGICAL_GPUS"] = "1"  # inherited by every node's raylet and workers
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "num_gpus": 2, "include_dashboard": False})
    try:
        yield c
    finally:
        c.shutdown()
        os.environ.pop("DRCONV_YOLO_LOGICAL_GPUS", None)


@pytest.fixture()
def second_node(cluster):
    """One more node: 1 CPU, 1 logical GPU; removed after the test if the test has not removed it."""
    node = cluster.add_node(num_cpus=1, num_gpus=1)
    cluster.wait_for_nodes()
    yield node
    if node in cluster.list_all_nodes():
        cluster.remove_node(node)


def _argv(data: Path, out: Path, address: str, epochs: int, models=ARMS, seeds=("0",)) -> list[str]:
    return [
        *(sys.executable, "-m", "drconv_yolo.cli", "compare", "--data", str(data), "--models", *models),
        *("--seeds", *seeds, "--epochs", str(epochs), "--imgsz", "32", "--batch", "4", "--workers", "0"),
        *("--latency-runs", "1", "--latency-warmup", "0", "--deploy-runtime", "none", "--out", str(out)),
        *("--backend", "ray", "--ray-address", address, "--cpus-per-run", "1", "--gpus-per-run", "1"),
    ]


def _compare(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=RUN_S)


def _overlap(x: dict, y: dict, strict: bool = False) -> bool:
    """Whether two placements' [started, finished] intervals (ISO times to the second) overlap."""
    if strict:
        return x["started"] < y["finished"] and y["started"] < x["finished"]
    return x["started"] <= y["finished"] and y["started"] <= x["finished"]


def _records(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*/seed*/run.json"))]


@pytest.fixture(scope="module")
def spread(tiny, cluster, tmp_path_factory):
    """Four runs (2 arms x 2 seeds) on the head (2 GPUs) and a second node (1 GPU): three at once."""
    node = cluster.add_node(num_cpus=1, num_gpus=1)
    cluster.wait_for_nodes()
    out = tmp_path_factory.mktemp("spread") / "out"
    argv = _argv(tiny, out, cluster.address, 2, seeds=("0", "1"))
    try:
        done = _compare(argv)
    finally:
        cluster.remove_node(node)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return {"out": out, "argv": argv, "done": done, "nodes": {cluster.head_node.node_id, node.node_id}}


@needs_ray
def test_runs_run_at_once_on_both_nodes(spread):
    placements = [r["placement"] for r in _records(spread["out"])]
    assert len(placements) == 4
    assert {p["node"] for p in placements} == spread["nodes"]
    # some run on each node ran while one on the other node did (times to the second)
    on = {n: [p for p in placements if p["node"] == n] for n in spread["nodes"]}
    a, b = on.values()
    assert any(_overlap(x, y) for x in a for y in b), placements


@needs_ray
def test_each_run_sees_only_the_gpus_its_task_was_given(spread):
    placements = [r["placement"] for r in _records(spread["out"])]
    for p in placements:
        assert len(p["gpus"]) == 1, p  # --gpus-per-run 1
        assert p["cuda_visible_devices"] == ",".join(p["gpus"]), p  # the worker saw exactly its ids
        assert p["device"] == "cpu", p  # logical GPUs: trains on the CPU
    for x in placements:  # two runs at once on one node never share a GPU
        for y in placements:
            together = x is not y and x["node"] == y["node"] and _overlap(x, y, strict=True)
            assert not (together and x["gpus"] == y["gpus"]), (x, y)


@needs_ray
def test_report_says_where_every_run_ran(spread):
    report = (spread["out"] / "report.md").read_text()
    assert "## Where the runs ran" in report and "No run was retried." in report
    assert sum(line.startswith("| yolov8n") and "| ray |" in line for line in report.splitlines()) == 4
    assert "each run gets 1 CPU(s) and 1 GPU(s)" in spread["done"].stdout  # the backend's pre-flight line


@needs_ray
def test_rerun_reuses_every_finished_run(spread):
    again = _compare(spread["argv"])  # the second node is gone: nothing needs it
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "compare: 0 run(s) trained now, 4 reused" in again.stdout
    assert [r["finished"] for r in _records(spread["out"])] == [
        json.loads(p.read_text())["finished"] for p in sorted((spread["out"] / "runs").glob("*/seed*/run.json"))
    ]


@needs_ray
@needs_proc
@pytest.mark.slow
def test_a_run_on_a_removed_node_runs_again_and_is_reported_once(tiny, cluster, second_node, tmp_path):
    out = tmp_path / "out"
    argv = _argv(tiny, out, cluster.address, 20, seeds=("0", "1"))  # 4 runs: the head fits 2, the node 1
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:

        def on_node() -> Path | None:
            for p in (out / "runs").glob("*/seed*/placement.json"):
                if json.loads(p.read_text()).get("node") == second_node.node_id and (p.parent / "args.yaml").is_file():
                    return p.parent
            return None

        assert wait_until(lambda: on_node() is not None or proc.poll() is not None, WAIT_S), "no run on the node"
        run_dir = on_node()
        assert run_dir is not None and proc.poll() is None, proc.communicate()[1][-3000:]
        cluster.remove_node(second_node)  # the machine gone: its raylet and workers killed
        stdout, stderr = proc.communicate(timeout=RUN_S)
    finally:
        proc.kill()
    assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
    records = _records(out)
    assert sorted((r["spec"]["arm"], r["spec"]["seed"]) for r in records) == [(a, s) for a in ARM_NAMES for s in (0, 1)]
    retried = json.loads((run_dir / "run.json").read_text())
    assert retried["placement"]["attempt"] == 2 and retried["placement"]["node"] == cluster.head_node.node_id
    assert "node or worker was lost" in stdout
    arm, seed = retried["spec"]["arm"], retried["spec"]["seed"]
    assert (
        f"Run again after their node or worker was lost: {arm} seed {seed} (attempt 2)."
        in (out / "report.md").read_text()
    )


@needs_ray
@needs_proc
@pytest.mark.slow
def test_killing_the_driver_leaves_no_training_process(tiny, cluster, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen(_argv(tiny, out, cluster.address, 1000), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    marker = str(out / "runs")
    try:
        training = out / "runs" / "yolov8n" / "seed0" / "args.yaml"
        assert wait_until(lambda: training.is_file() or proc.poll() is not None, WAIT_S), "no run started"
        assert proc.poll() is None and running(marker, "_worker"), proc.stderr.read()[-3000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert wait_until(lambda: not running(marker, "_worker"), GONE_S), running(marker, "_worker")
    finally:
        proc.kill()
        proc.wait()
        for pid in running(marker, "_worker"):
            os.kill(pid, signal.SIGKILL)


def ray_nodes(cluster) -> list[dict]:
    """The cluster's live nodes, as its GCS reports them (from a short-lived driver: the tests' process stays off)."""
    code = "import json, ray; ray.init(address=%r, logging_level='ERROR'); print(json.dumps(ray.nodes()))"
    done = subprocess.run([sys.executable, "-c", code % cluster.address], capture_output=True, text=True, timeout=120)
    return [n for n in json.loads(done.stdout.strip().splitlines()[-1]) if n["Alive"]]


HIDDEN_NODE = """
import signal, sys, time
from ray._private.node import Node
from ray._private.parameter import RayParams

params = RayParams(gcs_address=sys.argv[1], num_cpus=1, num_gpus=1, object_store_memory=150 * 2**20,
                   min_worker_port=0, max_worker_port=0, include_log_monitor=False, node_manager_port=0)
params.dashboard_agent_listen_port = None
Node(params, head=False, shutdown_at_exit=True, spawn_reaper=True)  # as Cluster.add_node starts one
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # exit: the node's processes are stopped
while True:
    time.sleep(1)
"""


def _hidden_node(cluster, folder: Path) -> subprocess.Popen:
    """A Ray node whose view of ``folder`` is an empty file system of its own (a node without the shared disk)."""
    script = 'mount -t tmpfs none "$1" && exec "$2" -c "$3" "$4"'
    argv = ["unshare", "-m", "sh", "-c", script, "sh", str(folder), sys.executable, HIDDEN_NODE, cluster.address]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@needs_ray
@pytest.mark.skipif(os.name != "posix" or os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root")
def test_an_output_folder_a_node_cannot_see_is_refused_before_training(tiny, cluster, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    before = {n["NodeID"] for n in ray_nodes(cluster)}
    node = _hidden_node(cluster, shared)
    try:

        def joined() -> list[dict]:
            return [n for n in ray_nodes(cluster) if n["NodeID"] not in before]

        assert wait_until(lambda: joined() or node.poll() is not None, 60), "the node did not join"
        assert node.poll() is None, node.stderr.read().decode()[-2000:]
        (new,) = joined()
        done = _compare(_argv(tiny, shared / "out", cluster.address, 1))
    finally:
        node.send_signal(signal.SIGTERM)
        node.wait(timeout=60)
    assert done.returncode == 2, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"node {new['NodeID'][:12]}" in done.stderr and str(shared / "out") in done.stderr
    assert "every node must see --out at the same path" in done.stderr
    assert not (shared / "out" / "runs").exists()  # nothing trained


# options: checked before Ray is touched (these run without Ray too)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"backend": "slurmm"}, "--backend must be one of"),
        ({"backend": "ray", "device": "0"}, "--device 0: with --backend ray each run trains on the GPUs its task"),
        ({"backend": "ray", "in_process": True}, "--in-process: with --backend ray every run is a task of its own"),
        ({"backend": "ray", "cpus_per_run": 0}, "--cpus-per-run must be > 0, got 0"),
        ({"backend": "ray", "gpus_per_run": -1}, "--gpus-per-run must be >= 0, got -1"),
        ({"backend": "ray", "retries": -1}, "--retries must be >= 0, got -1"),
    ],
    ids=["unknown-backend", "device", "in-process", "cpus", "gpus", "retries"],
)
def test_backend_options_are_refused_when_wrong(fields, message, tmp_path):
    settings = CompareSettings(
        data=str(tmp_path / "d.yaml"), models=["yolov8n.yaml", "yolov8n-drconv.yaml"], out=str(tmp_path), **fields
    )
    with pytest.raises(CompareError, match=message.replace("(", r"\(")):
        settings.validate()


def test_ray_backend_on_an_old_python_says_ray_needs_3_10(monkeypatch):
    from drconv_yolo.experiment.backends import ray as ray_backend

    monkeypatch.setattr(sys, "version_info", (3, 9, 18, "final", 0))
    with pytest.raises(CompareError, match=r"--backend ray needs Python >= 3\.10 \(Ray does not support Python 3\.9\)"):
        ray_backend.import_ray()


def test_ray_backend_without_ray_says_what_to_install(monkeypatch):
    from drconv_yolo.experiment.backends import ray as ray_backend

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(CompareError, match=r'pip install "drconv-yolo\[ray\]"'):
        ray_backend.import_ray()


def test_local_backend_is_the_default_and_needs_no_ray(monkeypatch, tmp_path):
    from drconv_yolo.experiment.backends import make_backend

    monkeypatch.setitem(sys.modules, "ray", None)
    settings = CompareSettings(
        data=str(tmp_path / "d.yaml"), models=["yolov8n.yaml", "yolov8n-drconv.yaml"], out=str(tmp_path)
    )
    backend = make_backend(settings)
    assert backend.name == "local" and backend.device("cpu") == "cpu" and backend.check(None) is None


def test_clusters_page_quotes_the_committed_backend_speedup():
    root = Path(__file__).resolve().parents[1]
    bench = json.loads((root / "bench_results" / "backend_speedup.json").read_text(encoding="utf-8"))
    page = (root / "docs" / "clusters.md").read_text(encoding="utf-8")
    assert bench["identical_metrics"] and not bench["differences"]
    quoted = [f"**{bench['ratio_median']:.3f}x**"] + [f"{r:.3f}x" for r in bench["ratio_ray_over_local"]]
    quoted += [", ".join(f"{w:.1f} s" for w in bench["wall_s"][b]) for b in ("local", "ray")]
    missing = [q for q in quoted if q not in page]
    assert not missing, f"docs/clusters.md does not quote these figures of its benchmark JSON: {missing}"
