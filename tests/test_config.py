import pytest

from conftest import ROOT

from vae_engines.core import params as config
from vae_engines.core.errors import UserError


def parse(data):
    return config.from_mapping(config.Params, data, "")


def test_defaults_and_variants():
    p = parse({"int8": {"e": {"calibrator": "entropy"}, "p": {"calibrator": "percentile", "percentile": 99.9}}})
    assert p.variant_names() == ["fp16", "e", "p"]
    assert p.int8["p"].percentile == 99.9
    assert p.calibration.window(p.profile) == p.profile.opt_frames


def test_shipped_params_file_is_valid():
    p = config.load(str(ROOT / "params.yaml"))
    assert {"entropy", "minmax", "percentile", "entropy_keep_ends"} <= set(p.int8)
    assert p.int8["percentile"].percentile == 99.99
    assert p.int8["entropy_keep_ends"].keep_first == 1 and p.int8["entropy_keep_ends"].keep_last == 1


@pytest.mark.parametrize("data, words", [
    ({"modle": {}}, ["modle", "unknown key", "model"]),
    ({"int8": {"e": {"calibrator": "entopy"}}}, ["int8.e.calibrator", "entopy", "'entropy'"]),
    ({"profile": {"min_frames": 0}}, ["min_frames", "at least 1"]),
    ({"profile": {"min_frames": -3}}, ["min_frames"]),
    ({"profile": {"min_frames": 20, "opt_frames": 16}}, ["min <= opt <= max"]),
    ({"profile": {"opt_frames": 64}}, ["min <= opt <= max"]),
    ({"int8": {"p": {"calibrator": "percentile", "percentile": 0}}}, ["percentile", "(0, 100]"]),
    ({"int8": {"p": {"calibrator": "percentile", "percentile": 100.5}}}, ["(0, 100]"]),
    ({"int8": {"p": {"calibrator": "percentile"}}}, ["required"]),
    ({"int8": {"m": {"calibrator": "minmax", "percentile": 99}}}, ["only used by calibrator 'percentile'"]),
    ({"int8": {"a-b": {"calibrator": "minmax"}}}, ["'a-b'", "DVC"]),
    ({"int8": {"fp16": {"calibrator": "minmax"}}}, ["'fp16'"]),
    ({"build": {"backend": "tensorflow"}}, ["build.backend", "'tensorrt_rtx'"]),
    ({"calibration": {"frames": 0}}, ["calibration.frames"]),
    ({"calibration": {"count": "8"}}, ["calibration.count", "integer"]),
    ({"bench": {"frames": [8, "x"]}}, ["bench.frames[1]"]),
    ({"model": {"source": "checkpoint"}}, ["model.checkpoint", "required"]),
    ({"build": {"compute_capabilities": ["twelve"]}}, ["compute_capabilities"]),
])
def test_bad_params_name_the_key(data, words):
    with pytest.raises(UserError) as err:
        parse(data)
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("model:\n  sede: 1\n")
    with pytest.raises(UserError, match=r"params.yaml: model.sede: unknown key"):
        config.load(bad)
    bad.write_text("model: [\n")
    with pytest.raises(UserError, match="not valid YAML"):
        config.load(bad)
    with pytest.raises(UserError, match="does not exist"):
        config.load(tmp_path / "missing.yaml")


def test_section_hash_changes_with_params():
    a = config.Int8Variant(calibrator="entropy")
    b = config.Int8Variant(calibrator="minmax")
    assert config.section_hash(a) != config.section_hash(b)
    assert config.section_hash(a) == config.section_hash(config.Int8Variant(calibrator="entropy"))
