"""Engine builds with TensorRT-RTX on the CPU, and everything around the runner that runs
without a GPU. Building needs the `tensorrt-rtx` extra (CI installs it)."""

import importlib.util

import numpy as np
import pytest

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
def test_build_qdq_and_named_compute_capability(tmp_path, tiny_onnx, rtx):
    from vae_engines.quant.calibrators import calibrate_amax
    from vae_engines.model.export import load_onnx
    from vae_engines.quant.qdq import qdq_onnx_from_onnx, quantizable_layers
    from vae_engines.trt.build import engine_from_onnx

    layers = quantizable_layers(load_onnx(tiny_onnx))
    x = [np.random.default_rng(0).standard_normal((1, 64, 4)).astype(np.float32)]
    amax = calibrate_amax(tiny_onnx, [l.activation for l in layers], x, calibrator="minmax")
    q = qdq_onnx_from_onnx(tiny_onnx, tmp_path / "q.onnx", amax, layers)
    build = config.BuildParams(compute_capabilities=("12.0",))
    meta = engine_from_onnx(rtx, q, tmp_path / "q.plan", profile=PROFILE, build=build, hop=1920)
    assert meta["target"] == "sm120"
    with pytest.raises(UserError, match="not a TensorRT-RTX target"):
        engine_from_onnx(rtx, q, tmp_path / "x.plan", profile=PROFILE, hop=1920,
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

    if not gpus():  # on this CPU-only machine the runner must say why it cannot run
        assert reason and len(reason) > 10
