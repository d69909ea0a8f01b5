"""Checkpoints saved by earlier releases keep loading: the pickled class paths stay importable and give the same
outputs, unfused and fused. The fixture was written by ``tests/fixtures/make_v01_checkpoint.py`` with v0.1."""

from pathlib import Path

import pytest
import torch

pytest.importorskip("ultralytics")

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="module")
def v01():
    import drconv_yolo

    drconv_yolo.register()
    expected = torch.load(FIXTURES / "v0.1_checkpoint_outputs.pt", map_location="cpu", weights_only=False)
    model = torch.load(FIXTURES / "v0.1_checkpoint.pt", map_location="cpu", weights_only=False)["model"]
    return model.float().eval(), expected


def test_v01_checkpoint_loads_with_same_outputs_unfused(v01):
    model, expected = v01
    with torch.no_grad():
        out = model(expected["input"])[0]
    torch.testing.assert_close(out, expected["unfused"], rtol=1e-5, atol=1e-5)


def test_v01_checkpoint_loads_with_same_outputs_fused(v01):
    import copy

    model, expected = v01
    with torch.no_grad():
        out = copy.deepcopy(model).fuse()(expected["input"])[0]
    torch.testing.assert_close(out, expected["fused"], rtol=1e-5, atol=1e-5)
