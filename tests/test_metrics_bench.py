import numpy as np
import pytest

from vae_engines import metrics
from vae_engines.measure import timing as bench
from vae_engines.runtime.base import Decoder, Shape
from vae_engines.runtime.stream import windows


def test_peak_psnr_matches_the_reference_definition():
    ref = np.zeros((1, 2, 1000))
    ref[0, 0, 0] = 2.0
    out = ref + 0.01
    assert metrics.peak_psnr(ref, out) == pytest.approx(20 * np.log10(2.0 / 0.01))


def test_peak_psnr_is_snr_plus_the_crest_factor():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((1, 2, 48000)) * np.linspace(0.1, 1, 48000)
    out = ref + 0.01 * rng.standard_normal(ref.shape)
    assert metrics.peak_psnr(ref, out) == pytest.approx(metrics.snr(ref, out) + metrics.crest_factor_db(ref))


def test_metrics_rank_noise_and_si_sdr_is_scale_invariant():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((1, 2, 48000))
    assert metrics.si_sdr(ref, 0.5 * ref) > 100
    small, large = ref + 0.01 * rng.standard_normal(ref.shape), ref + 0.1 * rng.standard_normal(ref.shape)
    for name in ("peak_psnr_db", "snr_db", "si_sdr_db"):
        assert metrics.all_metrics(ref, small)[name] > metrics.all_metrics(ref, large)[name] + 15
    assert metrics.max_abs_error(ref, ref) == 0.0


def test_mr_stft_is_the_standard_distance():
    rng = np.random.default_rng(1)
    t = np.arange(48000) / 48000
    ref = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 660 * t)])[None] * 0.5
    assert metrics.mr_stft(ref, ref) == {"mr_stft": 0.0, "mr_stft_sc": 0.0, "mr_stft_logmag": 0.0}
    near = metrics.mr_stft(ref, ref + 1e-3 * rng.standard_normal(ref.shape))
    far = metrics.mr_stft(ref, ref + 1e-1 * rng.standard_normal(ref.shape))
    assert 0 < near["mr_stft"] < far["mr_stft"]
    assert near["mr_stft"] == pytest.approx(near["mr_stft_sc"] + near["mr_stft_logmag"])
    # spectral convergence of a 10% gain error is 0.1 at every resolution
    assert metrics.mr_stft(ref, 1.1 * ref)["mr_stft_sc"] == pytest.approx(0.1, rel=1e-3)
    assert metrics.mr_stft(ref[..., :100], ref[..., :100]) == {}  # shorter than half the smallest frame


def test_paired_ratio_calls_a_difference_only_beyond_the_spread():
    rng = np.random.default_rng(0)
    slow = bench.Timing("fp16 (x)", 1, 32, list(100 + rng.normal(0, 2, 9)))
    fast = bench.Timing("v (x)", 1, 32, list(60 + rng.normal(0, 2, 9)))
    same = bench.Timing("w (x)", 1, 32, list(100 + rng.normal(0, 20, 9)))
    r = bench.paired_ratio(fast, slow)
    assert r["verdict"] == "faster" and r["ci95"][0] > 1 and r["median_ratio"] == pytest.approx(1.67, abs=0.1)
    assert bench.paired_ratio(slow, fast)["verdict"] == "slower"
    assert bench.paired_ratio(same, slow)["verdict"] == "no measurable difference"


class Recorder(Decoder):
    """A CPU decoder that records when it runs."""

    kind, precision = "test", "fp32"

    def __init__(self, name, order):
        import torch

        self.name, self.order = name, order
        self.device = torch.device("cpu")
        self.shape = Shape(channels=64, hop=1920, sampling_rate=48000)

    def _run(self, x):
        self.order.append(self.name)
        return x


