"""Per-layer sensitivity and the auto variant's greedy choice, on the tiny model."""

import numpy as np
import pytest

from vae_engines.core import params as config
from vae_engines.quant.calibrators import calibrate_amax
from vae_engines.core.errors import UserError
from vae_engines.model.export import load_onnx
from vae_engines.quant.qdq import insert_qdq, quantizable_layers
from vae_engines.quant.sensitivity import auto_keep, layer_sensitivity, quality, reference_decode


@pytest.fixture(scope="module")
def setup(tiny_onnx):
    base = load_onnx(tiny_onnx)
    layers = quantizable_layers(base)
    latents = np.random.default_rng(3).standard_normal((2, 64, 6)).astype(np.float32)
    amax = calibrate_amax(tiny_onnx, [l.activation for l in layers], (x[None] for x in latents), calibrator="minmax")
    return base, layers, amax, latents, reference_decode(tiny_onnx, latents)


def test_sensitivity_rows_are_in_network_order(setup):
    base, layers, amax, latents, ref = setup
    rows = layer_sensitivity(base, layers, amax, latents, ref)
    assert [r["layer"] for r in rows] == [l.name for l in layers]
    all_int8 = quality(insert_qdq(base, layers, amax),
                       latents, ref)["peak_psnr_db"]
    # one layer alone costs less than all of them together
    assert min(r["peak_psnr_db"] for r in rows) > all_int8


def test_auto_keeps_the_fewest_layers_for_the_target(setup):
    base, layers, amax, latents, ref = setup
    easy = auto_keep(base, layers, amax, latents, ref, target_db=10.0)
    assert easy["kept_in_float"] == [] and easy["achieved"]["peak_psnr_db"] >= 10.0
    full = easy["steps"][0]["peak_psnr_db"]
    hard = auto_keep(base, layers, amax, latents, ref, target_db=full + 6.0)
    assert hard["kept_in_float"] and hard["achieved"]["peak_psnr_db"] >= full + 6.0
    assert hard["kept_in_float"] == hard["ranking"][: len(hard["kept_in_float"])]  # greedy, most sensitive first
    assert all(s["peak_psnr_db"] < full + 6.0 for s in hard["steps"][:-1])  # it stopped at the first success


def test_auto_params_are_validated():
    v = config.from_mapping(config.Int8Variant, {"calibrator": "entropy", "target_psnr_db": 40}, "int8.a")
    assert v.target_reference == "fp32"
    with pytest.raises(UserError, match="target_psnr_db"):
        config.from_mapping(config.Int8Variant, {"calibrator": "entropy", "target_psnr_db": 500}, "int8.a")
    with pytest.raises(UserError, match="target_reference"):
        config.from_mapping(config.Int8Variant, {"calibrator": "entropy", "target_psnr_db": 40,
                                                 "target_reference": "bf16"}, "int8.a")
