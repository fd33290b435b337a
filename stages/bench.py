"""DVC stage `bench@<variant>`: the variant's engine beside the fp16 engine where a GPU here
can run them (else "not measured", with the reason), its size, and what its INT8 buys."""

from pathlib import Path

from vae_engines.core import entry, params
from vae_engines.measure.plans import bench_variant


def main(args):
    p = params.load(args.params)
    onnx = {args.variant: Path(args.onnx), "fp16": Path(args.fp16), "fp32": Path(args.fp32)}
    plans = {args.variant: Path(args.plan), "fp16": Path(args.fp16_plan)}
    bench_variant(args.variant, p.bench, threads=p.compute.threads, onnx=onnx, plans=plans, out_json=args.out,
                  plot_json=args.plot)


if __name__ == "__main__":
    p = entry.parser(__doc__)
    p.add_argument("--variant", required=True, help="fp16, or a recipe name under int8: in params.yaml")
    p.add_argument("--onnx", required=True, help="the variant's ONNX")
    p.add_argument("--fp16", required=True, help="fp16 ONNX (reference)")
    p.add_argument("--fp32", required=True, help="fp32 ONNX (reference)")
    p.add_argument("--plan", required=True, help="the variant's engine plan")
    p.add_argument("--fp16-plan", required=True, help="the fp16 engine plan (reference)")
    p.add_argument("--out", required=True, help="bench.json")
    p.add_argument("--plot", required=True, help="latency rows for dvc plots (JSON)")
    entry.run(main, p)
