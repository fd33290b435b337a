"""Equalization through Snake (quant.equalize): the groups it finds, the same decode in
float, ranges that follow the scales exactly, the torch-side fold equal to the graph's, and
the quantize stage's recipe option."""

import json

import numpy as np
import pytest

from conftest import folded_file, latents, quantize_minmax
from vae_engines.core.errors import UserError
from vae_engines.core.params import Int8Variant, from_mapping
from vae_engines.data.latentset import write_latent_set
from vae_engines.graph.execute import GraphExecutor
from vae_engines.graph.io import RECIPE_KEY, load_onnx, metadata
from vae_engines.quant import equalize as eq
from vae_engines.quant.qdq import quantizable_layers
from vae_engines.quant.quantize import quantize_variant
from vae_engines.quant.stats import collect, quantizable_tensors, read_stats, write_stats


def _uneven_scales(groups, seed=0):
    """Scales spread over two decades, as an extreme equalization would choose."""
    rng = np.random.default_rng(seed)
    return {g.name: np.exp(rng.uniform(-2.3, 2.3, g.channels)) for g in groups}


def test_groups_cover_every_snake_but_the_latent_and_the_audio(tiny_onnx):
    model = load_onnx(tiny_onnx)
    groups = eq.scale_groups(model)
    snakes = eq.find_snakes(model)
    # 5 blocks: the stream into each upsampler (5) and each unit's inner activation (15), plus the last
    # block's stream into the final convolution: 1 + 5 streams + 15 inner = 21 groups; every Snake is in one
    assert len(snakes) == 1 + 5 * 7
    assert len(groups) == 21
    assert {s.y for g in groups for s in g.snakes} == {s.y for s in snakes}
    layers = {l.node: l for l in quantizable_layers(model)}
    consumers = [c.node for g in groups for c, _ in g.consumers]
    # every convolution but the first (it reads the latent, the graph's input) reads an equalized group
    assert sorted(consumers) == sorted(n for n in layers if layers[n].name != "conv1")
    stream = next(g for g in groups if len(g.producers) == 4 and "block.4" in g.producers[0].weight)
    assert any(c.weight == "conv2.weight" for c, _ in stream.consumers)  # the last block's stream ends in conv2


def test_equalized_graph_decodes_the_same_in_float(tiny_onnx):
    """Done-when: max relative difference <= 1e-5 (scales spread over two decades)."""
    model = load_onnx(tiny_onnx)
    groups = eq.scale_groups(model)
    x = latents(2, 16, seed=3)
    before = GraphExecutor(model).decode(x)
    after = GraphExecutor(eq.equalized_graph(model, groups, _uneven_scales(groups))).decode(x)
    assert np.abs(after - before).max() / np.abs(before).max() <= 1e-5
    changed = {i.name for i, j in zip(model.graph.initializer, eq.equalized_graph(model, groups, _uneven_scales(
        groups)).graph.initializer) if i.raw_data != j.raw_data}
    assert "conv1.weight" in changed and "conv2.weight" in changed  # producer of the first, consumer of the last


def test_equalized_ranges_are_the_old_ones_over_s(tiny_onnx):
    """Snake is equivariant: each channel's range in the equalized graph is exactly the old / s,
    which is what the minmax path of an equalized variant uses without collecting again."""
    model = load_onnx(tiny_onnx)
    groups = eq.scale_groups(model)
    layers = quantizable_layers(model)
    tensors = quantizable_tensors(layers)
    x = latents(2, 16, seed=4)
    scales = _uneven_scales(groups, seed=1)
    old = collect(GraphExecutor(model), tensors, x)
    new = collect(GraphExecutor(eq.equalized_graph(model, groups, scales)), tensors, x)
    derived = eq.equalized_channel_amax(groups, scales, dict(zip(old.tensors, old.channel_amax)))
    for t, c in zip(new.tensors, new.channel_amax):
        np.testing.assert_allclose(derived[t], c, rtol=1e-5)
        assert new.amax[new.tensors.index(t)] == pytest.approx(c.max())


