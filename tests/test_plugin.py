"""register(): YAML parsing, bundled configs, fuse, FLOPs, safe loading, pretrained start, start-up hook."""

import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

pytest.importorskip("ultralytics")

import ultralytics.nn.tasks as tasks  # noqa: E402
from _model_helpers import randomize_bn, tensors  # noqa: E402
from ultralytics.nn.modules import Conv  # noqa: E402

from drconv_yolo import plugin  # noqa: E402
from drconv_yolo.modules import DRConv, DRConv2d  # noqa: E402
from drconv_yolo.ops import IMPLEMENTATIONS  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "cfg" / "models"
TWINS = {"yolov8": "yolov8.yaml", "yolo11": "yolo11.yaml", "yolo26": "yolo26.yaml"}


@pytest.fixture(autouse=True)
def registered():
    plugin.register()
    yield


def build(cfg, verbose=False):
    return tasks.DetectionModel(cfg, verbose=verbose)


def layer_signature(layer):
    """What a DRConv must share with the Conv it replaces: (c1, c2, k, s, p, d) per conv, or type and #params."""
    if isinstance(layer, nn.Sequential) and all(isinstance(m, (Conv, DRConv)) for m in layer):
        return [layer_signature(m) for m in layer]
    if isinstance(layer, DRConv):
        c = layer.conv
        return ("conv", c.c1, c.c2, c.k, c.s, c.p, c.d, type(layer.act))
    if isinstance(layer, Conv):
        c = layer.conv
        return ("conv", c.in_channels, c.out_channels, c.kernel_size[0], c.stride[0], c.padding[0], c.dilation[0],
                type(layer.act))  # fmt: skip
    return (type(layer).__name__, sum(p.numel() for p in layer.parameters()))


def yaml_dict(name):
    return tasks.yaml_model_load(name)


@pytest.mark.parametrize("family", sorted(TWINS))
@pytest.mark.parametrize("variant", ["", "-backbone", "-neck"])
def test_bundled_config_matches_conv_twin_at_every_scale(family, variant):
    if family == "yolo26" and not tasks.check_yaml("yolo26.yaml", hard=False):
        pytest.skip("this Ultralytics has no YOLO26")
    for scale in "nsmlx":
        ours = yaml_dict(f"{family}{scale}-drconv{variant}.yaml")
        twin = yaml_dict(f"{family}{scale}.yaml")
        assert ours["scale"] == twin["scale"] == scale
        # parse_model alone: the channel bookkeeping, without the cost of a stride probe on the large scales
        model, save = tasks.parse_model(copy.deepcopy(ours), ch=3, verbose=False)
        ref, ref_save = tasks.parse_model(copy.deepcopy(twin), ch=3, verbose=False)
        assert save == ref_save
        assert [layer_signature(m) for m in model] == [layer_signature(m) for m in ref]
        n_drconv = sum(isinstance(m, DRConv) for m in model)
        assert n_drconv == {"": 6, "-backbone": 4, "-neck": 2}[variant]
        assert all(m.i == r.i and m.f == r.f for m, r in zip(model, ref))


def test_yaml_without_drconv_passes_through_untouched():
    d = yaml_dict("yolov8n.yaml")
    plugin.unregister()
    try:
        ref, _ = tasks.parse_model(copy.deepcopy(d), ch=3, verbose=False)
    finally:
        plugin.register()
    torch.manual_seed(0)
    ours, _ = tasks.parse_model(copy.deepcopy(d), ch=3, verbose=False)
    assert [type(m) for m in ours.modules()] == [type(m) for m in ref.modules()]
    assert [layer_signature(m) for m in ours] == [layer_signature(m) for m in ref]


def custom_yaml(rows, scale_width=0.5, depth=0.5):
    return {
        "nc": 3,
        "depth_multiple": depth,
        "width_multiple": scale_width,
        "backbone": [[-1, 1, "Conv", [32, 3, 2]], *rows],
        "head": [[[-1], 1, "Detect", ["nc"]]],
    }


def test_row_with_repeats_builds_sequential_of_drconv_with_depth_scaling():
    d = custom_yaml([[-1, 4, "DRConv", [64, 3, 1, 4, {"generator": "paper"}]], [-1, 1, "DRConv", [64, 3, 2]]])
    model, _ = tasks.parse_model(d, ch=3, verbose=False)
    seq = model[1]
    assert isinstance(seq, nn.Sequential) and len(seq) == 2  # n=4 x depth 0.5
    assert all(isinstance(m, DRConv) and m.conv.regions == 4 for m in seq)
    assert type(seq[0].conv.generator).__name__ == "PaperFilterGenerator"
    assert (seq[0].conv.c1, seq[0].conv.c2) == (16, 32)  # width 0.5, rounded by make_divisible
    assert model[2].conv.regions == 8  # default


