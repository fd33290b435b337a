"""Calibrators and Q/DQ placement, asserted on the graph itself."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from vae_engines.quant.calibrators import calibrate_amax, group_by_budget, make_collector, mse_optimal_amax
from vae_engines.core.errors import UserError
from vae_engines.model.export import load_onnx
from vae_engines.measure.metrics import peak_psnr
from vae_engines.quant.qdq import insert_qdq, qdq_onnx_from_onnx, quantizable_layers, select_layers


def latents(n, frames=8, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((1, 64, frames)).astype(np.float32) for _ in range(n)]


def heavy_tailed(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(200_000).astype(np.float32)
    x[:20] = 40.0  # a few transients, as minmax's failure mode in the reference project
    return x


def test_calibrators_really_differ_on_heavy_tails():
    amax = {}
    for name in ("minmax", "entropy", "percentile", "mse"):
        c = make_collector(name, 2048, 99.99)
        c.collect({"t": heavy_tailed()})
        c.collect({"t": heavy_tailed(1)})  # histograms merge across batches
        amax[name] = c.compute_amax()["t"]
    assert amax["minmax"] == pytest.approx(40.0)
    for name in ("entropy", "percentile"):
        assert amax[name] < 0.5 * amax["minmax"], (name, amax)
    # mse weighs clipping the transients against rounding everything else: it clips a little
    assert amax["mse"] < amax["minmax"]
    assert len({round(v, 3) for v in amax.values()}) == 4


def test_mse_amax_is_near_optimal_for_a_gaussian():
    x = np.abs(np.random.default_rng(0).standard_normal(1_000_000))
    hist, edges = np.histogram(x, bins=2048)
    amax = mse_optimal_amax(hist.astype(float), edges)
    # the MSE-optimal 8-bit clipping range of a unit Gaussian is about 4 sigma
    assert 3.0 < amax < 5.0


def test_group_by_budget():
    assert group_by_budget({"a": 5, "b": 5, "c": 5}, 10) == [["a", "b"], ["c"]]
    assert group_by_budget({"a": 50, "b": 1}, 10) == [["a"], ["b"]]


def test_grouped_calibration_equals_single_pass(tiny_onnx):
    layers = quantizable_layers(load_onnx(tiny_onnx))
    tensors = [l.activation for l in layers]
    one = calibrate_amax(tiny_onnx, tensors, latents(3), calibrator="minmax")
    many = calibrate_amax(tiny_onnx, tensors, latents(3), calibrator="minmax", memory_budget_bytes=1)
    assert one == many
    assert set(one) == set(tensors) and all(v > 0 for v in one.values())


def test_layers_are_in_network_order_and_include_conv_transpose(tiny_onnx):
    layers = quantizable_layers(load_onnx(tiny_onnx))
    assert len(layers) == 37  # conv1 + 5 x (ConvTranspose + 3 x 2 convs) + conv2
    assert layers[0].name == "conv1" and layers[-1].name == "conv2"
    assert [l.op_type for l in layers].count("ConvTranspose") == 5
    assert layers[1].op_type == "ConvTranspose" and layers[1].name == "block.0.conv_t1"


def test_keep_and_exclude_selection(tiny_onnx):
    layers = quantizable_layers(load_onnx(tiny_onnx))
    picked = select_layers(layers, keep_first=1, keep_last=1)
    assert [l.name for l in picked] == [l.name for l in layers[1:-1]]
    picked = select_layers(layers, keep_first=2)  # the second layer is a ConvTranspose: it counts
    assert layers[1].name not in {l.name for l in picked}
    picked = select_layers(layers, exclude_op_types=("ConvTranspose",))
    assert all(l.op_type == "Conv" for l in picked)
    with pytest.raises(UserError, match="only 37 convolution layers"):
        select_layers(layers, keep_first=30, keep_last=8)
    with pytest.raises(UserError, match="not a convolution layer"):
        select_layers(layers, exclude_nodes=("block.9.conv",))


def test_qdq_placement_is_tensorrt_friendly(tiny_onnx, tmp_path):
    model = load_onnx(tiny_onnx)
    layers = quantizable_layers(model)
    amax = calibrate_amax(tiny_onnx, [l.activation for l in layers], latents(4), calibrator="entropy")
    chosen = select_layers(layers, keep_first=1, keep_last=1)
    out = qdq_onnx_from_onnx(tiny_onnx, tmp_path / "q.onnx", amax, chosen)
    q = onnx.load(str(out))
    onnx.checker.check_model(q, full_check=True)
    producers = {o: n for n in q.graph.node for o in n.output}
    inits = {i.name: i for i in q.graph.initializer}
    nodes = {n.name: n for n in q.graph.node}
    for layer in layers:
        node = nodes[layer.node]
        quantized = layer in chosen
        act, weight = producers.get(node.input[0]), producers.get(node.input[1])
        if not quantized:  # kept layers are untouched: float input, float weight initializer
            assert act is None or act.op_type != "DequantizeLinear"
            assert node.input[1] in inits and inits[node.input[1]].data_type == onnx.TensorProto.FLOAT
            continue
        assert act.op_type == "DequantizeLinear" and producers[act.input[0]].op_type == "QuantizeLinear"
        assert numpy_helper.to_array(inits[act.input[1]]).ndim == 0  # per-tensor activation scale
        assert weight.op_type == "DequantizeLinear"
        w = inits[weight.input[0]]
        assert w.data_type == onnx.TensorProto.INT8
        axis = next(a.i for a in weight.attribute if a.name == "axis")
        assert axis == (1 if layer.op_type == "ConvTranspose" else 0)
        scale = numpy_helper.to_array(inits[weight.input[1]])
        assert scale.shape == (w.dims[axis],)  # one scale per output channel
        assert len(node.input) < 3 or producers.get(node.input[2]) is None  # bias stays float
    for n in q.graph.node:  # no int32 DQ (TensorRT refuses it), no Q/DQ on conv outputs
        if n.op_type == "DequantizeLinear" and n.input[0] in inits:
            assert inits[n.input[0]].data_type == onnx.TensorProto.INT8
        if n.op_type == "QuantizeLinear":
            src = producers.get(n.input[0])
            assert src is None or src.op_type not in ("Conv", "ConvTranspose")
    x = latents(1, frames=12, seed=99)[0]
    ref = ort.InferenceSession(str(tiny_onnx)).run(None, {"latent": x})[0]
    got = ort.InferenceSession(str(out)).run(None, {"latent": x})[0]
    assert peak_psnr(ref, got) > 30.0  # INT8 of the tiny random model stays within 30 dB of float


def test_missing_range_is_a_user_error(tiny_onnx):
    model = load_onnx(tiny_onnx)
    with pytest.raises(UserError, match="no calibrated range"):
        insert_qdq(model, quantizable_layers(model), {})
