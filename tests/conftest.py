"""Test-wide settings: offline Ultralytics with a throw-away config folder, deterministic torch."""

import os
import tempfile

# Set before anything imports ultralytics: no downloads, no pip installs, no writes to the user's settings.
os.environ["YOLO_AUTOINSTALL"] = "false"
os.environ["YOLO_OFFLINE"] = "1"
os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="drconv-yolo-cfg-"))
os.environ.setdefault("YOLO_VERBOSE", "false")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.fixture(autouse=True)
def _seed():
    import torch

    torch.manual_seed(0)
    yield


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not _cuda(), reason="needs CUDA"))])
def device(request):
    """Every device the op runs on: always "cpu", plus "cuda" where available (skipped otherwise)."""
    return request.param


@pytest.fixture
def triton_kernels(monkeypatch):
    """The grouped path's products through its Triton kernels whatever the dtype (on CPU tensors in Triton's
    interpreter), counting the launches by kernel name; skipped without Triton 3."""
    from drconv_yolo.ops import segment_mm

    if not segment_mm.triton_available():
        pytest.skip("needs Triton 3")
    monkeypatch.setattr(segment_mm, "TRITON_ON_CPU", True)
    monkeypatch.setattr(segment_mm, "grouped_mm_supported", lambda device, dtype: False)
    monkeypatch.setattr(segment_mm, "_triton_failed", [])
    launches = []
    for name in ("_triton_mm", "_triton_mm_tn"):
        real = getattr(segment_mm, name)
        monkeypatch.setattr(segment_mm, name, lambda *args, n=name, f=real: launches.append(n) or f(*args))
    return launches
