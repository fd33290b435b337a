"""Calibration statistics, the calibrators (TensorRT's entropy against an independent
implementation), Q/DQ placement asserted on the graph itself (int8 and fp8), fake
quantization equal to the Q/DQ graph, the fp8 graphs against ONNX Runtime, and range search."""

import math

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from conftest import latents
from vae_engines.core.errors import UserError
from vae_engines.graph.execute import GraphExecutor
from vae_engines.graph.io import load_onnx
from vae_engines.metrics import peak_psnr
from vae_engines.quant import calibrators
from vae_engines.quant.fakequant import FakeQuant
from vae_engines.quant.qdq import (FP8_MAX, INT8_MAX, insert_qdq, int8_weight, quantizable_layers, quantized_weight,
                                   select_layers)
from vae_engines.quant.stats import NUM_BINS, collect


# -- TensorRT's entropy calibration ------------------------------------------------------------
def entropy_threshold_by_the_book(hist, edges, levels=128, start=128):
    """Written from the algorithm's description (NVIDIA, "8-bit Inference with TensorRT",
    GTC 2017, and pytorch-quantization's documentation), one candidate and one bin at a time:
    zero bin replaced by bin 1; for i bins kept, P = bins[:i] with the rest added to the last,
    Q = bins[:i] merged into `levels` equal groups of bins and spread evenly over each group's
    non-empty bins; the threshold is the upper edge of bin i at the last smallest KL(P||Q)."""
    bins = [float(h) for h in hist]
    bins[0] = bins[1]
    best, best_i = math.inf, None
    for i in range(start, len(bins) + 1):
        p = bins[:i]
        p[-1] += sum(bins[i:])
        group_sum, group_filled = [0.0] * levels, [0] * levels
        for j in range(i):
            g = (j * levels) // i
            group_sum[g] += bins[j]
            group_filled[g] += bins[j] != 0
        q = [group_sum[(j * levels) // i] / group_filled[(j * levels) // i] if bins[j] != 0 else 0.0
             for j in range(i)]
        p_total, q_total = sum(p), sum(q)
        kl = 0.0
        for a, b in zip(p, q):
            if a > 0:
                if b == 0:
                    kl = math.inf
                    break
                kl += a / p_total * math.log((a / p_total) / (b / q_total))
        if kl <= best:
            best, best_i = kl, i
    return float(edges[best_i]) if best_i is not None else float(edges[-1])


def hand_made_histograms():
    rng = np.random.default_rng(0)
    out = {}
    x = np.abs(rng.standard_normal(200_000))
    out["gaussian"] = np.histogram(x, bins=NUM_BINS, range=(0, x.max()))[0]
    x = np.abs(rng.laplace(size=200_000))
    x[:30] = 60.0  # transients: the reference project's minmax failure
    out["laplace with outliers"] = np.histogram(x, bins=NUM_BINS, range=(0, x.max()))[0]
    x = np.concatenate([np.zeros(50_000), np.abs(rng.standard_normal(50_000)) * 0.1 + 2.0])
    out["zero spike and a far mode"] = np.histogram(x, bins=NUM_BINS, range=(0, x.max()))[0]
    sparse = np.zeros(700, dtype=np.int64)
    sparse[rng.choice(700, 90, replace=False)] = rng.integers(1, 500, 90)
    out["sparse, 700 bins"] = sparse
    return out


@pytest.mark.parametrize("name", list(hand_made_histograms()))
def test_entropy_equals_an_independent_implementation(name):
    hist = hand_made_histograms()[name]
    edges = np.linspace(0.0, 7.0, len(hist) + 1)
    assert calibrators.entropy_amax(hist, edges) == entropy_threshold_by_the_book(hist, edges)


def test_entropy_clips_outliers_that_minmax_keeps():
    hist = hand_made_histograms()["laplace with outliers"]
    edges = np.linspace(0.0, 60.0, NUM_BINS + 1)
    assert calibrators.entropy_amax(hist, edges) < 0.3 * calibrators.minmax_amax(hist, edges)


def test_calibrators_differ_and_order_as_expected():
    hist = hand_made_histograms()["laplace with outliers"]
    edges = np.linspace(0.0, 60.0, NUM_BINS + 1)
    amax = {name: calibrators.amax_from_histogram(name, hist, edges, percentile=99.99)
            for name in calibrators.CALIBRATORS}
    assert amax["minmax"] == 60.0
    assert len({round(v, 6) for v in amax.values()}) == 4
    assert amax["percentile"] < amax["minmax"] and amax["mse"] < amax["minmax"]
    # percentile returns the lower edge of the bin where the distribution reaches it
    cdf = np.cumsum(hist) / hist.sum()
    k = int(np.searchsorted(cdf, 0.9999))
    assert amax["percentile"] == edges[k]


def test_mse_amax_is_near_optimal_for_a_gaussian():
    x = np.abs(np.random.default_rng(0).standard_normal(1_000_000))
    hist, edges = np.histogram(x, bins=NUM_BINS)
    # the MSE-optimal 8-bit clipping range of a unit Gaussian is about 4 sigma
    assert 3.0 < calibrators.mse_amax(hist.astype(float), edges) < 5.0


def test_dead_activation_gets_a_positive_range():
    assert calibrators.amax_from_histogram("entropy", np.zeros(NUM_BINS), np.zeros(NUM_BINS + 1)) > 0


# -- statistics -----------------------------------------------------------------------------
def test_statistics_are_exact_and_order_free(tiny_onnx):
    model = load_onnx(tiny_onnx)
    layers = quantizable_layers(model)
    ex = GraphExecutor(model)
    x = latents(3, 6, seed=5)
    tensors = [l.activation for l in layers]
    stats = collect(ex, tensors, x)
    again = collect(ex, tensors, x[::-1].copy())
    np.testing.assert_array_equal(stats.hist, again.hist)
    np.testing.assert_array_equal(stats.amax, again.amax)
    # against numpy on the captured tensor of one layer
    layer = layers[7]
    captured = []
    for latent in x:
        ex.run(latent[None], input_hooks={(layer.node, 0): lambda t: (captured.append(t.abs().numpy().ravel()), t)[1]})
    values = np.concatenate(captured).astype(np.float64)
    amax = stats.max_of(layer.activation)
    assert amax == pytest.approx(values.max(), rel=1e-7)
    counts, _ = stats.of(layer.activation)
    expected = np.bincount(np.minimum((values / (amax / NUM_BINS)).astype(np.int64), NUM_BINS - 1),
                           minlength=NUM_BINS)
    np.testing.assert_array_equal(counts, expected)
    assert counts.sum() == values.size


# -- Q/DQ placement -------------------------------------------------------------------------
def test_layers_are_in_network_order_and_include_conv_transpose(tiny_onnx):
    layers = quantizable_layers(load_onnx(tiny_onnx))
    assert len(layers) == 37  # conv1 + 5 x (ConvTranspose + 3 x 2 convs) + conv2
    assert layers[0].name == "conv1" and layers[-1].name == "conv2"
    assert [l.op_type for l in layers].count("ConvTranspose") == 5
    assert layers[1].op_type == "ConvTranspose" and layers[1].name == "block.0.conv_t1" and layers[1].axis == 1


def test_keep_and_exclude_selection(tiny_onnx):
    layers = quantizable_layers(load_onnx(tiny_onnx))
    assert [l.name for l in select_layers(layers, keep_first=1, keep_last=1)] == [l.name for l in layers[1:-1]]
    assert layers[1].name not in {l.name for l in select_layers(layers, keep_first=2)}  # ConvTranspose counts
    assert all(l.op_type == "Conv" for l in select_layers(layers, exclude_op_types=("ConvTranspose",)))
    with pytest.raises(UserError, match="only 37 convolution layers"):
        select_layers(layers, keep_first=30, keep_last=8)
    with pytest.raises(UserError, match="not a convolution layer"):
        select_layers(layers, exclude_nodes=("block.9.conv",))


@pytest.mark.parametrize("fmt", ["int8", "fp8"])
@pytest.mark.parametrize("scale_type", [np.float32, np.float16])
def test_qdq_placement_is_tensorrt_friendly(tiny_onnx, scale_type, fmt):
    from vae_engines.quant.quantize import qdq_graph

    model = load_onnx(tiny_onnx)
    layers = quantizable_layers(model)
    tensors = [l.activation for l in layers]
    amax = calibrators.calibrate(collect(GraphExecutor(model), tensors, latents(2, 4)), tensors, "entropy")
    chosen = select_layers(layers, keep_first=1, keep_last=1)
    q = qdq_graph(model, chosen, amax, "fp32" if scale_type is np.float32 else "fp16", fmt=fmt)
    code_type = onnx.TensorProto.INT8 if fmt == "int8" else onnx.TensorProto.FLOAT8E4M3FN
    largest = INT8_MAX if fmt == "int8" else FP8_MAX
    onnx.checker.check_model(q, full_check=True)
    producers = {o: n for n in q.graph.node for o in n.output}
    inits = {i.name: i for i in q.graph.initializer}
    nodes = {n.name: n for n in q.graph.node}
    float_type = onnx.TensorProto.FLOAT if scale_type is np.float32 else onnx.TensorProto.FLOAT16
    for layer in layers:
        node = nodes[layer.node]
        act, weight = producers.get(node.input[0]), producers.get(node.input[1])
        if layer not in chosen:  # kept layers are untouched: float input, float weight initializer
            assert act is None or act.op_type != "DequantizeLinear"
            assert node.input[1] in inits and inits[node.input[1]].data_type == float_type
            continue
        assert act.op_type == "DequantizeLinear" and producers[act.input[0]].op_type == "QuantizeLinear"
        scale = inits[act.input[1]]
        assert numpy_helper.to_array(scale).ndim == 0 and scale.data_type == float_type  # per-tensor
        assert float(numpy_helper.to_array(scale)) == pytest.approx(amax[layer.activation] / largest, rel=1e-3)
        assert inits[act.input[2]].data_type == code_type and float(numpy_helper.to_array(inits[act.input[2]])) == 0
        assert weight.op_type == "DequantizeLinear"
        w = inits[weight.input[0]]
        assert w.data_type == code_type
        axis = next(a.i for a in weight.attribute if a.name == "axis")
        assert axis == (1 if layer.op_type == "ConvTranspose" else 0)
        assert numpy_helper.to_array(inits[weight.input[1]]).shape == (w.dims[axis],)  # per output channel
        assert len(node.input) < 3 or producers.get(node.input[2]) is None  # bias stays float
    for n in q.graph.node:  # no int32 DQ (TensorRT refuses it), no Q on conv outputs
        if n.op_type == "DequantizeLinear" and n.input[0] in inits:
            assert inits[n.input[0]].data_type == code_type
        if n.op_type == "QuantizeLinear":
            src = producers.get(n.input[0])
            assert src is None or src.op_type not in ("Conv", "ConvTranspose")
    x = latents(1, 12, seed=99)
    ref = GraphExecutor(model).decode(x)
    assert peak_psnr(ref, GraphExecutor(q).decode(x)) > 30.0


def test_int8_weights_round_against_the_stored_scale():
    w = np.random.default_rng(0).standard_normal((6, 4, 3)).astype(np.float32)
    for scale_type in (np.float32, np.float16):
        q, scale = int8_weight(w, axis=0, scale_type=scale_type)
        assert scale.dtype == scale_type and np.abs(q).max() <= INT8_MAX
        recon = q.astype(np.float32) * scale.astype(np.float32)[:, None, None]
        step = scale.astype(np.float32)[:, None, None]
        assert np.all(np.abs(recon - w) <= 0.5 * step + 1e-7)


def test_fp8_weights_round_against_the_stored_scale():
    """float8 e4m3fn codes: within half an e4m3 step of w / scale (1/16 of the value where it is
    normal, 2^-10 among the subnormals), the largest |w| of a channel at 448, as torch rounds them."""
    import torch

    w = np.random.default_rng(0).standard_normal((6, 4, 3)).astype(np.float32)
    w[2] = 0.0  # a dead channel: scale 1, codes 0
    for scale_type in (np.float32, np.float16):
        q, scale = quantized_weight(w, axis=0, scale_type=scale_type, fmt="fp8")
        assert scale.dtype == scale_type and scale[2] == 1 and not q[2].astype(np.float32).any()
        x = w / scale.astype(np.float32)[:, None, None]
        codes = q.astype(np.float32)
        assert np.all(np.abs(codes - x) <= np.maximum(np.abs(x) / 16, 2.0 ** -10))
        assert np.abs(codes).max() <= FP8_MAX and np.abs(codes).max(axis=(1, 2))[0] == pytest.approx(FP8_MAX, rel=1e-2)
        by_torch = torch.from_numpy(x).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn).float().numpy()
        np.testing.assert_array_equal(codes, by_torch)


