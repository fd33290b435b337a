"""DVC stage `build_fp16` / `build@<variant>`: one engine plan and its metadata."""

from vae_engines.core import entry, params
from vae_engines.trt.build import build_stage


def main(args):
    build_stage(params.load(args.params), onnx_path=args.onnx, plan_path=args.plan,
                timing_cache_path=args.timing_cache)


if __name__ == "__main__":
    p = entry.parser(__doc__)
    p.add_argument("--onnx", required=True, help="fp16 or Q/DQ ONNX")
    p.add_argument("--plan", required=True, help="plan path (metadata goes beside it, .json)")
    p.add_argument("--timing-cache", required=True, help="TensorRT timing cache (kept across builds)")
    entry.run(main, p)
