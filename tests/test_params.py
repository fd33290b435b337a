import dataclasses

import pytest
import yaml

from conftest import ROOT
from vae_engines.core import params as config
from vae_engines.core.errors import UserError


def parse(data):
    return config.from_mapping(config.Params, data, "")


def test_params_yaml_is_the_code_defaults():
    """params.yaml is the one place defaults live: the code's defaults equal it."""
    shipped = config.load(ROOT / "params.yaml")
    defaults = config.Params()
    for f in dataclasses.fields(config.Params):
        if f.name != "int8":  # the variants are the user's list, not defaults
            assert getattr(shipped, f.name) == getattr(defaults, f.name), f.name


def test_shipped_variants():
    p = config.load(ROOT / "params.yaml")
    assert {"entropy", "minmax", "minmax_fused", "percentile", "mse", "minmax_margin", "auto_40db",
            "speed_40db", "minmax_fp8"} == set(p.int8)
    assert p.int8["minmax_margin"].range_margin == "auto"
    assert {name for name, v in p.int8.items() if v.format == "fp8"} == {"minmax_fp8"}
    assert all(v.float_type == "fp16" for v in p.int8.values())
    assert p.int8["speed_40db"].placement == "fused" and p.int8["speed_40db"].is_auto
    assert p.variant_names()[0] == "fp16" and p.variant("fp16") is None
    with pytest.raises(UserError, match="no variant 'nope'; known: fp16, entropy"):
        p.variant("nope")


@pytest.mark.parametrize("data, words", [
    ({"modle": {}}, ["modle", "unknown key", "model"]),
    ({"model": {"architecture": "acestep-1.5"}}, ["model.architecture", "config.json"]),
    ({"int8": {"e": {"calibrator": "entopy"}}}, ["int8.e.calibrator", "entopy", "'entropy'"]),
    ({"int8": {"e": {"calibrator": "entropy", "num_bins": 512}}}, ["num_bins", "2048 bins"]),
    ({"profile": {"min_frames": 0}}, ["min_frames", "at least 1"]),
    ({"profile": {"min_frames": 40, "opt_frames": 16}}, ["min <= opt <= max"]),
    ({"int8": {"p": {"calibrator": "percentile", "percentile": 100.5}}}, ["(0, 100]"]),
    ({"int8": {"p": {"calibrator": "percentile"}}}, ["required"]),
    ({"int8": {"m": {"calibrator": "minmax", "percentile": 99}}}, ["only used by calibrator 'percentile'"]),
    ({"int8": {"a-b": {"calibrator": "minmax"}}}, ["'a-b'", "DVC"]),
    ({"int8": {"my variant": {"calibrator": "minmax"}}}, ["'my variant'", "not usable"]),
    ({"int8": {"fp16": {"calibrator": "minmax"}}}, ["'fp16'"]),
    ({"int8": {"t": {"calibrator": "trt_cache", "cache": "/tmp/calib.cache"}}}, ["data/trt_caches/", "copy it"]),
    ({"int8": {"t": {"calibrator": "trt_cache"}}}, ["cache", "trt_cache"]),
    ({"int8": {"e": {"calibrator": "entropy", "float_type": "fp8"}}}, ["float_type", "'fp16'", "format: fp8"]),
    ({"int8": {"f": {"calibrator": "minmax", "format": "fp4"}}}, ["int8.f.format", "'fp8'"]),
    ({"int8": {"f": {"calibrator": "minmax", "format": "fp8", "placement": "fused"}}}, ["int8.f.placement",
                                                                                         "conv_inputs"]),
    ({"int8": {"f": {"calibrator": "minmax", "format": "fp8", "quantization": "implicit"}}}, ["int8.f.format",
                                                                                               "explicit"]),
    ({"build": {"backend": "tensorflow"}}, ["build.backend", "'tensorrt_rtx'"]),
    ({"calibration": {"count": "8"}}, ["calibration.count", "integer"]),
    ({"bench": {"frames": [8, "x"]}}, ["bench.frames[1]"]),
    ({"bench": {"frames": [16, 500]}}, ["500 frames is outside the engines' profile 16..128"]),
    ({"bench": {"repeats": 1}}, ["repeats >= 3"]),
    ({"bench": {"batches": [4]}}, ["bench.batches", "profile's batch 1..1"]),
    ({"compute": {"device": "tpu"}}, ["compute.device", "'cuda'"]),
    ({"holdout": {"fraction": 1.0}}, ["holdout.fraction"]),
    ({"calibration": {"source": "synthetic"}, "holdout": {"source": "synthetic", "seed": 0}},
     ["holdout.seed", "another seed"]),
    ({"export": {"opset": 18}, "int8": {"e": {"calibrator": "entropy"}}}, ["opset >= 19", "float_type: fp32"]),
    ({"build": {"compute_capabilities": ["twelve"]}}, ["compute_capabilities"]),
    ({"int8": {"m": {"calibrator": "minmax"}}, "compile": {"int8": ["m"]}},
     ["compile.int8", "needs fp16 in compile.precisions", "timed against"]),
    ({"report": {"quality_target_db": 0}}, ["report.quality_target_db", "e.g. 40"]),
])
def test_bad_params_name_the_key(data, words):
    with pytest.raises(UserError) as err:
        parse(data)
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_fp32_variants_may_use_an_older_opset():
    p = parse({"export": {"opset": 18}, "int8": {"e": {"calibrator": "entropy", "float_type": "fp32"}}})
    assert p.export.opset == 18


def test_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("model:\n  sede: 1\n")
    with pytest.raises(UserError, match=r"params.yaml: model.sede: unknown key"):
        config.load(bad)
    bad.write_text("model: [\n")
    with pytest.raises(UserError, match="not valid YAML"):
        config.load(bad)
    with pytest.raises(UserError, match="does not exist; run from the project root") as err:
        config.load(tmp_path / "missing.yaml")
    assert "--params" not in str(err.value)


def test_section_hash_changes_with_params():
    a = config.Int8Variant(calibrator="entropy")
    assert config.section_hash(a) != config.section_hash(config.Int8Variant(calibrator="minmax"))
    assert config.section_hash(a) == config.section_hash(config.Int8Variant(calibrator="entropy"))


def test_readme_sweep_keys_exist_or_use_plus():
    """`dvc exp run -S key=value` fails for keys params.yaml lacks; the README's sweeps
    either name existing keys or add them with `++`."""
    import re

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    readme = (ROOT / "README.md").read_text()
    for key in re.findall(r"-S '?([+]{0,2}[A-Za-z_][\w.]*)=", readme):
        if key.startswith("++"):
            continue
        node = params
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"README sets {key}, absent from params.yaml; use ++{key}"
            node = node[part]


def test_every_choice_table_is_complete():
    """Each choice's names live in core.choices; the code's table for it covers every name."""
    from vae_engines.core.choices import Calibrator, EngineKind, Placement
    from vae_engines.quant.calibrators import CALIBRATORS
    from vae_engines.quant.qdq import PLACEMENTS
    from vae_engines.quant.quantize import RANGES
    from vae_engines.runtime.load import KINDS

    assert set(RANGES) == set(Calibrator)
    assert set(CALIBRATORS) == {c for c in Calibrator if c.from_statistics}
    assert set(PLACEMENTS) == set(Placement)
    assert set(KINDS) == set(EngineKind)
    with pytest.raises(UserError, match="one of 'conv_inputs', 'fused'"):
        parse({"int8": {"e": {"calibrator": "entropy", "placement": "everywhere"}}})
