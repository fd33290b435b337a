"""Loading real-format checkpoints and exporting the folded decoder to ONNX."""

import copy
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from conftest import ROOT, TINY, make_vae, save_diffusers_folder
from vae_engines.core.errors import UserError
from vae_engines.graph.execute import GraphExecutor
from vae_engines.graph.io import load_onnx, ort_session
from vae_engines.model.export import fp16_from_fp32, onnx_from_decoder
from vae_engines.model.oobleck import fold_decoder, load_checkpoint, load_vae


def decode(vae, x):
    with torch.no_grad():
        return vae.decoder(torch.from_numpy(x)).numpy()


@pytest.fixture(scope="module")
def latent():
    return np.random.default_rng(0).standard_normal((1, 64, 5)).astype(np.float32)


def test_diffusers_folder_round_trips_weights(tmp_path, latent):
    vae = make_vae(seed=3)
    loaded = load_checkpoint(save_diffusers_folder(vae, tmp_path / "vae"))
    assert loaded.has_encoder and loaded.hop == 1920 and loaded.sampling_rate == 48000
    np.testing.assert_array_equal(decode(loaded.vae, latent), decode(vae, latent))


def test_checkpoint_root_with_vae_subfolder(tmp_path):
    save_diffusers_folder(make_vae(seed=3), tmp_path / "ckpt" / "vae")
    assert load_checkpoint(tmp_path / "ckpt").hop == 1920


def test_whole_vae_and_decoder_only_safetensors(tmp_path, latent):
    vae = make_vae(seed=4)
    (tmp_path / "config.json").write_text(json.dumps(TINY))
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, str(tmp_path / "vae.safetensors"))
    whole = load_checkpoint(tmp_path / "vae.safetensors")
    assert whole.has_encoder
    np.testing.assert_array_equal(decode(whole.vae, latent), decode(vae, latent))
    save_file({k: v.contiguous() for k, v in vae.decoder.state_dict().items()}, str(tmp_path / "dec.safetensors"))
    dec = load_checkpoint(tmp_path / "dec.safetensors")
    assert not dec.has_encoder
    np.testing.assert_array_equal(decode(dec.vae, latent), decode(vae, latent))


def test_folded_plain_weight_state_dict_loads(tmp_path, latent):
    """A checkpoint whose weight norm was already folded into plain `weight` tensors."""
    vae = make_vae(seed=5)
    reference = decode(vae, latent)
    fold_decoder(vae)
    (tmp_path / "config.json").write_text(json.dumps(TINY))
    state = {k: v.contiguous() for k, v in vae.decoder.state_dict().items() if not k.endswith(("alpha", "beta"))}
    plain = make_vae(seed=5).decoder.state_dict()
    state.update({k: v for k, v in plain.items() if k.endswith(("alpha", "beta"))})
    save_file(state, str(tmp_path / "dec.safetensors"))
    np.testing.assert_allclose(decode(load_checkpoint(tmp_path / "dec.safetensors").vae, latent), reference,
                               atol=1e-5)


def test_stable_audio_style_config_is_read_from_checkpoint(tmp_path):
    cfg = {**TINY, "downsampling_ratios": [2, 4, 4, 8, 8], "sampling_rate": 44100}
    loaded = load_checkpoint(save_diffusers_folder(make_vae(cfg), tmp_path / "sa"))
    assert loaded.hop == 2048 and loaded.sampling_rate == 44100


def test_seeded_takes_the_architecture_of_a_config_folder():
    full = load_vae(SimpleNamespace(source="seeded", checkpoint=str(ROOT / "vae_engines/fixtures/acestep-1.5"),
                                    seed=0))
    assert full.vae.config.channel_multiples == [1, 2, 4, 8, 16] and full.latent_channels == 64
    assert "random weights" in full.description


def test_shipped_fixture_is_the_default_checkpoint():
    from vae_engines.core.params import ModelParams

    loaded = load_vae(SimpleNamespace(**{**ModelParams().__dict__, "checkpoint": str(ROOT / ModelParams().checkpoint)}))
    assert "trained fixture" in loaded.description and loaded.has_encoder


@pytest.mark.parametrize("config, words", [
    ("[1, 2, 3]", "not a JSON object"),
    ('{"_class_name": "AutoencoderKL", "latent_channels": 4}', "describes a AutoencoderKL, not an AutoencoderOobleck"),
    ('{"decoder_channels": "128"}', "decoder_channels is '128', not a positive integer"),
    ('{"downsampling_ratios": [2, 4.5]}', "downsampling_ratios"),
    ("{not json", "not valid JSON"),
])
def test_bad_configs_are_one_line(tmp_path, config, words):
    folder = save_diffusers_folder(make_vae(seed=1), tmp_path / "vae")
    (folder / "config.json").write_text(config)
    with pytest.raises(UserError, match=words.replace("(", r"\(")) as err:
        load_checkpoint(folder)
    assert "\n" not in str(err.value)


def test_checkpoint_errors_are_one_line(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")
    other = {**TINY, "decoder_channels": 16}
    folder = save_diffusers_folder(make_vae(other), tmp_path / "other")
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "decoder_channels": 8}))
    with pytest.raises(UserError, match="does not match the architecture of its config.json") as err:
        load_checkpoint(folder)
    assert "\n" not in str(err.value)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(UserError, match="not a readable safetensors"):
        load_checkpoint(broken)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no config.json"):
        load_checkpoint(tmp_path / "empty")
    with pytest.raises(UserError, match="no .safetensors weights; add them, or set model.source: seeded"):
        load_checkpoint(ROOT / "vae_engines/fixtures/acestep-1.5")


