"""The export formulations (mix, gather, responses): each exact to the reference in float64 for the output and the
input and filter gradients, with empty regions; the rule that picks one; standard ONNX ops that onnxruntime runs at
any batch size; OpenVINO and the dynamo exporter where installed."""

import io

import numpy as np
import pytest
import torch
from test_ops import IDS, SHAPES, make_inputs

from drconv_yolo.modules import DRConv
from drconv_yolo.ops import export as ex
from drconv_yolo.ops.filters import ExplicitFilters, MixedFilters
from drconv_yolo.ops.reference import reference_conv

FORMULATIONS = ["mix", "gather", "responses"]


def mixed(shape, n, seed=1):
    """(x, coef, bases, guide, dL/dY, conf) in float64."""
    x, w, guide, go, conf = make_inputs(shape)
    B, m, C_out, C_in, k, _ = w.shape
    g = torch.Generator().manual_seed(seed)
    coef = torch.rand(B, m, n, generator=g, dtype=torch.float64)
    bases = torch.randn(n, C_out, C_in, k, k, generator=g, dtype=torch.float64) / (C_in * k * k) ** 0.5
    return x, coef, bases, guide, go, conf


def pairs(conf):
    return tuple((v, v) for v in conf)


def grads(fn, leaves, go):
    leaves = [t.detach().clone().requires_grad_(True) for t in leaves]
    y = fn(*leaves)
    return (y, *torch.autograd.grad(y, leaves, go))


