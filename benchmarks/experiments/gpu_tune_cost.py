"""What the tune stage and an INT8 engine's build and bench cost on a GPU (issue 30), each
measured in a fresh process from an empty Triton cache.

    python benchmarks/experiments/gpu_tune_cost.py --out DIR [--jobs 16] [--smoke]

Full-size seeded ACE-Step 1.5 decoder, the 60 s GPU profile (125 / 1500 / 1500 frames):

1. tune with the kernels compiled first in --jobs processes (compiled.tune.precompile), from an
   empty Triton cache;
2. in that cache: the fused fp16 engine and an INT8 engine (every layer int8, ranges the
   largest |x| over two seeded latents) built with phase 1's tiles and CUDA graphs, as the
   compile stages build them (their records: export, compile and check seconds); then
   bench_int8 (the stage's function) on the two engines at a short bench, to see it run there;
3. tune with the kernels compiled one after another as the layers are timed (the tune stage
   before issue 30), from another empty cache (last: --skip-serial leaves it out).

Writes DIR/tune_cost.json after every phase. --smoke: the shipped small model on the CPU
(Triton's interpreter, tiny tiles): it checks the script, its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def phase_tune(jobs: int, smoke: bool, out: Path) -> dict:
    import torch

    from vae_engines.compiled.build import tuning_frames
    from vae_engines.compiled.tune import tune_tiles
    from vae_engines.core.params import ModelParams, ProfileParams
    from vae_engines.model.oobleck import fold_decoder, load_vae

    started = time.perf_counter()
    model = ModelParams() if smoke else ModelParams(source="seeded", checkpoint="vae_engines/fixtures/acestep-1.5")
    device = torch.device("cpu" if smoke else "cuda")
    if smoke:  # one tile a kind, one timed call: the interpreter is slow
        from vae_engines.compiled import tune

        tune.CANDIDATES.update(fp16=((256, 64, 64, 4, 2),), int8=((256, 64, 128, 4, 2),))
        timed = tune.time_call
        tune.time_call = lambda fn, device: timed(fn, device, repeats=1, warmup=0)
    decoder = fold_decoder(load_vae(model).vae)
    loaded = time.perf_counter()
    profile = ProfileParams(min_frames=2, opt_frames=4, max_frames=4) if smoke else \
        ProfileParams(min_frames=125, opt_frames=1500, max_frames=1500)
    record = tune_tiles(decoder, device, tuning_frames(profile), jobs)
    record.update(device={"name": torch.cuda.get_device_name() if device.type == "cuda" else "cpu"},
                  frames=tuning_frames(profile))
    out.write_text(json.dumps(record))
    return {"jobs": jobs, "load_seconds": round(loaded - started, 1),
            "tune_seconds": round(time.perf_counter() - loaded, 1), "precompile": record["precompile"]}


def phase_engines(tiles_json: Path, smoke: bool, out_dir: Path) -> dict:
    import numpy as np
    import torch

    from vae_engines.compiled.build import build_package, tuning_frames
    from vae_engines.compiled.int8 import observed_quant
    from vae_engines.compiled.tune import tiles_for
    from vae_engines.core import device as devices
    from vae_engines.core.choices import CompileMode
    from vae_engines.core.params import BenchParams, ModelParams, ProfileParams
    from vae_engines.data.latentset import write_latent_set
    from vae_engines.measure.torch_engines import bench_int8
    from vae_engines.model.oobleck import fold_decoder, load_vae
    from vae_engines.runtime.base import Shape
    from vae_engines.runtime.compiled import CompiledDecoder

    model = ModelParams() if smoke else ModelParams(source="seeded", checkpoint="vae_engines/fixtures/acestep-1.5")
    device = torch.device("cpu" if smoke else "cuda")
    profile = ProfileParams(min_frames=2, opt_frames=4, max_frames=4) if smoke else \
        ProfileParams(min_frames=125, opt_frames=1500, max_frames=1500)
    loaded = load_vae(model)
    decoder = fold_decoder(loaded.vae)
    shape = Shape(channels=loaded.latent_channels, hop=loaded.hop, sampling_rate=loaded.sampling_rate)
    tuned = json.loads(tiles_json.read_text())
    seeded = [torch.randn(1, 64, profile.opt_frames, generator=torch.Generator().manual_seed(s)).to(device)
              for s in (10, 11)]
    quant = observed_quant(decoder.to(device), seeded)
    decoder = decoder.cpu()
    mode = CompileMode.DEFAULT if smoke else CompileMode.REDUCE_OVERHEAD
    records = {}
    for name, q in (("fp16", None), ("int8", quant)):
        started = time.perf_counter()
        record = build_package(decoder, shape, precision="fp16", mode=mode, device=device, profile=profile,
                               path=out_dir / f"{name}.pt2", model=loaded.description, kernels="fused", quant=q,
                               variant="observed" if q else None, tiles=tiles_for(tuned, set(q or ())))
        records[name] = {k: record.get(k) for k in ("export_seconds", "compile_seconds", "check_seconds", "checks",
                                                    "bytes")}
        records[name]["build_seconds"] = round(time.perf_counter() - started, 1)
    held = np.random.default_rng(3).standard_normal((2, 64, profile.opt_frames)).astype(np.float32) * 0.03
    write_latent_set(out_dir / "holdout", held, {"source": "gpu_tune_cost"})
    (out_dir / "reference").mkdir(exist_ok=True)
    with torch.no_grad(), devices.exact_fp32():
        reference = decoder.to(device)(torch.from_numpy(held).to(device)).cpu().numpy()
    np.save(out_dir / "reference" / "heldout_fp32.npy", reference)
    bench = BenchParams(frames=(2, 4) if smoke else (125, 1500), repeats=3, warmup=1, sweep=2 if smoke else 4,
                        stream_frames=4 if smoke else 1500, stream_window=2 if smoke else 125,
                        stream_overlap=1 if smoke else 16)
    started = time.perf_counter()
    doc = bench_int8("observed", bench, CompiledDecoder(out_dir / "fp16.pt2"), device=device,
                     engine=out_dir / "int8.pt2", holdout_dir=out_dir / "holdout", reference_dir=out_dir / "reference")
    records["bench_int8"] = {"seconds": round(time.perf_counter() - started, 1), "ratios": doc["ratios"],
                             "quality": doc["quality"], "memory": doc["memory"]}
    return records


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--jobs", type=int, default=16, help="processes that compile the kernels ahead (default 16)")
    p.add_argument("--smoke", action="store_true", help="check the script on a CPU (figures meaningless)")
    p.add_argument("--skip-serial", action="store_true", help="leave out phase 1 (the serial tune), run last")
    p.add_argument("--phase", help=argparse.SUPPRESS)  # the child process of one phase
    p.add_argument("--arg", help=argparse.SUPPRESS)
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.phase == "tune":
        print(json.dumps(phase_tune(int(args.arg), args.smoke, out / f"tiles_{args.arg}.json")))
        return
    if args.phase == "engines":
        print(json.dumps(phase_engines(Path(args.arg), args.smoke, Path(tempfile.mkdtemp(dir=out)))))
        return
    result: dict = {"phases": {}}
    caches = {name: tempfile.mkdtemp(prefix=f"triton_{name}_") for name in ("serial", "ahead")}

    def child(name: str, phase: str, arg: str, cache: str) -> None:
        started = time.perf_counter()
        env = {**os.environ, "TRITON_CACHE_DIR": cache, "TORCHINDUCTOR_CACHE_DIR": cache + "_inductor"}
        done = subprocess.run([sys.executable, __file__, "--out", str(out), "--phase", phase, "--arg", arg,
                               *(["--smoke"] if args.smoke else [])], env=env, capture_output=True, text=True)
        entry = {"wall_seconds": round(time.perf_counter() - started, 1), "exit_code": done.returncode}
        lines = done.stdout.strip().splitlines()
        if done.returncode == 0 and lines:
            entry.update(json.loads(lines[-1]))
        else:
            entry["error"] = (done.stderr or done.stdout)[-3000:]
        result["phases"][name] = entry
        (out / "tune_cost.json").write_text(json.dumps(result, indent=1))
        print(name, json.dumps(entry)[:600], flush=True)

    child(f"tune, kernels compiled ahead in {args.jobs} processes", "tune", str(args.jobs), caches["ahead"])
    child("engines and bench_int8", "engines", str(out / f"tiles_{args.jobs}.json"), caches["ahead"])
    if not args.skip_serial:
        child("tune, kernels compiled as timed", "tune", "1", caches["serial"])


if __name__ == "__main__":
    main()
