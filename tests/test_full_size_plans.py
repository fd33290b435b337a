"""On the full-size ACE-Step 1.5 decoder, the Q/DQ weights really are int8 in the plan:
an INT8 plan is at most 35% of the fp32 plan (int8 is a quarter of fp32's bytes, plus
float biases, Snake constants and per-channel scales). Builds two ~100-340 MB plans with
TensorRT-RTX on the CPU; about 2 minutes on 2 cores."""

import importlib.util

import numpy as np
import pytest

from vae_engines.core import params as config

pytestmark = [pytest.mark.slow, pytest.mark.skipif(importlib.util.find_spec("tensorrt_rtx") is None,
                                                   reason="TensorRT-RTX not installed")]


def test_int8_plan_is_at_most_35_percent_of_fp32(tmp_path):
    from vae_engines.quant.calibrators import calibrate_amax
    from vae_engines.model.export import load_onnx, onnx_from_decoder
    from vae_engines.model.oobleck import fold_decoder, load_vae
    from vae_engines.quant.qdq import qdq_onnx_from_onnx, quantizable_layers
    from vae_engines.trt.backend import resolve
    from vae_engines.trt.build import engine_from_onnx

    loaded = load_vae(config.ModelParams(source="seeded", architecture="acestep-1.5"))
    fp32 = onnx_from_decoder(fold_decoder(loaded.vae), tmp_path / "fp32.onnx", opset=18)
    del loaded
    layers = quantizable_layers(load_onnx(fp32))
    x = [np.random.default_rng(0).standard_normal((1, 64, 4)).astype(np.float32)]
    amax = calibrate_amax(fp32, [l.activation for l in layers], x, calibrator="minmax")
    int8 = qdq_onnx_from_onnx(fp32, tmp_path / "int8.onnx", amax, layers)
    rtx = resolve("tensorrt_rtx")
    profile = config.ProfileParams(min_frames=2, opt_frames=4, max_frames=8)
    sizes = {}
    for name, onnx_path in (("fp32", fp32), ("int8", int8)):
        plan = tmp_path / f"{name}.plan"
        sizes[name] = engine_from_onnx(rtx, onnx_path, plan, profile=profile, build=config.BuildParams(),
                                       hop=1920)["plan_bytes"]
        plan.unlink()
    assert sizes["int8"] <= 0.35 * sizes["fp32"], sizes
    print(f"plan bytes: fp32 {sizes['fp32']}, int8 {sizes['int8']} ({sizes['int8'] / sizes['fp32']:.1%})")