def test_the_scales_record_folds_a_state_dict_as_the_graph(tiny_onnx):
    """compiled.int8 builds from the model's own weights: apply_record must give it exactly
    the graph's equalized initializers."""
    from onnx import numpy_helper

    model = load_onnx(tiny_onnx)
    groups = eq.scale_groups(model)
    scales = _uneven_scales(groups, seed=2)
    record = json.loads(json.dumps(eq.scales_record(groups, scales)))  # through JSON, as the ranges file keeps it
    arrays = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    folded = eq.apply_record(arrays, record)
    graph = {i.name: numpy_helper.to_array(i) for i in eq.equalized_graph(model, groups, scales).graph.initializer}
    assert folded
    for name, value in folded.items():
        np.testing.assert_array_equal(value, graph[name])


def test_scales_keep_the_largest_range_and_even_the_rest():
    group = eq.ScaleGroup("t", 3, ("t",), (), ((eq.Conv("n", "w", None, 1), "t"),), ())
    weights = {"w": np.ones((4, 3, 1))}
    s = eq.group_scales(group, {"t": np.array([4.0, 1.0, 0.5])}, weights, migration=1.0)
    np.testing.assert_allclose(np.array([4.0, 1.0, 0.5]) / s, [4.0, 4.0, 4.0])
    s = eq.group_scales(group, {"t": np.array([4.0, 1.0, 0.5])}, weights, migration=0.5)
    assert max(np.array([4.0, 1.0, 0.5]) / s) == pytest.approx(4.0)


def test_params_equalize_keys():
    v = from_mapping(Int8Variant, {"calibrator": "minmax", "equalize": True, "equalize_migration": 0.5}, "int8.x")
    assert v.equalize and v.equalize_migration == 0.5
    with pytest.raises(UserError, match="only used with equalize"):
        from_mapping(Int8Variant, {"calibrator": "minmax", "equalize_migration": 0.5}, "int8.x")
    with pytest.raises(UserError, match="outside 0..1"):
        from_mapping(Int8Variant, {"calibrator": "minmax", "equalize": True, "equalize_migration": 2}, "int8.x")
    with pytest.raises(UserError, match="true or false"):
        from_mapping(Int8Variant, {"calibrator": "minmax", "equalize": "yes"}, "int8.x")


def _quantize(folder, tiny_onnx, name, **recipe):
    return quantize_minmax(folder, tiny_onnx, name, **recipe)


def test_an_equalized_variant_folds_scales_before_qdq(calibrated, tiny_onnx):
    plain = _quantize(calibrated, tiny_onnx, "plain")
    fixed = _quantize(calibrated, tiny_onnx, "fixed", equalize=True, equalize_migration=1.0)
    assert "equalization" not in plain  # a variant without it: the record it always had
    assert fixed["equalization"]["migration"] == 1.0 and fixed["equalization"]["groups"] == 21
    assert fixed["equalization"]["statistics"].startswith("derived")
    # the minmax ranges of an evened tensor: its largest channel kept, so at most the plain range
    for t, a in fixed["amax"].items():
        assert a <= plain["amax"][t] * (1 + 1e-6)
    graph = load_onnx(calibrated / "fixed.onnx")
    assert json.loads(metadata(graph)[RECIPE_KEY])["equalization"] == {"migration": 1.0, "groups": 21}
    assert sum(n.op_type == "QuantizeLinear" for n in graph.graph.node) == len(quantizable_layers(load_onnx(tiny_onnx)))
    assert read_stats(calibrated / "s.npz").channel_amax is not None


def test_migration_is_chosen_by_cross_validation(calibrated, tiny_onnx):
    record = _quantize(calibrated, tiny_onnx, "auto", equalize=True)
    errors = record["equalization"]["cross_validated_error"]
    assert set(errors) == {"none", "0.25", "0.5", "0.75", "1.0"}
    chosen = record["equalization"]["migration"]
    assert errors["none" if chosen is None else str(chosen)] == min(errors.values())


def test_a_folded_torch_decoder_takes_the_same_scales(tiny_checkpoint, tiny_onnx):
    """The compiled INT8 engines build from the torch decoder: equalize_module gives it the
    graph's equalized weights exactly, and it decodes as before."""
    import torch
    from onnx import numpy_helper

    from vae_engines.model.oobleck import fold_decoder, load_checkpoint

    model = load_onnx(tiny_onnx)
    groups = eq.scale_groups(model)
    scales = _uneven_scales(groups, seed=3)
    decoder = fold_decoder(load_checkpoint(tiny_checkpoint).vae)
    x = torch.from_numpy(latents(1, 16, seed=6))
    with torch.no_grad():
        before = decoder(x)
        eq.equalize_module(decoder, json.loads(json.dumps(eq.scales_record(groups, scales))))
        after = decoder(x)
    assert float((after - before).abs().max() / before.abs().max()) <= 1e-5
    graph = {i.name: numpy_helper.to_array(i) for i in eq.equalized_graph(model, groups, scales).graph.initializer}
    state = decoder.state_dict()
    for name in ("conv1.weight", "block.0.res_unit1.snake1.alpha", "block.4.res_unit3.conv2.bias", "conv2.weight"):
        np.testing.assert_array_equal(state[name].numpy(), graph[name].reshape(state[name].shape))


