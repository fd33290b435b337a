"""The report's PyTorch-engine sections on records of the kinds a GPU run writes (the CPU
default builds no INT8 engine): INT8 engines beside their graphs and the fp16 engine they
were timed with, the first screen's pick for a quality target, and the length sweep with its
flags."""

from vae_engines.measure.torch_engines import sweep_flags, sweep_frames
from vae_engines.report.engines import int8_engines_section, sweep_section
from vae_engines.report.guide import int8_engine_lines, quality_lines, torch_lines
from vae_engines.report.records import TorchRecords, VariantRecords
from vae_engines.report.ship import plan_lines, ship_lines


def timing(series: str, ms: float, frames: int = 1500) -> dict:
    return {"series": series, "batch": 1, "frames": frames, "median_ms": ms, "p10_ms": ms, "p90_ms": ms}


def ratio(subject: str, reference: str, median: float, lo: float, hi: float, verdict: str) -> dict:
    return {"subject": subject, "reference": reference, "batch": 1, "frames": 1500, "median_ratio": median,
            "ci95": [lo, hi], "rounds": 10, "verdict": verdict}


def records(int8_db: float, int8_ms: float = 18.0, speedup=(1.167, 1.15, 1.18), verdict: str = "faster"
            ) -> TorchRecords:
    """bench_torch's record (eager and compiled fp16) and one bench_int8 record, as a GPU run
    writes them: the INT8 engine's ratio is in its own record, read from the other side."""
    bench = {"device": {"name": "GPU X", "torch": "2.11"},
             "timings": [timing("eager fp16", 84.0), timing("compiled fp16", 21.0)],
             "ratios": [ratio("eager fp16", "compiled fp16", 0.25, 0.24, 0.26, "slower")],
             "runtimes": {"eager fp16": {}, "compiled fp16": {}},
             "quality": {"eager fp16": {"peak_psnr_db": 69.2}, "compiled fp16": {"peak_psnr_db": 71.5}},
             "memory": {"device_memory_gib": {"eager fp16": 3.9, "compiled fp16": 2.2}}}
    int8 = {"variant": "minmax", "engine": "compiled int8 minmax", "device": {"name": "GPU X"},
            "timings": [timing("compiled int8 minmax", int8_ms), timing("compiled fp16", 21.3)],
            # stored from the fp16 engine's side, as the rounds happened to name them
            "ratios": [ratio("compiled fp16", "compiled int8 minmax", 1 / speedup[0], 1 / speedup[2], 1 / speedup[1],
                             {"faster": "slower", "slower": "faster"}.get(verdict, verdict))],
            "runtimes": {"compiled int8 minmax": {}, "compiled fp16": {}},
            "quality": {"compiled int8 minmax": {"peak_psnr_db": int8_db}},
            "memory": {"device_memory_gib": {"compiled int8 minmax": 1.45, "compiled fp16": 2.2}}}
    return TorchRecords(bench, [int8])


def variant(simulated_db: float) -> VariantRecords:
    return VariantRecords("minmax", {"heldout": {"vs_fp32": {"peak_psnr_db": simulated_db}}}, {}, {}, {})


def test_an_int8_engine_sits_beside_its_graph_and_the_fp16_engine_it_was_timed_with():
    text = "\n".join(int8_engines_section([variant(45.0)], records(45.3)))
    row = next(line for line in text.splitlines() if line.startswith("| `compiled int8 minmax`"))
    assert "1.17x [1.15-1.18] faster" in row  # the ratio read from the other side
    assert "| 45.3 | 45.0 | yes |" in row and "| 1.45 |" in row
    disagree = "\n".join(int8_engines_section([variant(44.0)], records(45.3)))
    assert "**no**: 1.30 dB apart" in disagree and "the engine's figure is the one to trust" in disagree
    guide = "\n".join(int8_engine_lines([variant(45.0)], records(45.3)))
    assert "What INT8 buys with the fused kernels on GPU X" in guide and "faster than `compiled fp16`" in guide


def test_no_int8_engine_no_section():
    bare = TorchRecords(records(45.0).bench, [])
    assert int8_engines_section([variant(45.0)], bare) == [] and int8_engine_lines([variant(45.0)], bare) == []


def test_engines_not_timed_together_get_no_winner():
    """The INT8 engine and eager fp16 were never timed in the same rounds: ranked by median,
    no "faster" verdict between them."""
    lines = torch_lines(TorchRecords(records(45.0).bench | {"timings": [timing("eager fp16", 19.0)]},
                                     records(45.0).int8), (125, 1500))
    assert "`compiled int8 minmax` 18.0 ms (45.0 dB), `eager fp16` 19.0 ms (69.2 dB)" in lines[0]
    assert "not timed in the same rounds, so no winner is named" in lines[1]