def test_interleaved_rounds_take_turns():
    order = []
    decoders = {n: Recorder(n, order) for n in "abc"}
    timings = bench.interleaved(decoders, 1, 2, 64, warmup=1, repeats=3)
    assert order[:6] == ["a", "a", "b", "b", "c", "c"]  # each one's first call and warm-up at this length
    assert order[6:] == ["a", "b", "c", "c", "b", "a", "b", "c", "a"]  # rotated every other round, odd ones reversed
    assert [len(t.ms) for t in timings.values()] == [3, 3, 3]


def test_turns_let_each_engine_follow_each_neighbour():
    names = ["a", "b", "c", "d"]
    follows: dict = {}
    previous = None
    for r in range(8):
        order = bench.turns(names, r)
        assert sorted(order) == names
        for name in order:
            follows.setdefault(name, []).append(previous)
            previous = name
    for name, before in follows.items():  # never the same engine before it every time
        assert len({b for b in before if b}) >= 2, (name, before)


class NewLengthCost(Recorder):
    """Slow on its first two calls at each length (a CUDA-graph engine: the first call runs
    eagerly, the second records the graph), fast after."""

    def __init__(self, name, order):
        super().__init__(name, order)
        self.calls: dict[int, int] = {}

    def _run(self, x):
        import time

        seen = self.calls[x.shape[-1]] = self.calls.get(x.shape[-1], 0) + 1
        time.sleep(0.25 if seen <= 2 else 0.001)
        return x.repeat_interleave(self.shape.hop, dim=-1)[:, :2]  # audio-shaped


def test_a_new_lengths_first_calls_stay_out_of_the_percentiles():
    """Issue 37: a 125-frame figure printed as "2.3 ms (2.2-16.9)" because a new length's first
    calls sat among the rounds. They are timed apart (first_call_ms) or not at all."""
    decoder = NewLengthCost("g", [])
    for frames in (4, 8):  # every length warms up, not only the first one timed
        t = bench.interleaved({"g": decoder}, 1, frames, 64, warmup=1, repeats=5)["g"].summary()
        assert t["first_call_ms"] >= 240
        assert max(t["ms"]) < 150 and t["p90_ms"] < 150  # a loaded 2-core machine: steady calls took up to 32 ms
    stream = bench.streaming(NewLengthCost("s", []), 64, 40, 16, 4)  # windows of 16 frames, the last shorter
    assert stream["per_call_max_ms"] < 150


def test_stream_windows_cover_the_latent():
    spans = windows(64, 16, 4)
    assert spans[0] == (0, 16) and spans[-1][1] == 64
    assert all(b - a == 16 for a, b in spans)
    assert all(spans[i + 1][0] - spans[i][0] <= 12 for i in range(len(spans) - 1))
    assert windows(10, 16, 4) == [(0, 10)]


