"""Loading real-format checkpoints and exporting the folded decoder to ONNX."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from conftest import TINY, make_vae, save_diffusers_folder
from vae_engines.core import params as config
from vae_engines.core.errors import UserError
from vae_engines.model.export import load_onnx, onnx_from_decoder
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


def test_checkpoint_errors_are_one_line(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")
    other = {**TINY, "decoder_channels": 16}
    folder = save_diffusers_folder(make_vae(other), tmp_path / "other")
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "decoder_channels": 8}))
    with pytest.raises(UserError, match="does not match the model architecture") as err:
        load_checkpoint(folder)
    assert "\n" not in str(err.value)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(UserError, match="not a readable safetensors"):
        load_checkpoint(broken)
    with pytest.raises(UserError, match="no config.json"):
        (tmp_path / "empty").mkdir()
        load_checkpoint(tmp_path / "empty")


def test_seeded_default_is_the_acestep_architecture():
    loaded = load_vae(config.ModelParams(architecture="acestep-1.5-small"))
    assert loaded.vae.config.downsampling_ratios == [2, 4, 4, 6, 10] and loaded.latent_channels == 64


def test_fold_decoder_is_exact_and_removes_weight_norm(latent):
    vae = make_vae(seed=6)
    before = decode(vae, latent)
    decoder = fold_decoder(vae)
    assert not any(hasattr(m, "weight_g") for m in decoder.modules())
    assert fold_decoder(vae) is decoder  # idempotent
    np.testing.assert_allclose(decode(vae, latent), before, rtol=1e-5, atol=1e-6)


def test_onnx_matches_pytorch_fp32_and_fp16(tmp_path, tiny_checkpoint):
    import onnx
    import onnxruntime as ort

    loaded = load_checkpoint(tiny_checkpoint)
    decoder = fold_decoder(loaded.vae)
    fp32 = onnx_from_decoder(decoder, tmp_path / "fp32.onnx", opset=18)
    fp16 = onnx_from_decoder(decoder, tmp_path / "fp16.onnx", opset=18, precision="fp16")
    fp16_io = onnx_from_decoder(decoder, tmp_path / "fp16io.onnx", opset=18, precision="fp16", float32_io=False)
    model = load_onnx(fp32)
    assert {n.op_type for n in model.graph.node} >= {"Conv", "ConvTranspose", "Sin"}
    assert "Exp" not in {n.op_type for n in model.graph.node}  # Snake constants folded
    assert not any(i.name.endswith(("weight_g", "weight_v")) for i in model.graph.initializer)
    assert onnx.load(str(fp16_io)).graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    for frames, batch in ((3, 1), (11, 2)):
        x = np.random.default_rng(frames).standard_normal((batch, 64, frames)).astype(np.float32)
        with torch.no_grad():
            ref = decoder(torch.from_numpy(x)).numpy()
        out32 = ort.InferenceSession(str(fp32)).run(None, {"latent": x})[0]
        out16 = ort.InferenceSession(str(fp16)).run(None, {"latent": x})[0]
        assert out32.shape == (batch, 2, frames * 1920)
        assert np.abs(out32 - ref).max() < 1e-5
        # fp16 weights and compute: within 1% of the output's peak
        assert np.abs(out16 - ref).max() < 1e-2 * np.abs(ref).max()


def test_export_is_byte_identical_run_to_run(tmp_path, tiny_checkpoint):
    decoder = fold_decoder(load_checkpoint(tiny_checkpoint).vae)
    a = onnx_from_decoder(decoder, tmp_path / "a.onnx", opset=18).read_bytes()
    b = onnx_from_decoder(decoder, tmp_path / "b.onnx", opset=18).read_bytes()
    assert a == b


def test_corrupted_onnx_is_a_user_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(UserError, match="not a readable ONNX"):
        load_onnx(bad)
