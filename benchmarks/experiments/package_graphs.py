"""A package's CUDA graphs captured by the runtime itself (runtime.compiled.CudaGraphs) against
Inductor's CUDA graph trees (torch.compile mode reduce-overhead, what packages ran before) and
the module as a plain CUDA graph, one process on a GPU (issue 36).

    python benchmarks/experiments/package_graphs.py RECORD.json RANGES.json OUT_DIR

RECORD.json: a gpu_units run's results (its tune record gives the tiles); RANGES.json: the INT8
variant's ranges. For fp16 and INT8: build the package (compiled.build.build_package,
reduce-overhead), load it (runtime.load: the runtime's graphs), load the same exported program
under torch.compile(mode="reduce-overhead") (the trees), and build the module; check the three
decode alike and that the runtime hands out copies; then 60 s (1500 frames) and streaming-window
(125 frames) decodes, 20 rounds taking turns, ratios with 95% intervals.
"""

import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpu_units import CFG, call_ms, graph, quant_of, seeded  # noqa: E402

from vae_engines.compiled.build import build_package  # noqa: E402
from vae_engines.compiled.tune import tiles_for  # noqa: E402
from vae_engines.core import device as devices  # noqa: E402
from vae_engines.core.env import fingerprint  # noqa: E402
from vae_engines.core.params import ProfileParams  # noqa: E402
from vae_engines.measure.timing import Timing, paired_ratio, turns  # noqa: E402
from vae_engines.metrics import peak_psnr  # noqa: E402
from vae_engines.model.fused import FusedDecoder  # noqa: E402
from vae_engines.model.oobleck import fold_decoder, load_vae  # noqa: E402
from vae_engines.runtime import load  # noqa: E402
from vae_engines.runtime.base import Shape  # noqa: E402

ROUNDS = 20


def trees(path: Path):
    """The package as it ran before: the exported program under Inductor's CUDA graph trees."""
    program = torch.export.load(str(path))
    fn = torch.compile(program.module(), mode="reduce-overhead")

    def call(x):
        torch._dynamo.maybe_mark_dynamic(x, 2)
        with torch.inference_mode(), devices.exact_fp32():
            return fn(x).clone()
    return call


def main() -> None:
    tuned = json.loads(Path(sys.argv[1]).read_text())["phases"]["tune"]["result"]
    out = Path(sys.argv[3])
    out.mkdir(parents=True, exist_ok=True)
    decoder = fold_decoder(load_vae(CFG.model).vae).eval()
    quants = {"fp16": None, "int8 minmax": quant_of(decoder, Path(sys.argv[2]))}
    decoder.to("cpu")
    result = {"machine": fingerprint(), "device": devices.describe(CFG.device),
              "started": time.strftime("%Y-%m-%d %H:%M:%S"), "kinds": {}}
    calls, keep = {}, []  # keep: what the captured graphs read (a freed module's weights fault a replay)
    for name, quant in quants.items():
        tiles = tiles_for(tuned, set(quant or {}))
        path = out / f"{name.replace(' ', '_')}.pt2"
        build_package(decoder, Shape(channels=64, hop=1920, sampling_rate=48000), precision="fp16",
                      mode="reduce-overhead", device=CFG.device,
                      profile=ProfileParams(min_frames=125, opt_frames=CFG.frames, max_frames=CFG.frames),
                      path=path, model="seeded", kernels="fused", quant=quant, variant=name if quant else None,
                      tiles=tiles)
        engine = load(path, on_range="off") if quant else load(path)
        old = trees(path)
        module = FusedDecoder(decoder, quant, tiles).to(CFG.device).eval()
        x = seeded(CFG.frames, 30, 0.5)
        with torch.inference_mode():
            want = module(x).float().cpu().numpy()
        got = [engine.decode(x, check_finite=False) for _ in range(4)]  # eager, capture, replay, replay
        aliased = got[2].data_ptr() == got[3].data_ptr()
        with torch.inference_mode():
            got[3].zero_()  # a caller's copy: writing it must not touch the next decode
        again = engine.decode(x, check_finite=False)
        result["kinds"][name] = {
            "runtime_graphs_vs_module_db": [round(float(peak_psnr(want, g.float().cpu().numpy())), 2) for g in got[:3]],
            "after_caller_wrote_its_copy_db": round(float(peak_psnr(want, again.float().cpu().numpy())), 2),
            "outputs_aliased": aliased, "graphs_captured": len(engine.graphs.graphs),
            "trees_vs_module_db": round(float(peak_psnr(want, old(x).float().cpu().numpy())), 2)}
        print(name, json.dumps(result["kinds"][name]), flush=True)
        for frames in (CFG.frames, 125):
            latent = seeded(frames, 0)
            replay, _ = graph(module, latent)
            keep += [module, latent, engine, old]
            calls[(frames, f"{name} module graph")] = replay
            calls[(frames, f"{name} package, runtime graphs")] = (lambda e=engine, v=latent: e.decode(v, check_finite=False))
            calls[(frames, f"{name} package, graph trees")] = (lambda f=old, v=latent: f(v))
            for key, fn in calls.items():
                if key[0] == frames and key[1].startswith(name):
                    for _ in range(3):
                        fn()
        path.unlink()
    for frames in (CFG.frames, 125):
        names = [n for f, n in calls if f == frames]
        timings = {n: Timing(n, 1, frames) for n in names}
        for r in range(ROUNDS):
            for n in turns(names, r):
                timings[n].ms.append(call_ms(calls[(frames, n)], repeats=1, warm=False))
        ratios = []
        for kind in quants:
            base = timings[f"{kind} package, graph trees"]
            ratios += [paired_ratio(timings[f"{kind} package, runtime graphs"], base),
                       paired_ratio(timings[f"{kind} module graph"], timings[f"{kind} package, runtime graphs"])]
        ratios.append(paired_ratio(timings["int8 minmax package, runtime graphs"], timings["fp16 package, runtime graphs"]))
        result[f"frames_{frames}"] = {"timings": {n: t.summary() for n, t in timings.items()}, "ratios": ratios}
        for n, t in timings.items():
            print(frames, n, t.summary()["median_ms"], flush=True)
        for r in ratios:
            print(frames, r["subject"], "/", r["reference"], r["median_ratio"], r["ci95"], r["verdict"], flush=True)
        (out / "results.json").write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