@pytest.mark.parametrize("formulation", FORMULATIONS)
@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_formulation_of_mixed_filters_matches_reference_output_and_grads(formulation, shape):
    x, coef, bases, guide, go, conf = mixed(shape, n=3)
    bias = torch.randn(bases.shape[1], dtype=torch.float64)

    def export(x, coef, bases, bias):
        return ex.export_conv(x, MixedFilters(coef, bases), guide, *pairs(conf), bias, formulation=formulation)

    def reference(x, coef, bases, bias):
        weight = torch.einsum("bjn,nocuv->bjocuv", coef, bases)
        return reference_conv(x, weight, guide, *pairs(conf)) + bias.view(1, -1, 1, 1)

    for a, b in zip(grads(export, (x, coef, bases, bias), go), grads(reference, (x, coef, bases, bias), go)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("formulation", ["gather", "responses"])
@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_formulation_of_explicit_filters_matches_reference_output_and_grads(formulation, shape):
    x, w, guide, go, conf = make_inputs(shape)

    def export(x, w):
        return ex.export_conv(x, ExplicitFilters(w), guide, *pairs(conf), formulation=formulation)

    def reference(x, w):
        return reference_conv(x, w, guide, *pairs(conf))

    for a, b in zip(grads(export, (x, w), go), grads(reference, (x, w), go)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("formulation", FORMULATIONS)
def test_formulation_with_empty_regions_and_ties_matches_reference(formulation):
    # regions 0 and 2 of 4 take every pixel (1 and 3 are empty); a tie between 0 and 2 goes to 0 as torch.argmax
    x, coef, bases, guide, _, conf = mixed((2, 3, 4, 7, 9, 3, 1, 1, 1, 4), n=2)
    guide = torch.full_like(guide, -5.0)
    guide[:, 0, :3], guide[:, 2, 3:] = 1.0, 1.0
    guide[:, 0, 5, 5] = guide[:, 2, 5, 5] = 2.0
    got = ex.export_conv(x, MixedFilters(coef, bases), guide, *pairs(conf), formulation=formulation)
    weight = torch.einsum("bjn,nocuv->bjocuv", coef, bases)
    torch.testing.assert_close(got, reference_conv(x, weight, guide, *pairs(conf)), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("formulation", FORMULATIONS)
@pytest.mark.parametrize("activation", [torch.nn.SiLU(), torch.nn.LeakyReLU(0.1), torch.nn.Softmax(dim=1)],
                         ids=["silu", "leaky", "softmax-not-elementwise"])  # fmt: skip
@pytest.mark.parametrize("shape", [SHAPES[0], SHAPES[2]], ids=[IDS[0], IDS[2]])
def test_formulation_with_activation_matches_activated_reference_output_and_grads(formulation, activation, shape):
    # gather applies the bias and an elementwise activation to each region's product; any other activation (softmax
    # over the channels) and the other formulations apply it to the output
    x, coef, bases, guide, go, conf = mixed(shape, n=3)
    bias = torch.randn(bases.shape[1], dtype=torch.float64)

    def export(x, coef, bases, bias):
        filters = MixedFilters(coef, bases)
        return ex.export_conv(x, filters, guide, *pairs(conf), bias, formulation=formulation, activation=activation)

    def reference(x, coef, bases, bias):
        weight = torch.einsum("bjn,nocuv->bjocuv", coef, bases)
        return activation(reference_conv(x, weight, guide, *pairs(conf)) + bias.view(1, -1, 1, 1))

    for a, b in zip(grads(export, (x, coef, bases, bias), go), grads(reference, (x, coef, bases, bias), go)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("explicit", [False, True], ids=["mixed", "explicit"])
@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_gather_with_static_batch_matches_reference_output_and_grads(shape, explicit):
    # per (region, sample) products, each sample's rows with its own filter: the same numbers as the reference
    x, coef, bases, guide, go, conf = mixed(shape, n=3)
    weight = make_inputs(shape)[1]
    bias = torch.randn(bases.shape[1], dtype=torch.float64)

    def export(*leaves):
        filters = ExplicitFilters(leaves[1]) if explicit else MixedFilters(*leaves[1:3])
        with ex.static_batch_export():
            return ex.export_conv(leaves[0], filters, guide, *pairs(conf), leaves[-1], formulation="gather")

    def reference(*leaves):
        w = leaves[1] if explicit else torch.einsum("bjn,nocuv->bjocuv", *leaves[1:3])
        return reference_conv(leaves[0], w, guide, *pairs(conf)) + leaves[-1].view(1, -1, 1, 1)

    leaves = (x, weight, bias) if explicit else (x, coef, bases, bias)
    got, want = grads(export, leaves, go), grads(reference, leaves, go)
    assert all(float(g.abs().sum()) > 0 for g in got[1:])  # every gradient reaches its leaf
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_static_batch_export_is_off_outside_its_context():
    assert not ex._static and not ex.static_batch()
    with ex.static_batch_export():
        assert ex.static_batch()
        with ex.static_batch_export(False):
            assert ex._static == [True, False] and not ex.static_batch()
        assert ex.static_batch()
    assert not ex._static and not ex.static_batch()


def producers(graph):
    return {out: node for node in graph.node for out in node.output}


def origin(made_by, name, through):
    """The producer of tensor ``name``, looking through nodes of the types ``through`` (first input)."""
    node = made_by[name]
    while node.op_type in through:
        node = made_by[node.input[0]]
    return node


def region_products(graph):
    """The MatMuls of region rows (fed by a row Gather), not the generator's."""
    made_by = producers(graph)
    matmuls = [n for n in graph.node if n.op_type == "MatMul"]
    return [n for n in matmuls if origin(made_by, n.input[0], ("Reshape",)).op_type == "Gather"]


def test_gather_export_of_fused_drconv_activates_each_region_product_before_the_pixel_gather():
    # what lets OpenVINO fuse the bias and the SiLU into each region's MatMul: in the exported graph every Sigmoid
    # reads the bias Add of a region's MatMul (through its reshape), and none follows the last Gather
    onnx = pytest.importorskip("onnx")
    layer = fused_layer(3, 2, bases=8)  # regions=4, SiLU
    graph = onnx.load_from_string(export_layer(layer, torch.randn(1, 8, 17, 12), "gather")).graph
    made_by = producers(graph)
    sigmoids = [n for n in graph.node if n.op_type == "Sigmoid" and "/op/" in n.name]  # not the generator's
    assert len(sigmoids) == 4  # one per region
    for sigmoid in sigmoids:
        add = made_by[sigmoid.input[0]]
        assert add.op_type == "Add"
        assert origin(made_by, add.input[0], ("Reshape",)).op_type == "MatMul"


def test_gather_export_of_pointwise_layer_reads_rows_by_region_indices_and_filters_from_one_split():
    # a 1x1 stride-1 layer's patch row is its pixel's row: each region's row Gather takes the region's NonZero indices
    # as they are (no per-pixel corner Gather), and its filters are one Split's piece (no Gather + Squeeze per region)
    onnx = pytest.importorskip("onnx")
    graph = onnx.load_from_string(export_layer(fused_layer(1, 1, bases=8), torch.randn(1, 8, 17, 12), "gather")).graph
    made_by = producers(graph)
    layout = ("Reshape", "Transpose")
    matmuls = region_products(graph)
    assert all(made_by[mm.input[0]].op_type == "Gather" for mm in matmuls)  # the row Gather itself, no reshape
    assert len(matmuls) == 4  # one per region (the fifth MatMul mixes the bases into the filters)
    filters = [origin(made_by, mm.input[1], layout) for mm in matmuls]
    assert len({f.name for f in filters}) == 1 and all(f.op_type == "Split" for f in filters)
    for mm in matmuls:
        assert origin(made_by, made_by[mm.input[0]].input[1], layout).op_type == "NonZero"


@pytest.mark.parametrize("k, s", [(3, 2), (1, 1)])
def test_gather_export_with_static_batch_has_one_product_per_region_and_sample_and_matches_pytorch(k, s):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    layer = fused_layer(k, s, bases=8)  # regions=4, C_out=16
    x = torch.randn(3, 8, 17, 12)
    with ex.static_batch_export():
        static = export_layer(layer, x, "gather", dynamic=False)
    free = export_layer(layer, x, "gather", dynamic=False)  # traced at batch 3 too, outside the context
    assert len(region_products(onnx.load_from_string(static).graph)) == 4 * 3
    assert len(region_products(onnx.load_from_string(free).graph)) == 4
    with torch.no_grad():
        expected = layer(x).numpy()
    for model in (static, free):
        got = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
        assert np.abs(got - expected).max() < 1e-4


def test_fused_drconv_applies_its_activation_once_in_eager_and_export():
    # forward_fuse hands the activation to the op: the eager output is act(conv(x)) as before, and so is the export's
    layer = fused_layer(3, 2, bases=8)
    x = torch.randn(2, 8, 17, 12)
    with torch.no_grad():
        expected = layer.act(layer.conv(x))
        torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)
        traced = torch.jit.trace(layer, x[:1], check_trace=False)
        torch.testing.assert_close(traced(x), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "bases, requested, expected",
    [(1, "auto", "mix"), (2, "auto", "gather"), (8, "auto", "gather"), (None, "auto", "gather"),
     (8, "mix", "mix"), (1, "gather", "gather"), (None, "responses", "responses")],
)  # fmt: skip
def test_export_rule_mix_for_one_base_gather_otherwise_unless_forced(bases, requested, expected):
    assert ex.choose_export(bases, requested) == expected


def test_export_rule_refuses_mix_for_explicit_filters():
    with pytest.raises(ValueError, match="'mix' needs mixed filters"):
        ex.choose_export(None, "mix")


def test_export_formulation_forced_by_context_then_environment(monkeypatch):
    monkeypatch.setenv(ex.EXPORT_ENV, "responses")
    assert ex.choose_export(1) == "responses"
    with ex.export_formulation("gather"):
        assert ex.choose_export(1) == "gather"
    monkeypatch.setenv(ex.EXPORT_ENV, "fastest")
    with pytest.raises(ValueError, match=r"\$DRCONV_YOLO_EXPORT: the export formulation must be one of"):
        ex.choose_export(1)
    with pytest.raises(ValueError, match="export_formulation: the export formulation must be one of"):
        with ex.export_formulation("fastest"):
            pass


def export_layer(layer, x, formulation, dynamic=True) -> bytes:
    buffer = io.BytesIO()
    axes = {"x": {0: "b", 2: "h", 3: "w"}, "y": {0: "b", 2: "ho", 3: "wo"}} if dynamic else None
    with ex.export_formulation(formulation):
        torch.onnx.export(layer, x, buffer, opset_version=17, dynamo=False, input_names=["x"], output_names=["y"],
                          dynamic_axes=axes)  # fmt: skip
    return buffer.getvalue()


# per formulation: its Conv nodes (the guide conv, plus the bases' conv for mix) and whether it has data-dependent ops
GRAPH = {"mix": (2, False), "gather": (1, True), "responses": (1, False)}


def fused_layer(k, s, bases, seed=0):
    torch.manual_seed(seed)
    layer = DRConv(8, 16, k, s, regions=4, bases=bases).eval()
    with torch.no_grad():
        layer.bn.running_mean.uniform_(-1, 1)
        layer.bn.running_var.uniform_(0.5, 2)
        layer.conv.generator.fc.weight.normal_()  # coefficients that differ between regions and samples
    return layer.fuse()


@pytest.mark.parametrize("formulation", FORMULATIONS)
@pytest.mark.parametrize("k, s", [(3, 2), (1, 1)])
def test_onnx_export_by_each_formulation_runs_in_onnxruntime_at_any_batch_and_size(formulation, k, s):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    layer = fused_layer(k, s, bases=2)
    model = export_layer(layer, torch.randn(1, 8, 17, 12), formulation)
    nodes = [n.op_type for n in onnx.load_from_string(model).graph.node]
    assert set(nodes) <= {s.name for s in onnx.defs.get_all_schemas()}  # standard ONNX ops only
    convs, data_dependent = GRAPH[formulation]
    assert nodes.count("Conv") == convs and ({"NonZero", "ScatterElements"} <= set(nodes)) == data_dependent
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    for shape in [(1, 8, 17, 12), (4, 8, 17, 12), (2, 8, 33, 20)]:
        x = torch.randn(shape)
        with torch.no_grad():
            expected = layer(x).numpy()
        got = session.run(None, {"x": x.numpy()})[0]
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() < 1e-4, shape


def test_onnx_export_by_auto_takes_mix_for_one_base_and_gather_for_eight():
    onnx = pytest.importorskip("onnx")
    for bases, formulation in ((1, "mix"), (8, "gather")):
        graph = onnx.load_from_string(export_layer(fused_layer(3, 2, bases), torch.randn(1, 8, 17, 12), "auto")).graph
        nodes = [n.op_type for n in graph.node]
        assert (nodes.count("Conv"), "NonZero" in nodes) == GRAPH[formulation], bases


def test_dynamo_onnx_export_matches_pytorch_at_batch_1_and_3():
    pytest.importorskip("onnxscript", reason="the dynamo exporter needs onnxscript (dev extra)")
    ort = pytest.importorskip("onnxruntime")
    for bases in (1, 8):  # mix and gather
        layer = fused_layer(3, 2, bases)
        program = torch.onnx.export(layer, (torch.randn(1, 8, 17, 12),), dynamo=True,
                                    dynamic_shapes=({0: "batch"},), verbose=False)  # fmt: skip
        session = ort.InferenceSession(program.model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
        for batch in (1, 3):
            x = torch.randn(batch, 8, 17, 12)
            with torch.no_grad():
                expected = layer(x).numpy()
            got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
            assert np.abs(got - expected).max() < 1e-4, (bases, batch)


@pytest.mark.parametrize("formulation", ["auto", "gather"])
def test_openvino_pytorch_frontend_converts_and_matches_pytorch(formulation):
    ov = pytest.importorskip("openvino", reason="OpenVINO is the 'openvino' extra")
    layer = fused_layer(3, 2, bases=1 if formulation == "auto" else 8)
    with ex.export_formulation(formulation), torch.no_grad():
        model = ov.convert_model(layer, example_input=torch.randn(1, 8, 17, 12), input=[-1, 8, 17, 12])
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    for batch in (1, 3):
        x = torch.randn(batch, 8, 17, 12)
        with torch.no_grad():
            expected = layer(x).numpy()
        got = compiled(x.numpy())[0]
        assert np.abs(got - expected).max() < 1e-4, batch