def test_a_bench_with_nothing_to_time_costs_its_start_up(tmp_path):
    """bench@ where no GPU here can run the plans (issue 37: the 8 TensorRT bench stages took
    30 s on an H100, where TensorRT-RTX refuses compute capability 9.0): the record says why,
    with neither numpy nor torch imported and the plans' bytes not hashed."""
    import json
    import subprocess
    import sys

    from vae_engines.trt.plan import unavailable_reason

    if unavailable_reason("tensorrt_rtx") is None:
        pytest.skip("a GPU here can run TensorRT-RTX plans: the bench would time them")
    for name in ("minmax", "fp16"):
        (tmp_path / f"{name}.plan").write_bytes(b"p" * 1000)
        (tmp_path / f"{name}.json").write_text(json.dumps({"backend": "tensorrt_rtx", "plan_bytes": 1000,
                                                           "plan_sha256": "not read"}))
        (tmp_path / f"{name}.onnx").write_bytes(b"o" * 10)
    code = f"""
import sys, time
from pathlib import Path
began = time.perf_counter()
from vae_engines.core.params import BenchParams
from vae_engines.measure.plans import bench_variant
d = Path({str(tmp_path)!r})
doc = bench_variant("minmax", BenchParams(), threads=1, onnx={{n: d / f"{{n}}.onnx" for n in ("minmax", "fp16")}},
                    plans={{n: d / f"{{n}}.plan" for n in ("minmax", "fp16")}}, out_json=d / "bench.json",
                    plot_json=d / "latency.json")
print(round(time.perf_counter() - began, 3), doc["tensorrt"], sorted({{"numpy", "torch"}} & set(sys.modules)))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    seconds, rest = done.stdout.split(" ", 1)
    assert rest.strip().startswith("not measured:") and rest.strip().endswith("[]"), rest
    assert float(seconds) < 1.0, seconds  # its decision and record


class SimulatedGPU:
    """One CUDA stream and the host as two clocks (ms): what a launch costs the host, what its kernel
    costs the GPU, and events stamped when the GPU reaches them -- enough to tell a kernel's time from
    its launch's, with no GPU."""

    cycles_per_ms = 1.5e6

    def __init__(self, launch_ms: float, kernel_ms: float):
        self.host = self.gpu = 0.0
        self.launch_ms, self.kernel_ms = launch_ms, kernel_ms
        gpu = self

        class Event:
            def __init__(self, enable_timing=False):
                self.at = None

            def record(self):
                self.at = gpu.queue(0.0)

            def synchronize(self):
                gpu.host = max(gpu.host, self.at)

            def elapsed_time(self, end):
                return end.at - self.at

        self.Event = Event

    def queue(self, ms: float) -> float:
        """Queue `ms` of GPU work; the GPU time it starts at."""
        start = max(self.gpu, self.host + 0.005)
        self.gpu = start + ms
        return start

    def sleep(self, cycles: int) -> None:
        self.queue(cycles / self.cycles_per_ms)

    def synchronize(self, device=None) -> None:
        self.host = max(self.host, self.gpu)

    def layer(self) -> None:
        self.host += self.launch_ms  # the module, its descriptors, Triton's argument binding
        self.queue(self.kernel_ms)

    def install(self, monkeypatch, clock) -> None:
        import contextlib

        import torch

        monkeypatch.setattr(torch.cuda, "Event", self.Event)
        monkeypatch.setattr(torch.cuda, "_sleep", self.sleep)
        monkeypatch.setattr(torch.cuda, "synchronize", self.synchronize)
        monkeypatch.setattr(torch.cuda, "device", lambda index: contextlib.nullcontext())
        monkeypatch.setattr(clock, "host_ms", lambda: self.host)
        monkeypatch.setattr(clock, "_cycles_per_ms", {})


def test_a_kernels_time_leaves_out_the_hosts_work_to_launch_it(monkeypatch):
    import torch

    from vae_engines.core import clock

    cuda = torch.device("cuda", 0)
    for launch_ms, kernel_ms in ((0.1, 0.04), (0.3, 0.04), (1.7, 2.0)):  # a launch under, over the shortest spin
        gpu = SimulatedGPU(launch_ms, kernel_ms)
        gpu.install(monkeypatch, clock)
        assert clock.cycles_per_ms(cuda) == pytest.approx(gpu.cycles_per_ms)
        assert clock.kernel_ms(gpu.layer, cuda) == pytest.approx(kernel_ms)
        start, end = gpu.Event(), gpu.Event()  # what an event pair from an idle GPU measures instead
        start.record(), gpu.layer(), end.record(), end.synchronize()
        assert start.elapsed_time(end) == pytest.approx(launch_ms + kernel_ms, abs=0.01)


def test_a_call_that_waits_for_the_gpu_cannot_be_timed_apart_from_the_host(monkeypatch):
    import torch

    from vae_engines.core import clock

    gpu = SimulatedGPU(0.05, 0.5)
    gpu.install(monkeypatch, clock)

    def synchronizing():
        gpu.layer()
        gpu.synchronize()

    with pytest.raises(RuntimeError, match="synchronizing call inside it"):
        clock.kernel_ms(synchronizing, torch.device("cuda", 0))
    assert clock.kernel_ms(lambda: 1, torch.device("cpu"), repeats=3) < 100  # the wall clock