@pytest.mark.parametrize(
    "args, message",
    [
        ([64, 2, 2], "argument 'k' must be an odd int >= 1, got 2"),
        ([64, 3, 0], "argument 's' must be an int >= 1, got 0"),
        ([64, 3, 2, 0], "argument 'regions' must be an int >= 1, got 0"),
        ([-5, 3, 2], "argument 'c2' must be a positive int, got -5"),
        ([64, 3, 2, 8, {"groups": 2}], "argument 'kwargs' must be a dict with keys from"),
        ([64, 3, 2, 8, {}, 1], "expected at most 5 args"),
        ([], "args must be a non-empty list"),
    ],
)
def test_wrong_yaml_args_raise_error_naming_layer_and_argument(args, message):
    d = custom_yaml([[-1, 1, "Conv", [64, 3, 1]], [-1, 1, "DRConv", args]])
    with pytest.raises(plugin.DRConvYAMLError, match=r"model YAML layer 2 \(DRConv\): " + message.replace("(", r"\(")):
        tasks.parse_model(d, ch=3, verbose=False)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"bases": 0}, "option 'bases' must be an int >= 1, got 0"),
        ({"bases": "8"}, "option 'bases' must be an int >= 1, got '8'"),
        ({"generator": "paper", "hidden": 12}, "option 'hidden' must be a positive multiple of regions=8, got 12"),
        ({"generator": "paper", "hidden": 0}, "option 'hidden' must be a positive multiple of regions=8, got 0"),
        ({"generator": "snippet"}, "option 'generator' must be one of ['official', 'paper'], got 'snippet'"),
        ({"impl": "cuda"}, f"option 'impl' must be one of {list(IMPLEMENTATIONS)}, got 'cuda'"),
        ({"hidden": 16}, "option 'hidden' belongs to generator 'paper', not to generator 'official'"),
        ({"generator": "paper", "bases": 4}, "option 'bases' belongs to generator 'official', not to generator "),
    ],
)
def test_wrong_yaml_options_raise_error_naming_layer_and_option(options, message):
    d = custom_yaml([[-1, 1, "Conv", [64, 3, 1]], [-1, 1, "DRConv", [64, 3, 2, 8, options]]])
    with pytest.raises(plugin.DRConvYAMLError, match=r"model YAML layer 2 \(DRConv\): " + re.escape(message)):
        tasks.parse_model(d, ch=3, verbose=False)


def test_layer_table_shows_drconv_rows_with_their_parameter_count(monkeypatch):
    lines = []

    class Collect:
        def info(self, msg="", *a, **k):
            lines.append(str(msg))

        def __getattr__(self, name):
            return lambda *a, **k: None

    monkeypatch.setattr(tasks, "LOGGER", Collect())
    model, _ = tasks.parse_model(yaml_dict("yolov8n-drconv-backbone.yaml"), ch=3, verbose=True)
    rows = {int(line[:3]): line for line in lines if line[:3].strip().isdigit()}
    for i, layer in enumerate(model):
        if isinstance(layer, DRConv):
            assert "drconv_yolo.modules.DRConv" in rows[i]
            assert f"{layer.np:10.0f}" in rows[i] and layer.np == sum(p.numel() for p in layer.parameters())
            assert "regions=8" in rows[i]
        else:
            assert "DRConv" not in rows[i]


def test_register_is_idempotent_and_unregister_restores():
    original = plugin._ORIGINALS[(tasks, "parse_model")]
    plugin.register()
    plugin.register()
    assert tasks.parse_model.__wrapped__ is original
    plugin.unregister()
    try:
        assert tasks.parse_model is original and not plugin.is_registered()
        with pytest.raises(KeyError, match="DRConv"):
            tasks.parse_model(custom_yaml([[-1, 1, "DRConv", [64, 3, 2]]]), ch=3, verbose=False)
    finally:
        plugin.register()
    assert plugin.is_registered()