def test_fp8_graphs_decode_alike_in_onnxruntime_and_pytorch(tiny_onnx):
    """An fp8 Q/DQ graph (fp32 float parts) run by ONNX Runtime's CPU provider and by
    graph.execute: the latent's QuantizeLinear gives the same float8 codes, and the decodes
    differ by far less than either differs from fp32 (measured: 111 dB apart, 35 dB from fp32)."""
    import onnxruntime

    from vae_engines.quant.quantize import qdq_graph

    model = load_onnx(tiny_onnx)
    layers = quantizable_layers(model)
    tensors = [l.activation for l in layers]
    x = latents(2, 12, seed=99)
    amax = calibrators.calibrate(collect(GraphExecutor(model), tensors, x), tensors, "minmax")
    graph = qdq_graph(model, layers, amax, "fp32", fmt="fp8")
    latent_q = next(n.output[0] for n in graph.graph.node if n.op_type == "QuantizeLinear"
                    and n.input[0] == graph.graph.input[0].name)
    seen = {}
    by_torch = GraphExecutor(graph).decode(x, observe=lambda k, v: seen.__setitem__(k, v) if k == latent_q else None)
    graph.graph.node.append(onnx.helper.make_node("Cast", [latent_q], ["latent_codes"], to=onnx.TensorProto.FLOAT))
    graph.graph.output.append(onnx.helper.make_tensor_value_info("latent_codes", onnx.TensorProto.FLOAT, None))
    by_ort, codes = onnxruntime.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {graph.graph.input[0].name: x})
    np.testing.assert_array_equal(seen[latent_q].numpy(), codes)
    assert np.abs(codes).max() == FP8_MAX  # minmax on x itself: its largest value is e4m3's largest code
    reference = GraphExecutor(model).decode(x)
    assert peak_psnr(by_torch, by_ort) >= peak_psnr(reference, by_torch) + 40


