"""The INT8 range guard (runtime.guard, issue 38) on CPU engines of the tiny model: an ONNX
Q/DQ graph on ONNX Runtime and a compiled INT8 engine (fused op, its CPU reference), both of
one minmax variant. Each records the latent range it was calibrated on; a latent 10x beyond
it is refused in one line naming the factor; one within it decodes exactly as before; the
warning switch warns and decodes; the check costs one readback, as the finite check did; a
float engine has no guard; a stage refusing a latent prints one line, no traceback."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

# Triton's interpreter where there is no GPU (as tests/test_kernels.py): set before Triton loads
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from conftest import ROOT, latents  # noqa: E402
from vae_engines.compiled.build import compile_int8_engine  # noqa: E402
from vae_engines.core.errors import UserError  # noqa: E402
from vae_engines.core.fileio import read_json  # noqa: E402
from vae_engines.core.params import BuildParams, Int8Variant, ProfileParams  # noqa: E402
from vae_engines.data.latentset import write_latent_set  # noqa: E402
from vae_engines.graph.execute import GraphExecutor  # noqa: E402
from vae_engines.graph.io import load_onnx  # noqa: E402
from vae_engines.quant.qdq import quantizable_layers  # noqa: E402
from vae_engines.quant.quantize import quantize_variant  # noqa: E402
from vae_engines.quant.stats import collect, quantizable_tensors, write_stats  # noqa: E402
from vae_engines.report.engines import int8_engines_section  # noqa: E402
from vae_engines.report.records import TorchRecords, VariantRecords  # noqa: E402
from vae_engines.runtime import load  # noqa: E402
from vae_engines.runtime.guard import (DEFAULT_RANGE_GUARD, LatentRangeWarning, RangeGuard, check_latent,  # noqa: E402
                                       start_latent_check)
from vae_engines.trt.backend import resolve  # noqa: E402
from vae_engines.trt.build import build_plan  # noqa: E402

CALIBRATION = latents(2, 8, seed=0)  # N(0, 1): max |x| about 3.6


@pytest.fixture(scope="module")
def variant(tmp_path_factory, tiny_onnx):
    """A minmax variant of the tiny decoder: its Q/DQ graph and ranges record."""
    folder = tmp_path_factory.mktemp("variant")
    graph = load_onnx(tiny_onnx)
    layers = quantizable_layers(graph)
    write_latent_set(folder / "cal", CALIBRATION, {"source": "test"})
    write_stats(folder / "s.npz", folder / "s.json",
                collect(GraphExecutor(graph), quantizable_tensors(layers), CALIBRATION), layers, {})
    quantize_variant("minmax", Int8Variant(calibrator="minmax"), fp32_onnx=tiny_onnx, stats_npz=folder / "s.npz",
                     calibration_dir=folder / "cal", out_onnx=folder / "minmax.onnx",
                     ranges_json=folder / "minmax.ranges.json", device=torch.device("cpu"))
    return folder


@pytest.fixture(scope="module")
def torch_int8(variant, tiny_folded):
    """The variant's compiled INT8 engine on the CPU (compile_int8's function)."""
    pytest.importorskip("triton", reason="the fused op needs Triton (the test extra has it)")
    path = variant / "minmax.pt2"
    compile_int8_engine(tiny_folded, "minmax", variant / "minmax.ranges.json",
                        "default", device=torch.device("cpu"),
                        profile=ProfileParams(min_frames=4, opt_frames=8, max_frames=16), out=path,
                        calibration_dir=variant / "cal")
    return path


@pytest.fixture(params=["onnx", "torch"])
def engine_path(request, variant):
    return variant / "minmax.onnx" if request.param == "onnx" else request.getfixturevalue("torch_int8")


def scaled(times: float, input_range: float, frames: int = 8) -> torch.Tensor:
    """A held-out latent scaled to `times` x the calibrated range."""
    x = torch.from_numpy(latents(1, frames, seed=1))
    return x * (times * input_range / x.abs().max())


def test_int8_engines_record_the_latent_range_they_were_calibrated_on(variant, engine_path, tiny_onnx):
    calibrated = read_json(variant / "minmax.ranges.json")["amax"]["latent"]
    assert calibrated == pytest.approx(float(np.abs(CALIBRATION).max()), rel=1e-6)  # minmax: the largest |x|
    described = load(engine_path).describe()
    assert described["calibrated_input_range"] == pytest.approx(calibrated, rel=1e-6)
    assert described["range_guard"] == DEFAULT_RANGE_GUARD and described["on_range"] == "error"
    assert "calibrated_input_range" not in load(tiny_onnx).describe()  # fp32: no range, no guard


def test_a_latent_10x_beyond_the_range_is_refused_in_one_line_naming_the_factor(engine_path):
    engine = load(engine_path)
    x = scaled(10.0, engine.guard.input_range)
    for attempt in (lambda: engine.decode(x), lambda: list(engine.stream(x, window=4, overlap=2))):
        with pytest.raises(UserError, match=r"is 10\.0x the engine's calibrated input range [\d.]+ \(range_guard 2\)"
                                            r".*calibration\.source: latents.*on_range='warn'") as caught:
            attempt()
        assert "\n" not in str(caught.value) and engine_path.name in str(caught.value)
    with pytest.raises(UserError, match="is 1.5x"):  # a tighter guard, given at load
        load(engine_path, range_guard=1.2).decode(scaled(1.5, engine.guard.input_range))


def test_a_latent_within_the_range_decodes_as_before(engine_path):
    engine = load(engine_path)
    x = scaled(1.5, engine.guard.input_range)
    before = engine._run(engine.prepare(x))  # the decode itself, no check at all
    assert torch.equal(engine.decode(x), before)
    assert torch.equal(torch.cat(list(engine.stream(x, window=8, overlap=4)), dim=-1), before)  # one window


def test_the_warning_switch_warns_and_decodes(engine_path):
    engine = load(engine_path)
    x = scaled(10.0, engine.guard.input_range)
    expected = engine.decode(x, on_range="off")
    with pytest.warns(LatentRangeWarning, match=r"10\.0x"):
        assert torch.equal(engine.decode(x, on_range="warn"), expected)  # per call
    warned = load(engine_path, on_range="warn")  # per engine
    with pytest.warns(LatentRangeWarning, match=r"10\.0x"):
        assert torch.equal(warned.decode(x), expected)
    with pytest.warns(LatentRangeWarning):
        assert torch.equal(torch.cat(list(warned.stream(x, window=8, overlap=4)), dim=-1), expected)
    with pytest.raises(UserError, match=r"on_range='warning'; use one of 'error', 'warn', 'off'"):
        load(engine_path, on_range="warning")
    with pytest.raises(UserError, match="range_guard=0; give a factor > 0"):
        load(engine_path, range_guard=0)


@pytest.fixture
def readbacks(monkeypatch):
    """Counts every way a tensor's value reaches the host (each one a device synchronisation on a GPU)."""
    count = {"n": 0}
    for name in ("tolist", "item", "__bool__", "__float__", "__int__", "__index__", "numpy"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, **kwargs):
            count["n"] += 1
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, counted)
    return count