@pytest.mark.parametrize(
    "fmt, dynamic, static",
    [("onnx", False, True), ("ONNX", False, True), ("onnx", True, False), ("openvino", False, True),
     ("engine", False, True), ("trt", False, True), ("torchscript", False, False), ("tflite", False, False)],
)  # fmt: skip
def test_export_traces_drconv_for_a_static_batch_only_where_the_file_fixes_it(fmt, dynamic, static):
    from types import SimpleNamespace

    from ultralytics.engine.exporter import Exporter

    from drconv_yolo.ops import export as ex

    assert getattr(Exporter.__call__, plugin._MARK, False)  # register() wrapped Ultralytics' exporter
    seen = []
    call = plugin._wrap_export(lambda self, model=None: seen.append(ex.static_batch()) or "file")
    assert call(SimpleNamespace(args=SimpleNamespace(format=fmt, dynamic=dynamic))) == "file"
    assert seen == [static] and not ex._static


def test_bundled_yaml_resolves_by_bare_name_with_scale():
    d = tasks.yaml_model_load("yolo11s-drconv-neck.yaml")
    assert d["scale"] == "s"
    assert Path(d["yaml_file"]).parent == plugin.bundled_cfg_dir() / "models"
    assert sum(row[2] == "DRConv" for row in d["backbone"] + d["head"]) == 2


def test_fuse_folds_drconv_batchnorm_and_keeps_outputs():
    model = build("yolov8n-drconv.yaml").eval()
    randomize_bn(model)
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        y = model(x)[0]
        model.fuse(verbose=False)
        assert not any(hasattr(m, "bn") for m in model.modules() if isinstance(m, (DRConv, Conv)))
        torch.testing.assert_close(model(x)[0], y, rtol=1e-3, atol=1e-3)


def test_fused_drconv_has_no_trainable_parameters():
    base, ours = build("yolov8n.yaml").fuse(verbose=False), build("yolov8n-drconv.yaml").fuse(verbose=False)
    drconvs = [m for m in ours.modules() if isinstance(m, DRConv)]
    assert drconvs and not any(p.requires_grad for m in drconvs for p in m.parameters())

    def trainable(model):
        return sum(p.numel() for p in model.parameters() if p.requires_grad)

    assert trainable(ours) == trainable(base)  # what Ultralytics leaves trainable in a fused model (Detect's heads)


def test_gflops_of_fused_model_whose_first_layer_is_drconv():
    thop = pytest.importorskip("thop")
    from ultralytics.utils.torch_utils import get_flops

    d = custom_yaml([[-1, 1, "Conv", [32, 3, 2]]])
    d["backbone"][0] = [-1, 1, "DRConv", [16, 3, 2]]  # the very first layer reads the RGB image
    model = build(d).eval()
    model.fuse(verbose=False)
    assert isinstance(model.model[0], DRConv) and not hasattr(model.model[0], "bn")
    size = max(int(model.stride.max()), 32)  # Ultralytics' own probe size: no extrapolation in any version
    expected = 2 * thop.profile(copy.deepcopy(model), inputs=[torch.empty(1, 3, size, size)], verbose=False)[0] / 1e9
    assert expected > 0
    assert get_flops(model, size) == pytest.approx(expected, rel=1e-9)


def test_flop_counter_counts_selected_filter_mixing_guide_and_generator_exactly():
    thop = pytest.importorskip("thop")
    layer = DRConv2d(16, 32, 3, 2, regions=8, bias=False)  # official generator: 8 bases mixed inside the op
    x = torch.randn(1, 16, 20, 14)
    Ho, Wo = 10, 7
    total = thop.profile(copy.deepcopy(layer), inputs=(x,), verbose=False)[0]
    guide = thop.profile(copy.deepcopy(layer.guide), inputs=(x,), verbose=False)[0]
    pool = thop.profile(copy.deepcopy(layer.generator.pool), inputs=(x,), verbose=False)[0]
    fc = thop.profile(copy.deepcopy(layer.generator.fc), inputs=(torch.randn(1, 16),), verbose=False)[0]
    selected = Ho * Wo * 32 * 16 * 9  # one 16x3x3 filter per output element
    mixing = 1 * 8 * 8 * (32 * 16 * 9)  # B * m regions * n bases * filter size
    assert guide > 0 and fc > 0
    assert total == selected + mixing + guide + pool + fc


def test_model_info_gflops_include_drconv():
    thop = pytest.importorskip("thop")
    from ultralytics.utils.torch_utils import get_flops

    base, ours = build("yolov8n.yaml"), build("yolov8n-drconv.yaml")
    assert get_flops(ours, 64) > get_flops(base, 64) > 0  # what model.info() prints
    image = torch.empty(1, 3, 64, 64)
    counted = thop.profile(copy.deepcopy(ours), inputs=[image], verbose=False)[0]
    plugin.unregister()
    try:
        uncounted = thop.profile(copy.deepcopy(ours), inputs=[image], verbose=False)[0]  # no rule: the op counts 0
    finally:
        plugin.register()
    # our rule adds exactly the six DRConvs' selected-filter MACs and their per-image filter mixing
    selected = mixing = 0
    size = {1: 16, 3: 8, 5: 4, 7: 2, 16: 4, 19: 2}  # output side of each DRConv at 64 px input
    for i, side in size.items():
        c = ours.model[i].conv
        selected += side * side * c.c2 * c.c1 * c.k * c.k
        mixing += c.regions * c.generator.n * c.c2 * c.c1 * c.k * c.k
    assert counted - uncounted == selected + mixing