def test_missing_range_is_a_user_error(tiny_onnx):
    model = load_onnx(tiny_onnx)
    with pytest.raises(UserError, match="no calibrated range"):
        insert_qdq(model, quantizable_layers(model), {})


@pytest.mark.parametrize("fmt", ["int8", "fp8"])
def test_fake_quantization_equals_the_qdq_graph(tiny_onnx, fmt):
    model = load_onnx(tiny_onnx)
    layers = quantizable_layers(model)
    chosen = layers[3:30]
    amax = {l.activation: 0.3 + 0.02 * i for i, l in enumerate(layers)}
    ex = GraphExecutor(model)
    x = latents(2, 5, seed=7)
    fake = ex.decode(x, **FakeQuant(ex, layers, fmt).overrides({l.name: amax[l.activation] for l in chosen}))
    graph = GraphExecutor(insert_qdq(model, chosen, amax, fmt=fmt)).decode(x)
    np.testing.assert_array_equal(fake, graph)


def test_fused_placement_follows_tensorrts_rules_per_layer_kind(tiny_onnx):
    """fused: ConvTranspose left in float, every quantized convolution's input and weight
    through Q/DQ, each residual Add's skip input through Q/DQ where the convolution feeding
    that Add is quantized, nothing inside Snake; and fake quantization equals the graph."""
    from vae_engines.quant.qdq import PLACEMENTS
    from vae_engines.quant.quantize import qdq_graph
    from vae_engines.quant.stats import quantizable_tensors

    model = load_onnx(tiny_onnx)
    layers = quantizable_layers(model)
    assert sum(l.skip is not None for l in layers) == 15  # 5 blocks x 3 residual units: each unit's conv2
    assert all(l.name.endswith("conv2") for l in layers if l.skip) and layers[-1].skip is None
    plan = PLACEMENTS["fused"](select_layers(layers, keep_last=1))
    ex = GraphExecutor(model)
    tensors = quantizable_tensors(layers)
    amax = calibrators.calibrate(collect(ex, tensors, latents(2, 4)), tensors, "minmax")
    q = qdq_graph(model, plan, amax, "fp16")
    producers = {o: n for n in q.graph.node for o in n.output}
    nodes = {n.name: n for n in q.graph.node}

    def dequantized(tensor):
        node = producers.get(tensor)
        return node is not None and node.op_type == "DequantizeLinear" and producers[node.input[0]].op_type == \
            "QuantizeLinear"

    for layer in layers:
        node = nodes[layer.node]
        quantized = layer in plan.layers
        assert quantized == (layer.op_type == "Conv" and layer.name != "conv2"), layer.name
        assert dequantized(node.input[0]) == quantized
        if layer.skip is not None:
            add = nodes[layer.skip.node]
            assert add.op_type == "Add" and dequantized(add.input[layer.skip.index]) == quantized
            assert not dequantized(add.input[1 - layer.skip.index])  # the convolution's own output: no Q
    for n in q.graph.node:
        if n.op_type in ("Sin", "Mul"):  # Snake stays in float
            assert not any(dequantized(i) for i in n.input), n.name
    x = latents(2, 5, seed=7)
    fake = ex.decode(x, **FakeQuant(ex, plan.layers).plan_overrides(plan, amax))
    np.testing.assert_array_equal(fake, GraphExecutor(qdq_graph(model, plan, amax, "fp32")).decode(x))
    assert peak_psnr(ex.decode(x), GraphExecutor(q).decode(x)) > 30.0


