"""The runtime API on the CPU: a compiled engine of the embedded default built, loaded and
decoding like fp32; the diffusers adapter decoding like the model it replaces; streaming
stitched like the full decode; load() picking each kind, and refusing what cannot run."""

import json

import numpy as np
import pytest
import torch

from conftest import ROOT, latents
from vae_engines.core.errors import UserError
from vae_engines.core.params import ModelParams, ProfileParams
from vae_engines.metrics import peak_psnr
from vae_engines.model.oobleck import fold_decoder, load_vae
from vae_engines.runtime import as_diffusers, load
from vae_engines.runtime.base import Shape
from vae_engines.runtime.eager import EagerDecoder
from vae_engines.runtime.stream import decode_windowed, windows

FIXTURE = ModelParams(checkpoint=str(ROOT / "vae_engines/fixtures/acestep15-small"))
SHAPE = Shape(channels=64, hop=1920, sampling_rate=48000)


@pytest.fixture(scope="module")
def fixture_vae():
    return load_vae(FIXTURE).vae


@pytest.fixture(scope="module")
def compiled_engine(tmp_path_factory):
    """The embedded default's decoder as a compiled PyTorch engine (CPU, frames 8..16), built as
    the compile stage builds one: from the folded decoder file the export stage writes."""
    from vae_engines.compiled.build import compile_engine
    from vae_engines.model.folded import save_folded

    torch.set_num_threads(2)
    folder = tmp_path_factory.mktemp("torch")
    loaded = load_vae(FIXTURE)
    decoder = save_folded(loaded, fold_decoder(loaded.vae), folder / "decoder.safetensors")
    path = folder / "fp32.pt2"
    compile_engine(decoder, "fp32", "default", device=torch.device("cpu"),
                   profile=ProfileParams(min_frames=8, opt_frames=16, max_frames=16), out=path)
    return path


def test_channels_last_decoder_computes_the_folded_decoder(fixture_vae):
    from vae_engines.model.channels_last import ChannelsLastDecoder

    decoder = fold_decoder(fixture_vae)
    x = torch.from_numpy(latents(2, 7, seed=4))
    with torch.no_grad():
        np.testing.assert_allclose(ChannelsLastDecoder(decoder)(x).numpy(), decoder(x).numpy(), atol=2e-5)


def test_a_compiled_engine_builds_loads_and_decodes_like_fp32(compiled_engine, fixture_vae):
    record = json.loads(compiled_engine.with_suffix(".json").read_text())
    assert record["kind"] == "torch" and record["precision"] == "fp32" and record["frames"] == [8, 16]
    assert record["kernels"] == "inductor" and record["model"].startswith("trained fixture")  # provenance kept
    assert record["device"] == "cpu" and record["torch"] == torch.__version__ and record["compiled_artifacts_bytes"] > 0
    # fp32 against fp32, differing only in summation order and fusion (~1e-6 relative: ~120 dB peak
    # PSNR); 100 dB leaves a 10x margin in amplitude and still fails any real difference
    assert record["check_psnr_vs_fp32_db"] > 100
    engine = load(compiled_engine)  # as an app would: from the file, the record beside it
    assert engine.kind == "torch" and engine.describe()["executed"].startswith("fp32")
    x = torch.from_numpy(latents(1, 12, seed=5))
    reference = EagerDecoder(fold_decoder(fixture_vae), SHAPE, "fp32", "cpu").decode(x)
    out = engine.decode(x)
    assert out.dtype == torch.float32 and out.shape == (1, 2, 12 * 1920)
    assert peak_psnr(reference, out) > 100
    with pytest.raises(UserError, match=r"20 frames is outside the engine's 8..16"):
        engine.decode(torch.zeros(1, 64, 20))
    with pytest.raises(UserError, match=r"takes \[B, 64, T\]"):
        engine.decode(torch.zeros(1, 32, 12))


def test_a_reduce_overhead_package_replays_one_graph_per_shape(monkeypatch):
    """runtime.compiled.CudaGraphs, the graphs a reduce-overhead package runs: a shape's first
    call runs the function (it compiles), its second captures it, later ones only copy the input
    in, replay and copy the output out -- a copy the caller owns, per shape. No GPU here: a
    stand-in graph re-runs the captured function's arithmetic on the captured buffers at replay
    (what a CUDA graph does with the kernels); the real one ran on the lent H100
    (benchmarks/results/gpu_units/h100_run5_lean/package_graphs/: 222 dB against the module)."""
    import contextlib

    from vae_engines.runtime.compiled import CudaGraphs

    calls = []

    def fn(x):
        calls.append(tuple(x.shape))
        return x * 2

    class Graph:
        def replay(self):
            _, static_in, static_out = next(v for v in graphs.graphs.values() if v[0] is self)
            static_out.copy_(static_in * 2)

    monkeypatch.setattr(torch.cuda, "graph_pool_handle", lambda: "pool")
    monkeypatch.setattr(torch.cuda, "CUDAGraph", Graph)
    monkeypatch.setattr(torch.cuda, "graph", lambda graph, pool: contextlib.nullcontext())
    graphs = CudaGraphs(fn)
    a, b = torch.arange(6.0).reshape(1, 2, 3), torch.ones(1, 2, 5)
    outs = [graphs(a), graphs(a), graphs(a + 1), graphs(b), graphs(a + 2)]
    assert calls == [(1, 2, 3), (1, 2, 3), (1, 2, 5)]  # eager, captured; later calls of that shape replay only
    assert torch.equal(outs[1], a * 2) and torch.equal(outs[2], (a + 1) * 2) and torch.equal(outs[4], (a + 2) * 2)
    assert outs[2].data_ptr() != outs[4].data_ptr()  # each call's own copy: the next replay leaves it alone
    assert len(graphs.graphs) == 1 and len(graphs.seen) == 2