@pytest.mark.skipif(not hasattr(tasks, "_SafeLoad"), reason="ULTRALYTICS_SAFE_LOAD arrived in Ultralytics 8.4")
def test_restricted_ultralytics_load_accepts_drconv_checkpoint(tmp_path):
    # the loader ULTRALYTICS_SAFE_LOAD=1 uses: weights_only=True with Ultralytics' allow-list plus ours
    path = tmp_path / "drconv.pt"
    torch.save({"model": build("yolov8n-drconv.yaml").half()}, path)
    ckpt, _ = tasks.torch_safe_load(str(path), safe_only=True)
    assert sum(isinstance(m, DRConv) for m in ckpt["model"].modules()) == 6
    plugin.unregister()
    try:
        # without our classes on the allow-list the same load is refused
        with pytest.raises(Exception, match="DRConv"):
            torch.load(path, weights_only=True)
    finally:
        plugin.register()


def test_drconv_twin_of_trained_baseline_starts_with_identical_outputs():
    torch.manual_seed(0)
    base = build("yolov8n.yaml").train()
    optimizer = torch.optim.SGD(base.parameters(), lr=0.01)
    for _ in range(3):  # a tiny training run: weights and BatchNorm statistics move away from their init
        loss = sum(t.float().square().mean() for t in tensors(base(torch.rand(2, 3, 64, 64))))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    base.eval()
    twin = build("yolov8n-drconv.yaml")
    twin.load(base, verbose=False)
    twin.eval()
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(twin(x)[0], base(x)[0], rtol=1e-4, atol=1e-4)
    assert plugin.start_drconv_from_pretrained(twin, base, verbose=False) == [
        f"model.{i}" for i in (1, 3, 5, 7, 16, 19)
    ]


def run_python(code, **env):
    full = {**os.environ, **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full, timeout=300)


def installed() -> bool:
    import site

    dirs = [*site.getsitepackages(), site.getusersitepackages()]
    return any((Path(d) / "drconv_yolo_startup.pth").exists() for d in dirs)


@pytest.mark.skipif(not installed(), reason="the package (and its start-up hook) is not installed")
def test_startup_hook_registers_on_ultralytics_import_in_a_fresh_process():
    code = "import ultralytics.nn.tasks as t; print(getattr(t.parse_model, '_drconv_yolo_patched', False))"
    assert run_python(code).stdout.strip() == "True"
    assert run_python(code, DRCONV_YOLO_AUTOLOAD="0").stdout.strip() == "False"


@pytest.mark.skipif(not installed(), reason="the package (and its start-up hook) is not installed")
def test_startup_hook_imports_neither_torch_nor_ultralytics():
    code = "import sys; print('torch' in sys.modules, 'ultralytics' in sys.modules, 'drconv_yolo' in sys.modules)"
    assert run_python(code).stdout.split() == ["False", "False", "True"]


def test_startup_pth_line_is_silent_when_the_package_is_gone(tmp_path):
    # A stale .pth (an editable install whose source folder moved) must not print a traceback at every start-up.
    line = (Path(__file__).parents[1] / "drconv_yolo_startup.pth").read_text().strip()
    assert line.startswith("import ")  # site.py executes only lines that start with "import"
    code = line + "; print('alive')"
    gone = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert (gone.returncode, gone.stdout.strip(), gone.stderr) == (0, "alive", "")
    here = run_python(line + "; print('drconv_yolo._startup' in sys.modules)")
    assert here.stdout.strip() == "True"


def test_startup_hook_never_raises_when_registration_fails():
    from drconv_yolo import _startup

    code = (
        "import sys, drconv_yolo.plugin as p\n"
        "def boom(): raise RuntimeError('simulated')\n"
        "p.register = boom\n"
        "from drconv_yolo import _startup\n"
        "_startup._register()\n"
        "print('alive')\n"
    )
    result = run_python(code)
    assert result.stdout.strip() == "alive"
    assert "registration with Ultralytics failed: RuntimeError('simulated')" in result.stderr
    assert _startup.enabled()