def test_fold_decoder_is_exact_and_removes_weight_norm(latent):
    vae = make_vae(seed=6)
    before = decode(vae, latent)
    decoder = fold_decoder(vae)
    assert not any(hasattr(m, "weight_g") for m in decoder.modules())
    assert fold_decoder(vae) is decoder  # idempotent
    np.testing.assert_allclose(decode(vae, latent), before, rtol=1e-5, atol=1e-6)


def test_onnx_matches_pytorch_fp32_and_fp16(tmp_path, tiny_checkpoint):
    import onnx

    decoder = fold_decoder(load_checkpoint(tiny_checkpoint).vae)
    fp32 = onnx_from_decoder(decoder, tmp_path / "fp32.onnx", opset=19)
    fp16 = fp16_from_fp32(fp32, tmp_path / "fp16.onnx")
    fp16_io = fp16_from_fp32(fp32, tmp_path / "fp16io.onnx", float32_io=False)
    model = load_onnx(fp32)
    assert {n.op_type for n in model.graph.node} >= {"Conv", "ConvTranspose", "Sin"}
    assert "Exp" not in {n.op_type for n in model.graph.node}  # Snake constants folded
    assert not any(i.name.endswith(("weight_g", "weight_v")) for i in model.graph.initializer)
    assert onnx.load(str(fp16_io)).graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    for frames, batch in ((3, 1), (11, 2)):
        x = np.random.default_rng(frames).standard_normal((batch, 64, frames)).astype(np.float32)
        with torch.no_grad():
            ref = decoder(torch.from_numpy(x)).numpy()
            half = copy.deepcopy(decoder).half()(torch.from_numpy(x).half()).float().numpy() if frames == 3 else None
        out32 = ort_session(fp32).run(None, {"latent": x})[0]
        out16 = GraphExecutor(load_onnx(fp16)).decode(x)
        assert out32.shape == (batch, 2, frames * 1920)
        assert np.abs(out32 - ref).max() < 1e-5
        # fp16 rounds every op's result to 2^-11 of its value; ~10 roundings on the path to an output
        # sample keep it within 1% of the peak (measured 0.2%)
        assert np.abs(out16 - ref).max() < 1e-2 * np.abs(ref).max()
        if half is not None:  # the converted graph computes what torch's own half module computes
            # two fp16 computations rounding in their own order: ~10 fp16 steps of the peak at most
            # (10 x 2^-11 = 4.9e-3; measured 2.3e-3)
            assert np.abs(out16 - half).max() < 5e-3 * np.abs(ref).max()


def test_export_is_byte_identical_run_to_run(tmp_path, tiny_checkpoint):
    decoder = fold_decoder(load_checkpoint(tiny_checkpoint).vae)
    a = onnx_from_decoder(decoder, tmp_path / "a.onnx", opset=19).read_bytes()
    b = onnx_from_decoder(decoder, tmp_path / "b.onnx", opset=19).read_bytes()
    assert a == b
    assert fp16_from_fp32(tmp_path / "a.onnx", tmp_path / "a16.onnx").read_bytes() == \
        fp16_from_fp32(tmp_path / "b.onnx", tmp_path / "b16.onnx").read_bytes()


def test_corrupted_onnx_is_a_user_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(UserError, match="not a readable ONNX"):
        load_onnx(bad)


@pytest.mark.parametrize("config", [TINY, dict(TINY, downsampling_ratios=[2, 3, 4, 4, 5])])
def test_the_folded_decoder_file_rebuilds_the_same_decoder_without_diffusers(tmp_path, latent, config):
    """model.folded: the export stage's decoder file loads into a module tree of the project's
    own classes that decodes bitwise like the folded diffusers decoder (odd strides too), with
    the same parameter names, order and shapes (the tune stage hashes them) and the same layer
    specs (even strides: the fused engines'); the shape facts and provenance travel in the
    file. A file that is no folded decoder is a one-line error naming the fix."""
    from vae_engines.model.folded import load_folded, save_folded
    from vae_engines.model.fused import layer_specs
    from vae_engines.model.oobleck import LoadedVAE

    vae = make_vae(config, seed=5)
    decoder = fold_decoder(vae)  # in place: save_folded reads the config alone
    path = save_folded(LoadedVAE(vae, "tiny test weights", True), decoder, tmp_path / "decoder.safetensors")
    folded = load_folded(path)
    assert type(folded.decoder).__module__ == "vae_engines.model.folded"
    hop = int(np.prod(config["downsampling_ratios"]))
    assert (folded.latent_channels, folded.hop, folded.sampling_rate) == (64, hop, 48000)
    assert folded.description == "tiny test weights"
    with torch.no_grad():
        x = torch.from_numpy(latent)
        assert torch.equal(folded.decoder(x), decoder(x))
    assert [(n, p.shape) for n, p in folded.decoder.named_parameters()] == \
        [(n, p.shape) for n, p in decoder.named_parameters()]
    assert list(folded.decoder.state_dict()) == list(decoder.state_dict())
    if all(r % 2 == 0 for r in config["downsampling_ratios"]):  # the fused engines' upsamplers: even strides
        assert layer_specs(folded.decoder) == layer_specs(decoder)
    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    for bad in ("other", "junk", "missing"):
        with pytest.raises(UserError, match="run dvc repro") as err:
            load_folded(tmp_path / f"{bad}.safetensors")
        assert "\n" not in str(err.value)
