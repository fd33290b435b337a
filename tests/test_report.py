"""The report's PyTorch-engine sections on records of the kinds a GPU run writes (the CPU
default builds no INT8 engine): INT8 engines beside their graphs and the fastest fp16 engine,
and the length sweep with its flags."""

from vae_engines.measure.torch_engines import sweep_flags, sweep_frames
from vae_engines.report.engines import int8_engines_section, sweep_section
from vae_engines.report.guide import int8_engine_lines
from vae_engines.report.records import VariantRecords


def timing(series: str, ms: float, frames: int = 1500) -> dict:
    return {"series": series, "batch": 1, "frames": frames, "median_ms": ms, "p10_ms": ms, "p90_ms": ms}


def torch_bench(int8_db: float) -> dict:
    return {
        "device": {"name": "GPU X"},
        "timings": [timing("eager fp16", 84.0), timing("compiled fp16", 21.0), timing("compiled int8 minmax", 18.0)],
        "ratios": [{"subject": "compiled fp16", "reference": "compiled int8 minmax", "batch": 1, "frames": 1500,
                    "median_ratio": 0.857, "ci95": [0.85, 0.87], "rounds": 10, "verdict": "slower"}],
        "runtimes": {"eager fp16": {}, "compiled fp16": {}, "compiled int8 minmax": {}},
        "quality": {"compiled int8 minmax": {"peak_psnr_db": int8_db}},
        "memory": {"device_memory_gib": {"compiled int8 minmax": 1.45}},
    }


def variant(simulated_db: float) -> VariantRecords:
    return VariantRecords("minmax", {"heldout": {"vs_fp32": {"peak_psnr_db": simulated_db}}}, {}, {}, {})


def test_an_int8_engine_sits_beside_its_graph_and_the_fastest_fp16_engine():
    text = "\n".join(int8_engines_section([variant(45.0)], torch_bench(45.3)))
    row = next(line for line in text.splitlines() if line.startswith("| `compiled int8 minmax`"))
    assert "1.17x [1.15-1.18] faster than `compiled fp16`" in row  # the ratio read from the other side
    assert "| 45.3 | 45.0 | yes |" in row and "| 1.45 |" in row
    disagree = "\n".join(int8_engines_section([variant(44.0)], torch_bench(45.3)))
    assert "**no**: 1.30 dB apart" in disagree and "the engine's figure is the one to trust" in disagree
    guide = "\n".join(int8_engine_lines([variant(45.0)], torch_bench(45.3)))
    assert "What INT8 buys with the fused kernels on GPU X" in guide and "faster than `compiled fp16`" in guide


def test_no_int8_engine_no_section():
    bench = torch_bench(45.0)
    bench["runtimes"].pop("compiled int8 minmax")
    assert int8_engines_section([variant(45.0)], bench) == [] and int8_engine_lines([variant(45.0)], bench) == []


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
    text = "\n".join(sweep_section({"sweep": {"frames": [125, 250, 500, 1500], "calls": 3, "flag_from_frames": 250,
                                              "flag_ratio": 1.25, "engines": {"e": {"rows": cliff, "flags": flags}}}}))
    assert "| 250 | 117.0 (11.700) |" in text and "250 frames: slower than 500 frames" in text
