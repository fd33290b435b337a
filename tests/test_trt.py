"""Engine builds with TensorRT-RTX on the CPU, the implicit-INT8 path's checks, and
everything around running a plan that can be checked without a GPU. Building needs the
`tensorrt-rtx` extra (CI installs it)."""

import importlib.util
import json
from types import SimpleNamespace

import pytest

from conftest import latents
from vae_engines.core import params as config
from vae_engines.core.errors import UserError
from vae_engines.runtime.base import Shape
from vae_engines.runtime.tensorrt import torch_dtype
from vae_engines.trt import backend as backend_mod
from vae_engines.trt.plan import plan_metadata as verify_plan
from vae_engines.trt.plan import unavailable_reason

HAS_RTX = importlib.util.find_spec("tensorrt_rtx") is not None
needs_rtx = pytest.mark.skipif(not HAS_RTX, reason="TensorRT-RTX not installed: pip install 'vae-engines[tensorrt-rtx]'")
PROFILE = config.ProfileParams(min_frames=2, opt_frames=4, max_frames=8)
BUILD = config.BuildParams()


@pytest.fixture(scope="module")
def rtx():
    return backend_mod.resolve("tensorrt_rtx")


@pytest.fixture(scope="module")
def tiny_plan(tmp_path_factory, tiny_onnx, rtx):
    from vae_engines.trt.build import build_plan

    out = tmp_path_factory.mktemp("plans") / "fp32.plan"
    meta = build_plan(rtx, tiny_onnx, out, profile=PROFILE, build=BUILD, timing_cache_path=out.with_suffix(".timing.cache"))
    return out, meta


@needs_rtx
def test_build_writes_plan_and_metadata(tiny_plan):
    plan, meta = tiny_plan
    assert plan.stat().st_size == meta["plan_bytes"] > 0
    assert meta["backend"] == "tensorrt_rtx" and meta["profile"]["opt"] == [1, 64, 4]
    assert meta["inputs"][0]["name"] == "latent" and meta["outputs"][0]["name"] == "audio"
    assert meta["num_layers"] > 37 and meta["target"].startswith("portable")
    assert meta["kind"] == "tensorrt_rtx" and meta["hop"] == 1920 and meta["int8_execution"].startswith("none")
    assert verify_plan(plan)["plan_sha256"] == meta["plan_sha256"]
    assert not list(plan.parent.glob(".tmp-*"))


@needs_rtx
@pytest.mark.parametrize("fmt", ["int8", "fp8"])
@pytest.mark.parametrize("float_type", ["fp16", "fp32"])
def test_build_qdq_records_int8_convolutions(tmp_path, tiny_onnx, rtx, float_type, fmt):
    """TensorRT-RTX builds the Q/DQ graph of either format (no GPU needed), and the record counts
    the convolutions each format's DequantizeLinear feeds."""
    from vae_engines.graph.execute import GraphExecutor
    from vae_engines.graph.io import load_onnx, save_onnx
    from vae_engines.quant.calibrators import calibrate
    from vae_engines.quant.quantize import qdq_graph
    from vae_engines.quant.qdq import quantizable_layers
    from vae_engines.quant.stats import collect
    from vae_engines.trt.build import build_plan

    model = load_onnx(tiny_onnx)
    layers = quantizable_layers(model)
    tensors = [l.activation for l in layers]
    amax = calibrate(collect(GraphExecutor(model), tensors, latents(1, 4)), tensors, "minmax")
    q = save_onnx(qdq_graph(model, layers[1:], amax, float_type, fmt=fmt), tmp_path / "q.onnx")
    meta = build_plan(rtx, q, tmp_path / "q.plan", profile=PROFILE, build=BUILD)
    other = "fp32" if float_type == "fp16" else "fp16"
    assert meta["precisions"]["convolutions"] == {"int8": 0, "fp8": 0, fmt: 36, float_type: 1, other: 0}


@needs_rtx
def test_build_for_a_named_compute_capability(tmp_path, tiny_onnx, rtx):
    from vae_engines.trt.build import build_plan

    build = config.BuildParams(compute_capabilities=("12.0",))
    meta = build_plan(rtx, tiny_onnx, tmp_path / "q.plan", profile=PROFILE, build=build)
    assert meta["target"] == "sm120"
    with pytest.raises(UserError, match="not a TensorRT-RTX target"):
        build_plan(rtx, tiny_onnx, tmp_path / "x.plan", profile=PROFILE,
                   build=config.BuildParams(compute_capabilities=("9.0",)))


