"""Region diagnostics: histogram statistics on known inputs, the counter on known masks, the per-epoch log."""

import json
import math

import pytest
import torch

from drconv_yolo import diagnostics
from drconv_yolo.diagnostics import RegionCounter, histogram_stats
from drconv_yolo.modules import DRConv


@pytest.mark.parametrize(
    "counts, used, entropy",
    [
        ([50, 50, 0, 0], 2, 1.0),
        ([100, 0, 0, 0], 1, 0.0),
        ([7] * 8, 8, 3.0),
        ([990, 10], 2, -(0.99 * math.log2(0.99) + 0.01 * math.log2(0.01))),  # 1% counts as used
        ([995, 5], 1, -(0.995 * math.log2(0.995) + 0.005 * math.log2(0.005))),  # below 1% does not
    ],
)
def test_histogram_stats_on_known_histograms(counts, used, entropy):
    s = histogram_stats(counts, per_image=[1, 2, 3])
    assert s["used"] == used and s["regions"] == len(counts)
    assert s["entropy"] == pytest.approx(entropy, abs=1e-12)
    assert s["collapsed"] == (used == 1)
    assert s["per_image"] == 2.0 and sum(s["share"]) == pytest.approx(1.0)


def test_counter_on_a_layer_forced_to_one_region_reports_collapse():
    layer = DRConv(4, 8, 3, 1, regions=4).eval()
    with torch.no_grad():
        layer.conv.guide.weight.zero_()
        layer.conv.guide.bias.copy_(torch.tensor([0.0, 0.0, 5.0, 0.0]))  # region 2 everywhere
    model = torch.nn.Sequential(layer)
    counter = RegionCounter(model)
    with torch.no_grad():
        model(torch.randn(3, 4, 6, 5))
    counter.remove()
    s = counter.stats()["0"]
    assert s["share"] == [0.0, 0.0, 1.0, 0.0] and s["collapsed"] and s["per_image"] == 1.0
    with torch.no_grad():
        model(torch.randn(3, 4, 6, 5))  # detached: counts no more
    assert counter.counts["0"].sum() == 3 * 6 * 5


def test_counter_sees_the_centred_mask_of_a_centred_layer():
    torch.manual_seed(0)
    layer = DRConv(4, 8, 3, 1, regions=4, centre_guide=True).eval()
    with torch.no_grad():
        layer.conv.guide.bias.copy_(torch.tensor([0.0, 0.0, 50.0, 0.0]))  # collapses the paper's mask, not this one
    x = torch.randn(3, 4, 6, 5)
    counter = RegionCounter(torch.nn.Sequential(layer))
    with torch.no_grad():
        layer(x)
        counter.remove()
        expected = torch.bincount(layer.regions_map(x).flatten(), minlength=4).float()
    assert torch.equal(counter.counts["0"], expected) and not counter.stats()["0"]["collapsed"]


def test_counter_counts_each_image_separately():
    layer = DRConv(2, 2, 1, 1, regions=2).eval()
    with torch.no_grad():
        layer.conv.guide.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(2, 2, 1, 1))
        layer.conv.guide.bias.zero_()
    x = torch.zeros(2, 2, 4, 4)
    x[0, 0] = 1.0  # image 0: region 0 everywhere
    x[1, 0, :2] = 1.0  # image 1: region 0 on the top half, region 1 below
    x[1, 1, 2:] = 1.0
    counter = RegionCounter(torch.nn.Sequential(layer))
    with torch.no_grad():
        layer(x)
    s = counter.stats()["0"]
    assert counter.counts["0"].tolist() == [24.0, 8.0]
    assert counter.per_image["0"] == [1.0, 2.0] and s["per_image"] == 1.5


@pytest.mark.slow
def test_training_logs_region_stats_every_epoch(tmp_path, capsys):
    pytest.importorskip("ultralytics")
    from ultralytics import YOLO

    import drconv_yolo
    from drconv_yolo.data.synthetic import generate

    drconv_yolo.register()
    data = generate(tmp_path / "data", n_train=8, n_val=4, imgsz=64, seed=0)
    model = YOLO("yolov8n-drconv-blocks-neck.yaml")
    model.train(data=str(data), epochs=2, imgsz=32, batch=4, workers=0, device="cpu", amp=False, plots=False,
                project=str(tmp_path), name="r", exist_ok=True, verbose=False)  # fmt: skip
    history = json.loads((tmp_path / "r" / diagnostics.STATS_FILE).read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    for h in history:
        assert len(h["layers"]) == 4  # one mask per block
        for s in h["layers"].values():
            assert s["regions"] == 8 and 1 <= s["used"] <= 8 and 0 <= s["entropy"] <= 3 + 1e-9


@pytest.mark.slow
def test_training_without_per_epoch_validation_saves_checkpoints_and_logs_the_last_epoch(tmp_path):
    # val=False: Ultralytics validates the final epoch only; no hook may stay on the model it pickles every epoch
    pytest.importorskip("ultralytics")
    from ultralytics import YOLO

    import drconv_yolo
    from drconv_yolo.data.synthetic import generate

    drconv_yolo.register()
    data = generate(tmp_path / "data", n_train=8, n_val=4, imgsz=64, seed=0)
    model = YOLO("yolov8n-drconv-blocks-neck.yaml")
    model.train(data=str(data), epochs=2, imgsz=32, batch=4, workers=0, device="cpu", amp=False, plots=False,
                val=False, project=str(tmp_path), name="r", exist_ok=True, verbose=False)  # fmt: skip
    assert (tmp_path / "r" / "weights" / "last.pt").is_file()
    history = json.loads((tmp_path / "r" / diagnostics.STATS_FILE).read_text())
    assert [h["epoch"] for h in history] == [2] and len(history[0]["layers"]) == 4


def test_stats_can_be_turned_off(monkeypatch):
    class Validator:
        pass

    class Trainer:
        ema = None
        model = torch.nn.Sequential(DRConv(2, 2, 1, 1, regions=2))
        validator = Validator()

    trainer = Trainer()
    monkeypatch.setenv(diagnostics.ENV, "0")
    diagnostics.CALLBACKS["on_train_epoch_end"](trainer)
    diagnostics.CALLBACKS["on_val_start"](trainer.validator)
    assert getattr(trainer.validator, diagnostics._ATTR, None) is None
    monkeypatch.setenv(diagnostics.ENV, "1")
    diagnostics.CALLBACKS["on_train_epoch_end"](trainer)
    assert getattr(trainer.validator, diagnostics._ATTR, None) is None  # attached only when a validation starts
    diagnostics.CALLBACKS["on_val_start"](trainer.validator)
    assert isinstance(getattr(trainer.validator, diagnostics._ATTR), RegionCounter)
