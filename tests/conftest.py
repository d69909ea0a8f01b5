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


@pytest.fixture(
    params=["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not _cuda(), reason="needs CUDA"))]
)
def device(request):
    """Every device the op runs on: always "cpu", plus "cuda" where available (skipped otherwise)."""
    return request.param
