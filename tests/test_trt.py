"""Engine builds with TensorRT-RTX on the CPU, and everything around the runner that runs
without a GPU. Building needs the `tensorrt-rtx` extra (CI installs it)."""

import importlib.util

import numpy as np
import pytest

from conftest import latents
from vae_engines.core import params as config
from vae_engines.core.errors import UserError
from vae_engines.trt import backend as backend_mod
from vae_engines.trt.runner import check_shape, numpy_dtype, unavailable_reason, verify_plan

HAS_RTX = importlib.util.find_spec("tensorrt_rtx") is not None
needs_rtx = pytest.mark.skipif(not HAS_RTX, reason="TensorRT-RTX not installed: pip install 'vae-engines[tensorrt-rtx]'")
PROFILE = config.ProfileParams(min_frames=2, opt_frames=4, max_frames=8)
BUILD = config.BuildParams()


@pytest.fixture(scope="module")
def rtx():
    return backend_mod.resolve("tensorrt_rtx")


@pytest.fixture(scope="module")
def tiny_plan(tmp_path_factory, tiny_onnx, rtx):
    from vae_engines.trt.build import engine_from_onnx

    out = tmp_path_factory.mktemp("plans") / "fp32.plan"
    meta = engine_from_onnx(rtx, tiny_onnx, out, profile=PROFILE, build=BUILD, hop=1920,
                            timing_cache_path=out.with_suffix(".timing.cache"))
    return out, meta


@needs_rtx
def test_build_writes_plan_and_metadata(tiny_plan):
    plan, meta = tiny_plan
    assert plan.stat().st_size == meta["plan_bytes"] > 0
    assert meta["backend"] == "tensorrt_rtx" and meta["profile"]["opt"] == [1, 64, 4]
    assert meta["inputs"][0]["name"] == "latent" and meta["outputs"][0]["name"] == "audio"
    assert meta["num_layers"] > 37 and meta["target"].startswith("portable")
    assert verify_plan(plan)["plan_sha256"] == meta["plan_sha256"]
    assert not list(plan.parent.glob(".tmp-*"))


@needs_rtx
@pytest.mark.parametrize("float_type", ["fp16", "fp32"])
def test_build_qdq_records_int8_convolutions(tmp_path, tiny_onnx, rtx, float_type):
    from vae_engines.graph.execute import GraphExecutor
    from vae_engines.graph.io import load_onnx, save_onnx
    from vae_engines.quant.calibrators import calibrate
    from vae_engines.quant.quantize import qdq_graph
    from vae_engines.quant.qdq import quantizable_layers
    from vae_engines.quant.stats import collect
    from vae_engines.trt.build import engine_from_onnx

    model = load_onnx(tiny_onnx)
    layers = quantizable_layers(model)
    amax = calibrate(collect(GraphExecutor(model), layers, latents(1, 4)), [l.activation for l in layers], "minmax")
    q = save_onnx(qdq_graph(model, layers[1:], amax, float_type), tmp_path / "q.onnx")
    meta = engine_from_onnx(rtx, q, tmp_path / "q.plan", profile=PROFILE, build=BUILD, hop=1920)
    assert meta["precisions"]["convolutions"] == {"int8": 36, float_type: 1, **({"fp32": 0} if float_type == "fp16"
                                                                                else {"fp16": 0})}


@needs_rtx
def test_build_for_a_named_compute_capability(tmp_path, tiny_onnx, rtx):
    from vae_engines.trt.build import engine_from_onnx

    build = config.BuildParams(compute_capabilities=("12.0",))
    meta = engine_from_onnx(rtx, tiny_onnx, tmp_path / "q.plan", profile=PROFILE, build=build, hop=1920)
    assert meta["target"] == "sm120"
    with pytest.raises(UserError, match="not a TensorRT-RTX target"):
        engine_from_onnx(rtx, tiny_onnx, tmp_path / "x.plan", profile=PROFILE, hop=1920,
                         build=config.BuildParams(compute_capabilities=("9.0",)))


@needs_rtx
def test_parser_errors_name_nodes_and_keep_the_old_plan(tmp_path, tiny_onnx, rtx, tiny_plan):
    import onnx

    from vae_engines.trt.build import engine_from_onnx

    model = onnx.load(str(tiny_onnx))
    model.graph.node[0].op_type = "NoSuchOp"
    bad = tmp_path / "bad.onnx"
    onnx.save(model, str(bad))
    plan, _ = tiny_plan
    before = plan.read_bytes()
    with pytest.raises(UserError, match=r"cannot parse .*\[node_") as err:
        engine_from_onnx(rtx, bad, plan, profile=PROFILE, build=BUILD, hop=1920)
    assert "\n" not in str(err.value)
    assert plan.read_bytes() == before


@needs_rtx
def test_profile_too_large_for_tensorrt(tmp_path, tiny_onnx, rtx):
    from vae_engines.trt.build import engine_from_onnx

    huge = config.ProfileParams(min_frames=1, opt_frames=1, max_frames=600_000, max_batch=2)
    with pytest.raises(UserError, match="over TensorRT's 2\\^31-1"):
        engine_from_onnx(rtx, tiny_onnx, tmp_path / "p.plan", profile=huge, build=BUILD, hop=1920)


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


def test_runner_checks_without_gpu():
    check_shape((1, 64, 16), [1, 64, 8], [1, 64, 32])
    with pytest.raises(UserError, match="outside the engine's profile"):
        check_shape((1, 64, 40), [1, 64, 8], [1, 64, 32])
    with pytest.raises(UserError):
        check_shape((64, 16), [1, 64, 8], [1, 64, 32])
    assert numpy_dtype("DataType.HALF") == np.float16 and numpy_dtype("FLOAT") == np.float32
    with pytest.raises(UserError, match="no numpy equivalent"):
        numpy_dtype("BF16")


def test_unavailable_reason_is_a_sentence_here():
    reason = unavailable_reason("tensorrt_rtx")
    from vae_engines.core.env import gpus

    if not gpus():  # on a CPU-only machine the runner names the missing GPU, not a package
        assert reason and "NVIDIA GPU" in reason, reason


def _cuda_python_gpu() -> bool:
    try:
        from cuda.bindings import runtime as cudart

        err, count = cudart.cudaGetDeviceCount()
        return int(err) == 0 and count > 0
    except Exception:
        return False


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda_python_gpu(), reason="needs cuda-python and an NVIDIA GPU (none on this machine)")
def test_cuda_stream_buffers_events_and_release():
    """The runner's CUDA half, which needs no engine: buffers allocated once and reused,
    copies round-trip, events time work on the stream, and close() releases everything."""
    from vae_engines.trt.cuda import CudaStream

    x = np.arange(1 << 20, dtype=np.float32)
    with CudaStream() as cuda:
        first = cuda.upload("a", x)
        assert cuda.upload("a", x[: 1 << 10]) == first  # smaller: the same buffer
        out = cuda.download("a", np.empty_like(x[: 1 << 10]))
        np.testing.assert_array_equal(out, x[: 1 << 10])
        ms = cuda.time_ms(lambda: cuda.upload("b", x))
        assert ms > 0
        assert set(cuda.buffers) == {"a", "b"}
    assert cuda.buffers == {} and cuda.stream is None
