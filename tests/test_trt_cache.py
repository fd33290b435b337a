import struct

import pytest

from vae_engines.core.errors import UserError
from vae_engines.model.export import load_onnx
from vae_engines.quant.qdq import insert_qdq, quantizable_layers
from vae_engines.quant.trt_cache import ranges_from_trt_cache, read_trt_cache


def write_cache(path, scales):
    lines = ["TRT-100700-EntropyCalibration2"] + [f"{name}: {struct.pack('>f', s).hex()}" for name, s in scales.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_cache_scales_become_qdq_ranges(tmp_path, tiny_onnx):
    model = load_onnx(tiny_onnx)
    layers = quantizable_layers(model)
    scales = {l.activation: 0.01 * (i + 1) for i, l in enumerate(layers)}
    scales["some_other_tensor"] = 0.5
    cache = write_cache(tmp_path / "calib.cache", scales)
    amax = ranges_from_trt_cache(cache, [l.activation for l in layers])
    assert amax[layers[0].activation] == pytest.approx(0.01 * 127, rel=1e-6)
    q = insert_qdq(model, layers, amax)
    from onnx import numpy_helper

    inits = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
    assert float(inits[f"{layers[2].activation}_scale"]) == pytest.approx(0.03, rel=1e-6)


def test_bad_caches(tmp_path):
    (tmp_path / "a.cache").write_text("not a cache\n")
    with pytest.raises(UserError, match="no 'TRT-...' header"):
        read_trt_cache(tmp_path / "a.cache")
    (tmp_path / "b.cache").write_text("TRT-100700-EntropyCalibration2\nx: zz\n")
    with pytest.raises(UserError, match="b.cache:2"):
        read_trt_cache(tmp_path / "b.cache")
    cache = write_cache(tmp_path / "c.cache", {"latent": 0.1})
    with pytest.raises(UserError, match="no scale for 1 tensor"):
        ranges_from_trt_cache(cache, ["latent", "add_20"])