def test_a_replaced_package_is_refused(compiled_engine, tmp_path):
    copy = tmp_path / "fp32.pt2"
    copy.write_bytes(compiled_engine.read_bytes()[:-100])
    copy.with_suffix(".json").write_text(compiled_engine.with_suffix(".json").read_text())
    with pytest.raises(UserError, match="truncated or replaced"):
        load(copy)


def test_the_diffusers_adapter_decodes_like_the_model_it_replaces(compiled_engine, fixture_vae):
    z = torch.from_numpy(latents(1, 16, seed=6))
    with torch.no_grad():
        expected = fixture_vae.decode(z).sample
    vae = as_diffusers(load(compiled_engine), fixture_vae)
    out = vae.decode(z)
    assert out.sample.dtype == z.dtype and out[0] is out.sample
    assert peak_psnr(expected, out.sample) > 100
    (sample,) = vae.decode(z, return_dict=False)
    assert torch.equal(sample, out.sample)
    assert vae.config.sampling_rate == 48000 and hasattr(vae, "encode")  # everything else is the model's
    with pytest.raises(AttributeError, match="only decode"):
        as_diffusers(load(compiled_engine)).encode


def test_streaming_yields_pieces_in_order_that_stitch_into_the_full_decode(fixture_vae):
    engine = EagerDecoder(fold_decoder(fixture_vae), SHAPE, "fp32", "cpu")
    x = torch.from_numpy(latents(1, 60, seed=7))
    full = engine.decode(x)
    pieces = list(engine.stream(x, window=24, overlap=16))
    assert len(pieces) > len(windows(60, 24, 16))  # final pieces and crossfades, as they become final
    stitched = torch.cat(pieces, dim=-1)
    assert stitched.shape == full.shape
    assert peak_psnr(full, stitched) > 60  # 16 frames of overlap: 94 dB on this latent, 55 dB with 8
    for overlap in (4, 12, 20):  # any overlap, up to most of the window: the right length, in order
        assert decode_windowed(engine, x, 24, overlap).shape == full.shape
    assert torch.equal(decode_windowed(engine, x, 24, 16), stitched)
    assert torch.equal(decode_windowed(engine, x, 60, 8), full)  # one window: the full decode itself
    with pytest.raises(UserError, match="overlap < window"):
        list(engine.stream(x, window=8, overlap=8))


def test_load_picks_the_kind_from_the_record_and_refuses_what_cannot_run(tmp_path, tiny_onnx):
    from vae_engines.runtime.onnx import OnnxDecoder
    from vae_engines.trt.plan import gpu_capabilities

    onnx_engine = load(tiny_onnx)
    assert isinstance(onnx_engine, OnnxDecoder) and onnx_engine.describe()["executed"] == "fp32"
    assert onnx_engine.decode(latents(1, 3)).shape == (1, 2, 3 * 1920)
    plan = tmp_path / "fp16.plan"
    plan.write_bytes(b"plan")
    with pytest.raises(UserError, match="no build record beside it"):
        load(plan)
    import hashlib

    record = {"kind": "tensorrt_rtx", "backend": "tensorrt_rtx", "plan_bytes": 4,
              "plan_sha256": hashlib.sha256(b"plan").hexdigest()}
    plan.with_suffix(".json").write_text(json.dumps(record))
    if not gpu_capabilities():
        with pytest.raises(UserError, match="cannot run here: no NVIDIA GPU on this machine"):
            load(plan)
    plan.with_suffix(".json").write_text(json.dumps({**record, "kind": "tpu"}))
    with pytest.raises(UserError, match="names engine kind 'tpu'"):
        load(plan)


def test_a_latent_with_nan_or_inf_is_refused_where_it_enters(tiny_onnx):
    """A diverged generation is named at decode, not found later as NaN audio; the check can be
    skipped (it reads one flag back from the device)."""
    engine = load(tiny_onnx)
    x = torch.from_numpy(latents(1, 4, seed=8))
    x[0, 5, 2] = float("inf")
    with pytest.raises(UserError, match=r"NaN/inf values \(the first at batch 0, channel 5, frame 2\)"):
        engine.decode(x)
    with pytest.raises(UserError, match="NaN/inf"):
        list(engine.stream(x, window=2, overlap=1))
    assert not torch.isfinite(engine.decode(x, check_finite=False)).all()
