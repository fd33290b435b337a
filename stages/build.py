"""DVC stage `build_fp16` / `build@<variant>`: one engine plan and its metadata."""

from vae_engines.core import params as config

from vae_engines.core import entry
from vae_engines.core.provenance import model_facts
from vae_engines.trt.backend import resolve
from vae_engines.trt.build import engine_from_onnx


def main(args):
    params = config.load(args.params)
    backend = resolve(params.build.backend)
    hop, _ = model_facts(args.onnx)
    engine_from_onnx(backend, args.onnx, args.plan, profile=params.profile, build=params.build, hop=hop,
                     timing_cache_path=args.timing_cache)


if __name__ == "__main__":
    p = entry.parser(__doc__)
    p.add_argument("--onnx", required=True)
    p.add_argument("--plan", required=True)
    p.add_argument("--timing-cache", required=True)
    entry.run(main, p)