def test_the_check_reads_the_device_once(variant, readbacks, tiny_onnx):
    """The finite and range tests share one readback; a float engine with check_finite=False
    reads nothing back."""
    engine = load(variant / "minmax.onnx")
    engine._run = lambda x: torch.zeros(x.shape[0], 2, x.shape[-1] * 1920)  # count the check alone
    x = scaled(1.5, engine.guard.input_range, frames=20)
    readbacks["n"] = 0
    engine.decode(x)
    assert readbacks["n"] == 1
    readbacks["n"] = 0
    list(engine.stream(x, window=8, overlap=4))  # the whole latent once, not once per window
    assert readbacks["n"] == 1
    readbacks["n"] = 0
    check_latent(x, "fp32", RangeGuard("fp32"), check_finite=False)
    engine.decode(x, check_finite=False, on_range="off")
    assert readbacks["n"] == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_one_reduction_finds_every_nan_and_inf(dtype):
    """The check reads one number, max |x| (torch.linalg.vector_norm, ord inf): a NaN
    anywhere makes it NaN and an inf makes it inf, so the finite test needs no reduction of
    its own; a finite latent gives its max |x| exactly."""
    guard = RangeGuard("fp32")
    for frames in (3, 40, 3000):
        x = torch.randn(2, 4, frames).to(dtype)
        pending = start_latent_check(x, guard)
        assert pending.read() == x.float().abs().max().item()
        for value in (float("nan"), float("inf"), float("-inf")):
            for at in (0, x.numel() // 2, x.numel() - 1):
                bad = x.clone()
                bad.view(-1)[at] = value
                with pytest.raises(UserError, match="the latent holds 1 NaN/inf values"):
                    check_latent(bad, "fp32", guard)
                check_latent(bad, "fp32", guard, check_finite=False)  # no guard, nothing checked


def test_a_queued_decode_reads_the_check_back_after_queuing_itself(variant, monkeypatch):
    """Where the decode is queued on a device (a GPU engine: Decoder.queues), the check's one
    readback comes after the decode is queued, so the device never waits for the host between
    them; a refused latent still raises (its audio dropped), a warned one warns at the caller's
    line. Where nothing is queued (the CPU), the check comes first and a refused latent is not
    decoded."""
    engine = load(variant / "minmax.onnx")
    order = []
    engine._run = lambda x: order.append("decode") or torch.zeros(x.shape[0], 2, x.shape[-1] * 1920)
    item = torch.Tensor.item
    monkeypatch.setattr(torch.Tensor, "item", lambda t: order.append("readback") or item(t))
    inside, beyond = (scaled(f, engine.guard.input_range, frames=20) for f in (1.5, 10.0))
    engine.decode(inside)
    assert order == ["readback", "decode"]
    with pytest.raises(UserError, match="10.0x"):
        engine.decode(beyond)
    assert order[2:] == ["readback"]  # refused before decoding
    with pytest.warns(LatentRangeWarning) as caught:
        engine.decode(beyond, on_range="warn")
    assert caught[0].filename == __file__

    engine.queues = lambda x: True
    order.clear()
    engine.decode(inside)
    assert order == ["decode", "readback"]
    with pytest.raises(UserError, match="10.0x"):
        engine.decode(beyond)
    assert order[2:] == ["decode", "readback"]
    with pytest.warns(LatentRangeWarning) as caught:
        engine.decode(beyond, on_range="warn")
    assert caught[0].filename == __file__


def test_a_non_finite_latent_is_still_named_before_the_range(variant):
    engine = load(variant / "minmax.onnx")
    x = scaled(10.0, engine.guard.input_range)
    x[0, 3, 1] = float("nan")
    with pytest.raises(UserError, match=r"NaN/inf values \(the first at batch 0, channel 3, frame 1\)"):
        engine.decode(x)


def test_a_stage_refusing_a_latent_prints_one_line_and_no_traceback(variant, tmp_path):
    """What a stage or CLI built on core.entry shows for a latent beyond the range."""
    latent = tmp_path / "latent.npy"
    input_range = read_json(variant / "minmax.ranges.json")["amax"]["latent"]
    np.save(latent, scaled(10.0, input_range).numpy())
    script = textwrap.dedent(f"""
        import numpy as np
        from vae_engines.core import entry
        from vae_engines.runtime import load

        entry.run(lambda args: load({str(variant / "minmax.onnx")!r}).decode(np.load({str(latent)!r})),
                  entry.parser("decode"), [])
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 1, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert "Traceback" not in done.stderr and len(lines) == 1 and lines[0].startswith("error: onnx engine minmax.onnx")
    assert "10.0x the engine's calibrated input range" in lines[0]


def test_the_reports_int8_rows_state_the_calibrated_latent_range():
    """The INT8 engine rows (bench_int8's record of the engine's describe()) and the variant
    rows (evaluate's provenance) name the range; a record from before the guard says so."""
    timing = {"series": "compiled int8 minmax", "batch": 1, "frames": 32, "median_ms": 9.0, "p10_ms": 9.0,
              "p90_ms": 9.0}
    record = {"variant": "minmax", "engine": "compiled int8 minmax", "timings": [timing],
              "runtimes": {"compiled int8 minmax": {"calibrated_input_range": 10.4059, "range_guard": 2.0}}}
    text = "\n".join(int8_engines_section([], TorchRecords({}, [record])))
    row = next(line for line in text.splitlines() if line.startswith("| `compiled int8 minmax`"))
    assert "| calibrated latent range |" in text and row.endswith("| n/a | latent max abs <= 10.4 |")
    assert VariantRecords("minmax", {}, {"input_range": 7.789179}, {}, {}).range_label() == "latent max abs <= 7.79"
    assert VariantRecords("minmax", {}, {}, {}, {}).range_label() == "latent range not recorded"


def test_an_int8_plan_records_the_range_and_would_guard_it(variant, tmp_path):
    """TensorRT-RTX builds on the CPU: the INT8 plan's record holds the variant's latent range
    (what PlanDecoder guards where a GPU runs it)."""
    pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX not installed: pip install 'vae-engines[tensorrt-rtx]'")
    meta = build_plan(resolve("tensorrt_rtx"), variant / "minmax.onnx", tmp_path / "minmax.plan",
                      profile=ProfileParams(min_frames=2, opt_frames=4, max_frames=8), build=BuildParams())
    assert meta["input_range"] == pytest.approx(read_json(variant / "minmax.ranges.json")["amax"]["latent"])
    guard = RangeGuard.of("tensorrt_rtx engine minmax.plan", meta["input_range"])
    with pytest.raises(UserError, match=r"tensorrt_rtx engine minmax.plan: .* is 10\.0x"):
        check_latent(scaled(10.0, meta["input_range"]), "tensorrt_rtx engine", guard)
