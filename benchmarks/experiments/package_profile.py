"""Why a shipped package (build_package, reduce-overhead) decodes slower than its own module as
a CUDA graph (issue 36): the INT8 engine of gpu_units' run `results/gpu_units/h100_run5_lean`
took 13.06 ms as a package and 12.55 ms as a module graph in the same process. Builds the fp16
and INT8 (minmax) engines from that run's tune record, then profiles one warm 60 s decode of
each module graph and each package under torch.profiler: device time by kernel name and count,
and the kernels a package runs that its module does not.

    python benchmarks/experiments/package_profile.py RECORD.json RANGES.json OUT_DIR
"""

import json
import sys
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gpu_units  # noqa: E402
from gpu_units import CFG, graph, quant_of, seeded  # noqa: E402

from vae_engines.compiled.build import build_package  # noqa: E402
from vae_engines.compiled.tune import tiles_for  # noqa: E402
from vae_engines.core.params import ProfileParams  # noqa: E402
from vae_engines.model.fused import FusedDecoder  # noqa: E402
from vae_engines.model.oobleck import fold_decoder, load_vae  # noqa: E402
from vae_engines.runtime import load  # noqa: E402
from vae_engines.runtime.base import Shape  # noqa: E402


def profile(fn) -> dict:
    fn()
    gpu_units.sync()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        fn()
        gpu_units.sync()
    by_name: dict = defaultdict(lambda: [0.0, 0])
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            by_name[e.name[:90]][0] += e.device_time_total / 1e3
            by_name[e.name[:90]][1] += 1
    return {k: [round(v[0], 4), v[1]] for k, v in sorted(by_name.items(), key=lambda kv: -kv[1][0])}


def main() -> None:
    tuned = json.loads(Path(sys.argv[1]).read_text())["phases"]["tune"]["result"]
    out = Path(sys.argv[3])
    out.mkdir(parents=True, exist_ok=True)
    decoder = fold_decoder(load_vae(CFG.model).vae).eval()
    quants = {"fp16": None, "int8 minmax": quant_of(decoder, Path(sys.argv[2]))}
    decoder.to("cpu")
    latent = seeded(CFG.frames, 0)
    result = {}
    for name, quant in quants.items():
        tiles = tiles_for(tuned, set(quant or {}))
        module = FusedDecoder(decoder, quant, tiles).to(CFG.device).eval()
        replay, _ = graph(module, latent)
        mod = profile(replay)
        path = out / f"{name.replace(' ', '_')}.pt2"
        build_package(decoder, Shape(channels=64, hop=1920, sampling_rate=48000), precision="fp16",
                      mode="reduce-overhead", device=CFG.device,
                      profile=ProfileParams(min_frames=125, opt_frames=CFG.frames, max_frames=CFG.frames),
                      path=path, model="seeded", kernels="fused", quant=quant, variant=name if quant else None,
                      tiles=tiles)
        engine = load(path, on_range="off") if quant else load(path)
        for _ in range(3):
            engine.decode(latent, check_finite=False)
        pkg = profile(lambda: engine.decode(latent, check_finite=False))
        pkg_checked = profile(lambda: engine.decode(latent))
        only = {k: v for k, v in pkg.items() if k not in mod}
        result[name] = {"module_device_ms": round(sum(v[0] for v in mod.values()), 3),
                        "package_device_ms": round(sum(v[0] for v in pkg.values()), 3),
                        "package_checked_device_ms": round(sum(v[0] for v in pkg_checked.values()), 3),
                        "module_kernels": sum(v[1] for v in mod.values()),
                        "package_kernels": sum(v[1] for v in pkg.values()),
                        "package_only": only, "module": mod, "package": pkg,
                        "checked_only": {k: v for k, v in pkg_checked.items() if k not in pkg}}
        print(json.dumps({k: v for k, v in result[name].items() if k not in ("module", "package")}), flush=True)
        (out / "profile.json").write_text(json.dumps(result, indent=1))
        module = engine = None
        path.unlink()
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