@needs_rtx
def test_parser_errors_name_nodes_and_keep_the_old_plan(tmp_path, tiny_onnx, rtx, tiny_plan):
    import onnx

    from vae_engines.trt.build import build_plan

    model = onnx.load(str(tiny_onnx))
    model.graph.node[0].op_type = "NoSuchOp"
    bad = tmp_path / "bad.onnx"
    onnx.save(model, str(bad))
    plan, _ = tiny_plan
    before = plan.read_bytes()
    with pytest.raises(UserError, match=r"cannot parse .*\[node_") as err:
        build_plan(rtx, bad, plan, profile=PROFILE, build=BUILD)
    assert "\n" not in str(err.value)
    assert plan.read_bytes() == before


@needs_rtx
def test_profile_too_large_for_tensorrt(tmp_path, tiny_onnx, rtx):
    from vae_engines.trt.build import build_plan

    huge = config.ProfileParams(min_frames=1, opt_frames=1, max_frames=600_000, max_batch=2)
    with pytest.raises(UserError, match="over TensorRT's 2\\^31-1"):
        build_plan(rtx, tiny_onnx, tmp_path / "p.plan", profile=huge, build=BUILD)


@needs_rtx
def test_truncated_or_corrupted_plan_is_refused(tmp_path, tiny_plan):
    plan, _ = tiny_plan
    copy = tmp_path / plan.name
    copy.write_bytes(plan.read_bytes()[:1000])
    copy.with_suffix(".json").write_bytes(plan.with_suffix(".json").read_bytes())
    with pytest.raises(UserError, match="truncated"):
        verify_plan(copy)
    data = bytearray(plan.read_bytes())
    data[500] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(UserError, match="corrupted"):
        verify_plan(copy)


def test_backend_choice_errors(monkeypatch):
    real_import = backend_mod._import
    monkeypatch.setattr(backend_mod, "_import", lambda m: None if m == "tensorrt" else real_import(m))
    if HAS_RTX:
        with pytest.raises(UserError, match="only TensorRT-RTX is installed"):
            backend_mod.resolve("tensorrt")
        assert backend_mod.resolve("auto").name == "tensorrt_rtx"
    monkeypatch.setattr(backend_mod, "_import", lambda m: None)
    for choice in ("auto", "tensorrt", "tensorrt_rtx"):
        with pytest.raises(UserError, match=r"vae-engines\[tensorrt-rtx\]"):
            backend_mod.resolve(choice)


def test_shape_and_dtype_checks_without_gpu():
    shape = Shape(channels=64, hop=1920, sampling_rate=48000, frames=(8, 32), batch=(1, 1))
    shape.check((1, 64, 16), "plan")
    with pytest.raises(UserError, match="outside the engine's 8..32"):
        shape.check((1, 64, 40), "plan")
    with pytest.raises(UserError, match=r"takes \[B, 64, T\]"):
        shape.check((64, 16), "plan")
    import torch

    assert torch_dtype("DataType.HALF") == torch.float16 and torch_dtype("FLOAT") == torch.float32
    with pytest.raises(UserError, match="not a float type"):
        torch_dtype("INT8")


def test_unavailable_reason_is_a_sentence_here():
    reason = unavailable_reason("tensorrt_rtx")
    from vae_engines.core.env import gpus

    if not gpus():  # on a CPU-only machine the reason names the missing GPU, not a package
        assert reason and "NVIDIA GPU" in reason, reason
    elif all(g.endswith("(9.0)") for g in gpus()):  # the lent H100 / H200
        assert "compute capability" in reason


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_RTX or not any(c.startswith(("8.", "12.")) for c in __import__(
    "vae_engines.trt.plan", fromlist=["gpu_capabilities"]).gpu_capabilities()),
    reason="needs an RTX-class NVIDIA GPU (compute capability 8.x or 12.x): none on this machine")
def test_a_plan_decodes_through_the_runtime_on_the_callers_tensors(tiny_plan, tiny_onnx):
    import torch

    from vae_engines.runtime import load
    from vae_engines.runtime.onnx import OnnxDecoder

    plan, _ = tiny_plan
    engine = load(plan)
    x = torch.from_numpy(latents(1, 4, seed=3)).cuda()
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        out = engine.decode(x)
    stream.synchronize()
    assert out.is_cuda and out.dtype == torch.float32
    reference = OnnxDecoder(tiny_onnx).decode(x.cpu())
    assert torch.allclose(out.cpu(), reference, atol=1e-3 * float(reference.abs().max()))


# -- the implicit INT8 path for TensorRT 10.x ------------------------------------------------
def _implicit_record(tiny_onnx, kept=()):
    from vae_engines.graph.execute import GraphExecutor
    from vae_engines.graph.io import load_onnx
    from vae_engines.quant.calibrators import calibrate
    from vae_engines.quant.quantize import activation_tensors
    from vae_engines.quant.qdq import quantizable_layers
    from vae_engines.quant.stats import collect

    model = load_onnx(tiny_onnx)
    tensors = activation_tensors(model)
    amax = calibrate(collect(GraphExecutor(model), tensors, latents(2, 4)), tensors, "minmax")  # the table, not its values
    layers = {l.name: l.node for l in quantizable_layers(model)}
    return {"quantization": "implicit", "precision": "int8+fp16", "amax": amax,
            "kept_nodes": [layers[k] for k in kept]}