def test_the_first_screen_names_the_fastest_engine_reaching_the_target():
    fast = "\n".join(ship_lines([], records(45.3), (1500,), 40.0))
    assert "## Ship this on GPU X" in fast
    assert ("**For >= 40 dB held-out: `compiled int8 minmax`**: 1500 frames in 18.0 ms (18.0-18.0), 45.3 dB, "
            "1.45 GiB device memory; 1.17x [1.15-1.18] faster than `compiled fp16` (same rounds)") in fast
    assert "Highest quality here: `compiled fp16`, 71.5 dB" in fast
    # the INT8 engine misses the target: the fp16 engine is the pick, the INT8 one the fastest below it
    strict = "\n".join(ship_lines([], records(38.0), (1500,), 40.0))
    assert "**For >= 40 dB held-out: `compiled fp16`**" in strict
    assert "Fastest, below the target: `compiled int8 minmax` 18.0 ms (18.0-18.0) at 38.0 dB" in strict
    # within the spread: no winner; the higher quality comes first
    tie = "\n".join(ship_lines([], records(45.3, speedup=(1.01, 0.98, 1.03), verdict="no difference"), (1500,), 40.0))
    assert "no measurable difference from `compiled fp16`" in tie and "`compiled fp16` has the higher quality" in tie
    none = "\n".join(ship_lines([], records(45.3), (1500,), 80.0))
    assert "No engine here reaches 80 dB" in none and "closest is `compiled fp16` at 71.5 dB" in none


def test_the_reference_is_labelled_and_not_ranked():
    """Eager fp32 computes the fp32 reference again: its 222 dB is rounding, not the highest
    quality (issue 37)."""
    torch = records(45.3)
    torch.bench["timings"].append(timing("eager fp32", 329.0))
    torch.bench["runtimes"]["eager fp32"] = {}
    torch.bench["quality"]["eager fp32"] = {"peak_psnr_db": 222.1}
    text = "\n".join(ship_lines([], torch, (1500,), 40.0))
    assert "Highest quality here: `compiled fp16`, 71.5 dB" in text
    assert "Highest quality here: `eager fp32`" not in text
    row = next(line for line in text.splitlines() if line.startswith("| `eager fp32`"))
    assert row.startswith("| `eager fp32` (the reference) |") and "| reference (222.1: itself) | reference |" in row


def test_a_new_lengths_first_call_gets_its_own_line():
    torch = records(45.3)
    torch.int8[0]["timings"][0].update(first_call_ms=26.5)
    text = "\n".join(ship_lines([], torch, (1500,), 40.0))
    assert "first timed call at 1500 frames took 26.5 ms against 18.0 ms once warm (kept out of the percentiles)" in text
    assert "took" not in "\n".join(ship_lines([], records(45.3), (1500,), 40.0))


def test_the_sweep_spans_the_frames_with_odd_lengths():
    frames = sweep_frames(125, 1500, 12)
    assert frames[0] == 125 and frames[-1] == 1500 and len(frames) == 12
    assert sum(f % 2 for f in frames) >= 6  # not only round sizes
    assert sweep_frames(2, 4, 12) == [2, 3, 4]


def row(frames: int, ms: float, spread: float = 0.1) -> dict:
    return {"frames": frames, "median_ms": ms, "min_ms": ms - spread, "max_ms": ms + spread, "first_call_ms": ms + 5,
            "ms_per_audio_s": ms / (frames / 25)}


def test_the_sweep_flags_costly_and_out_of_order_lengths():
    steady = [row(125, 3.0), row(250, 4.3), row(500, 7.3), row(1000, 14.4), row(1500, 21.7)]
    assert sweep_flags(steady) == []  # 125 frames costs more per second, but below 250 frames that is fixed cost
    cliff = [row(125, 3.0), row(250, 117.0), row(500, 7.3), row(1500, 21.7)]
    flags = sweep_flags(cliff)
    assert any(f.startswith("250 frames: ") and "the best cost per second" in f for f in flags)
    assert any(f.startswith("250 frames: slower than 500 frames") for f in flags)
    sweep = {"frames": [125, 250, 500, 1500], "calls": 3, "flag_from_frames": 250, "flag_ratio": 1.25,
             "engines": {"e": {"rows": cliff, "flags": flags}}}
    text = "\n".join(sweep_section(TorchRecords({"sweep": sweep}, [])))
    assert "| 250 | 117.0 (11.700) |" in text and "250 frames: slower than 500 frames" in text


def engine_record(variant: str, fmt: str, db: float, ms: float, speedup: tuple) -> dict:
    """One bench_int8 record of an INT8 or FP8 engine, its ratio stored from its own side."""
    name = f"compiled {fmt} {variant}"
    return {"variant": variant, "engine": name, "device": {"name": "GPU X"},
            "timings": [timing(name, ms), timing("compiled fp16", 17.4)],
            "ratios": [ratio(name, "compiled fp16", *speedup, "faster")], "runtimes": {name: {}, "compiled fp16": {}},
            "quality": {name: {"peak_psnr_db": db}}, "memory": {"device_memory_gib": {name: 1.4, "compiled fp16": 2.2}}}