def test_an_equalized_variants_int8_engine_decodes_like_its_graph(calibrated, tiny_onnx, tiny_checkpoint):
    """compile_int8 folds the variant's scales into the weights before it quantizes them: the
    engine decodes as its equalized Q/DQ graph does (within 0.5 dB against fp32)."""
    import torch

    from vae_engines.compiled.build import compile_int8_engine
    from vae_engines.core.params import ProfileParams
    from vae_engines.metrics import peak_psnr
    from vae_engines.runtime import load

    _quantize(calibrated, tiny_onnx, "fixed", equalize=True, equalize_migration=1.0)
    path = calibrated / "fixed.pt2"
    compile_int8_engine(folded_file(tiny_checkpoint, calibrated / "decoder.safetensors"), "fixed",
                        calibrated / "fixed.json", "default", device=torch.device("cpu"),
                        profile=ProfileParams(min_frames=4, opt_frames=8, max_frames=8), out=path)
    held = latents(1, 8, seed=11)
    reference = GraphExecutor(load_onnx(tiny_onnx)).decode(held)
    graph = GraphExecutor(load_onnx(calibrated / "fixed.onnx")).decode(held)
    engine = load(path, on_range="off").decode(held).numpy()
    assert abs(peak_psnr(reference, engine) - peak_psnr(reference, graph)) <= 0.5


def test_snake_constants_the_exporter_shared_are_made_private(tmp_path):
    """A seeded decoder's Snakes all have alpha = inv_beta = 1, which the exporter stores as one
    shared initializer: equalization copies it per Snake rather than skip every group."""
    from conftest import TINY

    from vae_engines.model.export import onnx_from_decoder
    from vae_engines.model.oobleck import build_vae, fold_decoder

    path = onnx_from_decoder(fold_decoder(build_vae(TINY, seed=0)), tmp_path / "seeded.onnx", opset=19)
    model = load_onnx(path)
    snakes = eq.find_snakes(model)
    assert len({s.alpha for s in snakes} | {s.inv_beta for s in snakes}) < len(snakes)  # shared by the exporter
    groups = eq.scale_groups(model)
    assert len(groups) == 21
    x = latents(1, 16, seed=7)
    before = GraphExecutor(model).decode(x)
    graph = eq.equalized_graph(model, groups, _uneven_scales(groups, seed=4))
    assert np.abs(GraphExecutor(graph).decode(x) - before).max() / np.abs(before).max() <= 1e-5
    assert len({s.alpha for s in eq.find_snakes(graph)} | {s.inv_beta for s in eq.find_snakes(graph)}) == 2 * len(snakes)


def test_a_variant_without_equalization_is_the_graph_it_was(calibrated, tiny_onnx):
    """Per-channel maxima in the statistics change nothing for a variant that does not equalize:
    the same graph, byte for byte, as from statistics written without them."""
    data = dict(np.load(calibrated / "s.npz"))
    assert "channel_amax" in data
    np.savez(calibrated / "old.npz", tensors=data["tensors"], amax=data["amax"], hist=data["hist"])
    for stats, name in (("s.npz", "new"), ("old.npz", "old")):
        quantize_variant(name, Int8Variant(calibrator="entropy"), fp32_onnx=tiny_onnx, stats_npz=calibrated / stats,
                         calibration_dir=calibrated / "cal", out_onnx=calibrated / f"{name}.onnx",
                         ranges_json=calibrated / f"{name}.json", device="cpu")
    new, old = load_onnx(calibrated / "new.onnx"), load_onnx(calibrated / "old.onnx")
    assert [i.raw_data for i in new.graph.initializer] == [i.raw_data for i in old.graph.initializer]
    assert json.loads((calibrated / "new.json").read_text())["amax"] == json.loads((calibrated / "old.json").read_text())["amax"]
