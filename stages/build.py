"""DVC stage `build@<variant>`: one TensorRT plan and its record."""

from vae_engines.core import entry, params
from vae_engines.trt.backend import resolve
from vae_engines.trt.build import build_plan


def main(args):
    p = params.load(args.params)
    build_plan(resolve(p.build.backend), args.onnx, args.plan, profile=p.profile, build=p.build,
               timing_cache_path=args.timing_cache)


if __name__ == "__main__":
    p = entry.parser(__doc__)
    p.add_argument("--onnx", required=True, help="fp16 or INT8 variant ONNX")
    p.add_argument("--plan", required=True, help="plan path (its record goes beside it, .json)")
    p.add_argument("--timing-cache", required=True, help="TensorRT timing cache (kept across builds)")
    entry.run(main, p)