def quantized_variant(name: str, fmt: str, db: float, plan_mb: float) -> VariantRecords:
    return VariantRecords(name, {"heldout": {"vs_fp32": {"peak_psnr_db": db}}}, {"precision": f"{fmt}+fp16"}, {},
                          {"plan_bytes": plan_mb * 1e6, "backend": "tensorrt_rtx", "backend_version": "1.7"})


def test_the_first_screen_picks_an_fp8_engine_when_it_wins():
    """An fp8 variant's engine (`compiled fp8 <variant>`) competes with the INT8 engines on the
    first screen: picked where it is the fastest reaching the target, passed over where it misses
    it; its rows and the guide say FP8 and float8 tensor cores."""
    bench = records(45.0).bench
    variants = [quantized_variant("minmax", "int8", 45.0, 8.6), quantized_variant("minmax_fp8", "fp8", 46.0, 8.5)]

    def torch(fp8_db: float) -> TorchRecords:
        return TorchRecords(bench, [engine_record("minmax", "int8", 45.1, 12.2, (1.43, 1.41, 1.46)),
                                    engine_record("minmax_fp8", "fp8", fp8_db, 10.9, (1.60, 1.58, 1.61))])
    wins = "\n".join(ship_lines(variants, torch(46.1), (1500,), 40.0))
    assert "**For >= 40 dB held-out: `compiled fp8 minmax_fp8`**: 1500 frames in 10.9 ms" in wins
    misses = "\n".join(ship_lines(variants, torch(38.0), (1500,), 40.0))
    assert "**For >= 40 dB held-out: `compiled int8 minmax`**" in misses
    section = "\n".join(int8_engines_section(variants, torch(46.1)))
    assert "## INT8 / FP8 engines (fused kernels)" in section and "fp8 e4m3 x e4m3" in section
    assert "| `compiled fp8 minmax_fp8` |" in section
    guide = "\n".join(int8_engine_lines(variants, torch(46.1)))
    assert "What FP8 buys with the fused kernels on GPU X** (float8 tensor cores, measured)" in guide


def test_the_plan_pick_prefers_an_int8_plan_that_every_gpu_runs():
    """Among TensorRT plans reaching the target an INT8 one comes first, even where an FP8 plan is
    smaller; an FP8 plan is named, with its compute capability, only where no INT8 plan reaches it."""
    fp16 = VariantRecords("fp16", {}, {}, {"tensorrt": "not measured: no NVIDIA GPU on this machine"},
                          {"plan_bytes": 9.4e6, "backend": "tensorrt_rtx", "backend_version": "1.7"})
    both = plan_lines([fp16, quantized_variant("minmax", "int8", 45.0, 8.6),
                       quantized_variant("minmax_fp8", "fp8", 46.0, 8.5)], 40.0)[0]
    assert "the smallest INT8 plan reaching the target is `minmax` (int8;" in both
    only_fp8 = plan_lines([fp16, quantized_variant("minmax", "int8", 35.0, 8.6),
                           quantized_variant("minmax_fp8", "fp8", 46.0, 8.5)], 40.0)[0]
    assert "`minmax_fp8` (fp8, float8: GPUs of compute capability 8.9+ only;" in only_fp8


def test_the_guide_names_the_variant_closest_in_spectrum_where_psnr_ranks_another_first():
    """The embedded default's case: minmax leads on peak PSNR (52.2 against 51.8 dB), minmax_fp8 on
    MR-STFT (0.118 against 0.400) and SI-SDR; the guide names both. Where one leads on both, one line."""
    def v(name, psnr, stft, sisdr):
        vs = {"peak_psnr_db": psnr, "mr_stft": stft, "si_sdr_db": sisdr, "snr_db": psnr - 24}
        return VariantRecords(name, {"heldout": {"vs_fp32": vs, "vs_fp16": vs}}, {"precision": "int8+fp16"}, {}, {})
    lines = "\n".join(quality_lines([v("minmax", 52.2, 0.400, 27.4), v("minmax_fp8", 51.8, 0.118, 30.4)]))
    assert "**Highest quality INT8**: `minmax`" in lines
    assert ("**Closest in spectrum**: `minmax_fp8`, MR-STFT 0.118 against `minmax`'s 0.400 vs fp32 (SI-SDR 30.4 "
            "against 27.4 dB)") in lines
    assert "Closest in spectrum" not in "\n".join(quality_lines([v("a", 52.2, 0.1, 30.0), v("b", 50.0, 0.4, 27.0)]))
