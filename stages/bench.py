"""DVC stage `bench_fp16` / `bench@<variant>`: latency, ratios with their spread,
streaming and memory, with the fp16 and fp32 references timed in the same rounds."""

from vae_engines.core import entry, params
from vae_engines.measure.benchmark import bench_stage


def main(args):
    p = params.load(args.params)
    p.variant(args.variant)
    bench_stage(args.variant, p, onnx_path=args.onnx, fp16_onnx=args.fp16, fp32_onnx=args.fp32, plan=args.plan,
                fp16_plan=args.fp16_plan, out_json=args.out, plot_json=args.plot)


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
