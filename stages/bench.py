"""DVC stage `bench_fp16` / `bench@<variant>`: latency sweep, streaming and memory, with the
fp32 and fp16 references timed in the same process."""

from pathlib import Path

from tqdm import tqdm

from vae_engines.core import params as config

from vae_engines.core import entry
from vae_engines.measure.bench import ratios, streaming, sweep
from vae_engines.core.fileio import read_json, write_json
from vae_engines.model.oobleck import fold_decoder, load_vae
from vae_engines.core.provenance import model_facts, provenance
from vae_engines.measure.runtimes import OrtRuntime, TorchRuntime, variant_runtime


def main(args):
    params = config.load(args.params)
    bench = params.bench
    runtime, trt_status = variant_runtime(params.build.backend, args.plan, args.onnx, bench.threads)
    hop, sr = model_facts(args.onnx)
    runtimes = {args.variant: runtime}
    if args.variant != "fp16":
        runtimes["fp16"] = OrtRuntime(args.fp16, bench.threads)
    runtimes["fp32"] = OrtRuntime(args.fp32, bench.threads)
    if "torch" in bench.runtimes and args.variant == "fp16":
        # the PyTorch decoder is the same for every variant: timed once, beside fp16 and fp32
        runtimes["torch_fp32"] = TorchRuntime(fold_decoder(load_vae(params.model).vae), bench.threads)
    channels = 64 if runtime.name != "onnxruntime" else runtime.input.shape[1]
    points = len(runtimes) * len(bench.frames) * len(bench.batches)
    with tqdm(total=points, desc=f"bench {args.variant}", unit="point", leave=False) as bar:
        latency, rss = sweep(runtimes, bench.frames, bench.batches, channels, bench.warmup, bench.repeats, bar)
    stream = {name: streaming(runtimes[name].decode, channels, bench.stream_frames, bench.stream_window,
                              bench.stream_overlap, hop, sr) for name in (args.variant, "fp32")}
    plan_meta = read_json(Path(args.plan).with_suffix(".json"))
    engine = {k: plan_meta[k] for k in ("backend", "backend_version", "target", "build_seconds", "plan_bytes",
                                        "num_layers")}
    tensorrt = trt_status if "tensorrt" in bench.runtimes else "not measured: not in bench.runtimes"
    # bench.json holds the numbers (DVC metrics); bench.provenance.json the full stats and their origin
    write_json(args.out, {
        "variant": args.variant,
        "tensorrt": tensorrt,
        "median_ms": {name: {point: s["median_ms"] for point, s in pts.items()} for name, pts in latency.items()},
        "speedup_vs_fp32": ratios(latency, args.variant, "fp32"),
        "speedup_vs_fp16": ratios(latency, args.variant, "fp16"),
        "streaming": stream,
        "memory": {"plan_bytes": plan_meta["plan_bytes"], "onnx_bytes": Path(args.onnx).stat().st_size,
                   "peak_rss_mib": {k: round(v / 2**20, 1) for k, v in rss.items()},
                   "engine_device_memory_bytes": runtime.describe().get("device_memory_bytes", tensorrt)},
    })
    write_json(Path(args.out).with_suffix(".provenance.json"), {
        "runtimes": {name: r.describe() for name, r in runtimes.items()},
        "engine": engine,
        "latency": latency,
        "provenance": provenance(args.env, args.onnx, params.model, params.profile, params.bench,
                                 params.int8.get(args.variant)),
    })
    rows = [{"variant": args.variant, "runtime": name, "batch": int(point.split("_")[0][1:]),
             "frames": int(point.split("_f")[1]), "median_ms": stats["median_ms"]}
            for name, points_ in latency.items() for point, stats in points_.items()]
    write_json(args.plot, rows)


if __name__ == "__main__":
    p = entry.parser(__doc__)
    p.add_argument("--variant", required=True)
    p.add_argument("--onnx", required=True)
    p.add_argument("--fp32", required=True)
    p.add_argument("--fp16", required=True)
    p.add_argument("--plan", required=True)
    p.add_argument("--env", required=True)
    p.add_argument("--out", required=True, help="bench.json")
    p.add_argument("--plot", required=True, help="latency plot rows (JSON)")
    entry.run(main, p)