@needs_rtx
def test_the_range_table_covers_every_tensor_the_network_has(tiny_onnx, rtx):
    """What can be checked of the implicit path without TensorRT 10: the table of an implicit
    variant gives a dynamic range to every tensor of the parsed network (parsed here by
    TensorRT-RTX's ONNX parser, which builds the same network)."""
    from pathlib import Path

    from vae_engines.trt.build import network_from_onnx
    from vae_engines.trt.implicit import network_ranges

    record = _implicit_record(tiny_onnx)
    _, network, _ = network_from_onnx(rtx, Path(tiny_onnx), rtx.logger(), strongly_typed=False)
    ranges, missing = network_ranges(network, record["amax"])
    assert missing == []
    conv_inputs = [network.get_layer(i).get_input(0).name for i in range(network.num_layers)
                   if "CONVOLUTION" in str(network.get_layer(i).type)]
    assert all(name in ranges for name in conv_inputs)


@needs_rtx
def test_implicit_int8_is_refused_in_one_line_where_it_does_not_exist(tmp_path, tiny_onnx, rtx):
    from vae_engines.graph.io import load_onnx, save_onnx, set_metadata
    from vae_engines.trt.build import build_plan

    record = _implicit_record(tiny_onnx)
    graph = set_metadata(load_onnx(tiny_onnx), {"vae_engines.recipe": json.dumps(record)})
    onnx_path = save_onnx(graph, tmp_path / "implicit.onnx")
    with pytest.raises(UserError, match=r"^implicit INT8 is not available with tensorrt_rtx 1\.") as err:
        build_plan(rtx, onnx_path, tmp_path / "implicit.plan", profile=PROFILE, build=BUILD)
    assert "\n" not in str(err.value) and not (tmp_path / "implicit.plan").exists()


class FakeTensorRT10:
    """The few TensorRT 10 names the implicit path uses, recording what is set on them."""

    class BuilderFlag:
        INT8, FP16, OBEY_PRECISION_CONSTRAINTS = "INT8", "FP16", "OBEY"

    class ITensor:
        def __init__(self, name):
            self.name, self.range = name, None

        def set_dynamic_range(self, lo, hi):
            self.range = (lo, hi)

    float16 = "half"


def test_implicit_int8_sets_ranges_flags_and_fp16_pins_on_tensorrt_10():
    from vae_engines.trt.implicit import apply_implicit_int8

    trt = FakeTensorRT10
    latent, conv_out, reshaped = trt.ITensor("latent"), trt.ITensor("conv1d"), trt.ITensor("conv1d_reshaped")

    class Layer:
        def __init__(self, name, kind, inputs, outputs):
            self.name, self.type, self.inputs, self.outputs = name, kind, inputs, outputs
            self.num_inputs, self.num_outputs = len(inputs), len(outputs)
            self.precision, self.output_types = None, {}

        def get_input(self, i):
            return self.inputs[i]

        def get_output(self, i):
            return self.outputs[i]

        def set_output_type(self, i, dtype):
            self.output_types[i] = dtype

    conv = Layer("node_conv1d", "LayerType.CONVOLUTION", [latent], [conv_out])
    shuffle = Layer("node_conv1d_shuffle", "LayerType.SHUFFLE", [conv_out], [reshaped])
    network = SimpleNamespace(num_inputs=1, get_input=lambda i: latent, num_layers=2,
                              get_layer=lambda i: (conv, shuffle)[i])
    flags = []
    config = SimpleNamespace(set_flag=flags.append)
    backend = SimpleNamespace(name="tensorrt", version="10.13.0", trt=trt)
    done = apply_implicit_int8(backend, network, config,
                               {"amax": {"latent": 4.0, "conv1d": 2.0}, "kept_nodes": ["node_conv1d"]})
    assert latent.range == (-4.0, 4.0) and conv_out.range == (-2.0, 2.0) and reshaped.range == (-2.0, 2.0)
    assert flags == ["INT8", "FP16", "OBEY"] and conv.precision == "half" and conv.output_types == {0: "half"}
    assert done == {"dynamic_ranges": 3, "pinned_fp16": ["node_conv1d"]}
    with pytest.raises(UserError, match="no range for 2 network tensor"):
        apply_implicit_int8(backend, network, config, {"amax": {"latent": 4.0}, "kept_nodes": []})