# -- range search ------------------------------------------------------------------------------
def test_range_search_starts_from_the_best_calibrator_and_never_worsens_a_latent(tiny_onnx):
    from vae_engines.quant.search import candidate_ranges, range_search

    model = load_onnx(tiny_onnx)
    layers = quantizable_layers(model)
    ex = GraphExecutor(model)
    x = latents(3, 6, seed=11)
    tensors = [l.activation for l in layers]
    stats = collect(ex, tensors, x)
    assert len(candidate_ranges(stats, tensors[5])) >= 4
    reference = ex.decode(x)
    amax, record = range_search(ex, layers, stats, x, reference)
    by_calibrator = record["peak_psnr_db_by_calibrator"]
    assert record["start"] == max(by_calibrator, key=by_calibrator.get)
    assert record["peak_psnr_db_end"] >= max(by_calibrator.values())
    assert record["trials"] > len(layers)
    fake = FakeQuant(ex, layers)
    start = calibrators.calibrate(stats, tensors, record["start"].split()[0],
                                  float(record["start"].split()[1]) if " " in record["start"] else None)

    def per_latent(a):
        out = ex.decode(x, **fake.overrides({l.name: a[l.activation] for l in layers}))
        return ((out - reference) ** 2).reshape(len(x), -1).sum(axis=1)

    assert np.all(per_latent(amax) <= per_latent(start) * (1 + 1e-6))  # no latent got worse


