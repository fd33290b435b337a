"""A margin on the calibrated ranges (quant.margin, recipe key range_margin): a fixed factor
widens every range by it; `auto` picks the candidate that decodes each half of the calibration
latents best from the other half's ranges, and says so in the record; a variant without the
key keeps the ranges it had; bad settings are one-line errors."""

import json

import pytest

from conftest import quantize_minmax
from vae_engines.core.errors import UserError
from vae_engines.core.params import Int8Variant, from_mapping
from vae_engines.graph.io import RECIPE_KEY, load_onnx, metadata
from vae_engines.quant.margin import INPUT_MARGINS, MARGINS


def test_a_fixed_margin_widens_every_range(calibrated, tiny_onnx):
    plain = quantize_minmax(calibrated, tiny_onnx, "plain")
    wide = quantize_minmax(calibrated, tiny_onnx, "wide", range_margin=1.2)
    assert "range_margin" not in plain  # a variant without it: the record it always had
    assert wide["range_margin"] == {"margin": 1.2, "chosen": "range_margin"}
    for tensor, amax in plain["amax"].items():
        assert wide["amax"][tensor] == pytest.approx(amax * 1.2, rel=1e-6)
    assert json.loads(metadata(load_onnx(calibrated / "wide.onnx"))[RECIPE_KEY])["range_margin"] == 1.2


def test_auto_chooses_the_margin_by_cross_validation(calibrated, tiny_onnx):
    plain = quantize_minmax(calibrated, tiny_onnx, "plain")
    auto = quantize_minmax(calibrated, tiny_onnx, "auto", range_margin="auto")
    record = auto["range_margin"]
    errors = record["cross_validated_error"]  # by margin, then the latent's own margin
    assert set(errors) == {str(m) for m in MARGINS}
    assert all(set(row) == {str(m) for m in INPUT_MARGINS} and min(row.values()) > 0 for row in errors.values())
    assert errors[str(record["margin"])][str(record["latent_margin"])] == min(min(r.values()) for r in errors.values())
    assert "calibration latents' halves" in record["chosen"]
    for tensor, amax in plain["amax"].items():
        factor = record["latent_margin"] if tensor == "latent" else record["margin"]
        assert auto["amax"][tensor] == pytest.approx(amax * factor, rel=1e-6)
    meta = json.loads(metadata(load_onnx(calibrated / "auto.onnx"))[RECIPE_KEY])
    assert (meta["range_margin"], meta["latent_range_margin"]) == (record["margin"], record["latent_margin"])
    # a histogram calibrator is cross-validated the same way (its ranges from each half's histograms)
    entropy = quantize_minmax(calibrated, tiny_onnx, "e", calibrator="entropy", range_margin="auto")
    assert entropy["range_margin"]["margin"] in MARGINS and entropy["range_margin"]["latent_margin"] in INPUT_MARGINS


def test_a_latent_kept_in_float_gets_no_margin_of_its_own(calibrated, tiny_onnx):
    """Where the plan leaves the first convolution (the latent's reader) in float, only the one
    margin is chosen."""
    auto = quantize_minmax(calibrated, tiny_onnx, "f", range_margin="auto", keep_first=1)
    record = auto["range_margin"]
    assert "latent_margin" not in record
    assert all(set(row) == {"same"} for row in record["cross_validated_error"].values())


def test_bad_margins_are_one_line_errors():
    assert from_mapping(Int8Variant, {"calibrator": "minmax", "range_margin": "auto"}, "int8.x").range_margin == "auto"
    for bad, message in ((0.9, "outside 1..4"), (5, "outside 1..4"), ("wide", "is not")):
        with pytest.raises(UserError, match=message):
            from_mapping(Int8Variant, {"calibrator": "minmax", "range_margin": bad}, "int8.x")
    for recipe in ({"calibrator": "search"}, {"calibrator": "trt_cache", "cache": "data/trt_caches/c"}):
        with pytest.raises(UserError, match="give range_margin a number"):
            from_mapping(Int8Variant, {**recipe, "range_margin": "auto"}, "int8.x")


def test_auto_scores_each_candidate_on_the_held_windows_first_frames(calibrated, tiny_onnx, monkeypatch):
    """Each candidate pair is decoded on the held half's first SCORED_FRAMES frames (a
    full-size window would cost a whole decode per pair), while each half's ranges come
    from all of its frames; the choice is still one of the candidates."""
    from vae_engines.graph.execute import GraphExecutor
    from vae_engines.quant import margin

    monkeypatch.setattr(margin, "SCORED_FRAMES", 5)  # the calibration windows hold 16 frames
    decoded = []
    decode = GraphExecutor.decode
    monkeypatch.setattr(GraphExecutor, "decode",
                        lambda self, x, **kw: decoded.append(x.shape[-1]) or decode(self, x, **kw))
    record = quantize_minmax(calibrated, tiny_onnx, "short", range_margin="auto")["range_margin"]
    assert decoded and set(decoded) == {5}
    assert len(decoded) == 2 * (1 + len(MARGINS) * len(INPUT_MARGINS))  # per half: its reference, then each pair
    assert record["margin"] in MARGINS and record["latent_margin"] in INPUT_MARGINS