# -- executor vs ONNX Runtime on every variant of the default pipeline -------------------------
@pytest.mark.slow
def test_torch_and_onnxruntime_agree_on_every_default_variant(tmp_path):
    """For each INT8 recipe in the shipped params.yaml, its Q/DQ ONNX on the shipped model, run
    by PyTorch (graph.execute) and by ONNX Runtime. The two sum convolutions in different orders
    (and ORT computes fp16 graphs in fp32), so a value within rounding of an int8 step boundary
    lands in either step, and such a flip re-draws the rounding of everything after it. What
    the arithmetic guarantees, whatever the CPU:

    - the QuantizeLinear of the graph input (where the recipe quantizes the first convolution;
      the same values and the same fp32 division in both) gives identical integers: rounding
      half to even, saturation, zero point agree;
    - the two decodes differ by no more than each differs from fp32: a flip moves a value by one
      quantization step, an error of the kind quantization makes everywhere already, so the
      difference between the runtimes is at most the quantization noise (fp32 graphs: mutual
      PSNR >= PSNR vs fp32; measured 9.6-48 dB above it). In fp16 the executor rounds every op
      to fp16 where ORT keeps fp32, which re-draws the roundings once more, at most a second
      noise of that size: mutual PSNR >= PSNR vs fp32 - 6 dB (measured -0.9 dB at worst).
    A wrong scale, axis, zero point or saturation breaks both by far more (tens of dB).
    Calibration here is small (2 latents x 16 frames) to keep the test in CI's budget."""
    import dataclasses

    import onnxruntime
    import torch

    from conftest import ROOT
    from vae_engines.core.params import load
    from vae_engines.data.latentset import write_latent_set
    from vae_engines.model.export import onnx_from_decoder
    from vae_engines.model.oobleck import fold_decoder, load_vae
    from vae_engines.quant.quantize import plan_of, qdq_graph, quantize_variant
    from vae_engines.quant.sensitivity import without
    from vae_engines.quant.stats import write_stats

    params = load(ROOT / "params.yaml")
    loaded = load_vae(dataclasses.replace(params.model, checkpoint=str(ROOT / params.model.checkpoint)))
    fp32 = onnx_from_decoder(fold_decoder(loaded.vae), tmp_path / "fp32.onnx", opset=params.export.opset,
                             metadata={"hop": 1920, "sampling_rate": 48000})
    model = load_onnx(fp32)
    layers = quantizable_layers(model)
    ex = GraphExecutor(model)
    calibration = latents(2, 16, seed=0)
    write_latent_set(tmp_path / "cal", calibration, {"source": "test"})
    from vae_engines.quant.stats import quantizable_tensors

    write_stats(tmp_path / "s.npz", tmp_path / "s.json", collect(ex, quantizable_tensors(layers), calibration), layers,
                {})
    held = latents(2, 16, seed=1)
    ref = ex.decode(held)
    for name, recipe in params.int8.items():
        variant = dataclasses.replace(recipe, search_latents=1, auto_latents=1)
        out = tmp_path / f"{name}.onnx"
        record = quantize_variant(name, variant, fp32_onnx=fp32, stats_npz=tmp_path / "s.npz",
                                  calibration_dir=tmp_path / "cal", out_onnx=out, ranges_json=tmp_path / f"{name}.json",
                                  device=torch.device("cpu"))
        for float_type in dict.fromkeys((recipe.float_type, "fp32")):
            if float_type == recipe.float_type:
                graph = load_onnx(out)
            else:  # the same ranges and kept layers in the other float type (what quantize_variant builds from them)
                plan = plan_of(variant, layers)
                plan = without(plan, record["auto"]["kept_in_float"]) if record["auto"] else plan
                graph = qdq_graph(model, plan, record["amax"], float_type, True, variant.format)
            # the latent's own Q, where the recipe quantizes the first convolution
            inputs = {graph.graph.input[0].name} | {n.output[0] for n in graph.graph.node if n.op_type == "Cast"
                                                    and n.input[0] == graph.graph.input[0].name}
            latent_q = [n.output[0] for n in graph.graph.node if n.op_type == "QuantizeLinear"
                        and n.input[0] in inputs]
            seen = {}
            by_torch = GraphExecutor(graph).decode(
                held, observe=lambda key, value: seen.__setitem__(key, value) if key in latent_q else None)
            # the latent's codes as graph outputs: int8 as they are, float8 through an exact Cast to float
            if variant.format == "fp8":
                graph.graph.node.extend([onnx.helper.make_node("Cast", [q], [f"{q}_codes"], to=onnx.TensorProto.FLOAT)
                                         for q in latent_q])
            graph.graph.output.extend([onnx.helper.make_tensor_value_info(
                q if variant.format == "int8" else f"{q}_codes",
                onnx.TensorProto.INT8 if variant.format == "int8" else onnx.TensorProto.FLOAT, None) for q in latent_q])
            by_ort, *ort_q = onnxruntime.InferenceSession(graph.SerializeToString(),
                                                         providers=["CPUExecutionProvider"]).run(None, {"latent": held})
            where = (name, float_type)
            assert bool(latent_q) == (recipe.keep_first == 0), where
            for q, codes in zip(latent_q, ort_q):
                np.testing.assert_array_equal(seen[q].cpu().numpy().astype(codes.dtype), codes, err_msg=str(where))
            margin = 0.0 if float_type == "fp32" else -6.0
            assert peak_psnr(by_torch, by_ort) >= peak_psnr(ref, by_torch) + margin, (
                where, peak_psnr(by_torch, by_ort), peak_psnr(ref, by_torch))
