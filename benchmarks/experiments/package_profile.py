"""Why a shipped package (build_package, reduce-overhead) decodes slower than its own module as
a CUDA graph (issue 36): the INT8 engine of gpu_units' run `results/gpu_units/h100_run5_lean`
took 13.06 ms as a package and 12.55 ms as a module graph in the same process. Builds the fp16
and INT8 (minmax) engines from that run's tune record, then profiles one warm 60 s decode of
each module graph and each package under torch.profiler: device time by kernel name and count,
and the kernels a package runs that its module does not.

    python benchmarks/experiments/package_profile.py RECORD.json RANGES.json OUT_DIR [--module-only]

Also each layer's device time inside the module graph (OUT_DIR/layers.md, and "layers" in profile.json): the
module's Triton launches in the order they ran, each named after its layer, or its residual unit where the unit
runs as one kernel. The tune stage's layer table times each layer alone, launched from Python, which may add
a launch's cost to small layers; this is the time the same kernels take inside a decode. --module-only leaves
the packages out.
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
from vae_engines.model.fused import FusedDecoder, layer_specs  # noqa: E402
from vae_engines.model.oobleck import fold_decoder, load_vae  # noqa: E402
from vae_engines.runtime import load  # noqa: E402
from vae_engines.runtime.base import Shape  # noqa: E402


TRITON_KERNELS = ("fused_conv_kernel", "residual_unit_kernel", "output_conv_kernel")


def kernels(fn) -> list:
    """The device kernels of one warm call of fn, in the order they started: (name, ms)."""
    fn()
    gpu_units.sync()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        fn()
        gpu_units.sync()
    events = sorted((e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA),
                    key=lambda e: e.time_range.start)
    return [(e.name, e.device_time_total / 1e3) for e in events]


def by_kernel(launched: list) -> dict:
    """Device time and count by kernel name, of kernels()'s list."""
    by_name: dict = defaultdict(lambda: [0.0, 0])
    for name, ms in launched:
        by_name[name[:90]][0] += ms
        by_name[name[:90]][1] += 1
    return {k: [round(v[0], 4), v[1]] for k, v in sorted(by_name.items(), key=lambda kv: -kv[1][0])}


def launch_labels(decoder, tiles: dict) -> list[str]:
    """What each of the module's Triton launches computes, in network order: a layer, or a residual unit
    where its tile says it runs as one kernel (its k=1 layer then launches nothing)."""
    fused = {name for name, tile in tiles.items() if tile and name.rsplit(".", 1)[-1].startswith("res_unit")}
    labels = []
    for spec in layer_specs(decoder):
        unit = spec.name.rsplit(".", 1)[0]  # a unit's layers: block.i.res_unitj.conv1 / .conv2
        if unit in fused:
            if spec.name.endswith(".conv1"):
                labels.append(f"{unit} (one kernel)")
        else:
            labels.append(spec.name)
    return labels


def per_layer(ran: list, labels: list[str]) -> list:
    """[label, ms] for the Triton launches of `ran` in order, named by `labels`; other kernels by their name."""
    out, names = [], iter(labels)
    for name, ms in ran:
        out.append([next(names, "?") if name.startswith(TRITON_KERNELS) else name[:60], round(ms, 4)])
    return out


def layers_md(result: dict) -> str:
    kinds = list(result)
    rows = {k: result[k]["layers"] for k in kinds}
    lines = ["| launch | " + " | ".join(f"{k} ms" for k in kinds) + " |", "|---|" + "---|" * len(kinds)]
    if len({tuple(r[0] for r in v) for v in rows.values()}) == 1:  # same launches: side by side
        for i, (label, _) in enumerate(rows[kinds[0]]):
            lines.append(f"| {label} | " + " | ".join(str(rows[k][i][1]) for k in kinds) + " |")
    else:
        for k in kinds:
            lines += [f"| {k}: {label} | {ms} |" for label, ms in rows[k]]
    lines.append("| sum | " + " | ".join(str(round(sum(r[1] for r in rows[k]), 3)) for k in kinds) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    module_only = "--module-only" in sys.argv
    sys.argv = [a for a in sys.argv if a != "--module-only"]
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
        ran = kernels(replay)
        mod = by_kernel(ran)
        result[name] = {"module_device_ms": round(sum(v[0] for v in mod.values()), 3), "module": mod,
                        "layers": per_layer(ran, launch_labels(decoder, tiles))}
        (out / "profile.json").write_text(json.dumps(result, indent=1))
        (out / "layers.md").write_text(layers_md(result))
        if module_only:
            module = None
            torch.cuda.empty_cache()
            continue
        path = out / f"{name.replace(' ', '_')}.pt2"
        build_package(decoder, Shape(channels=64, hop=1920, sampling_rate=48000), precision="fp16",
                      mode="reduce-overhead", device=CFG.device,
                      profile=ProfileParams(min_frames=125, opt_frames=CFG.frames, max_frames=CFG.frames),
                      path=path, model="seeded", kernels="fused", quant=quant, variant=name if quant else None,
                      tiles=tiles)
        engine = load(path, on_range="off") if quant else load(path)
        for _ in range(3):
            engine.decode(latent, check_finite=False)
        pkg = by_kernel(kernels(lambda: engine.decode(latent, check_finite=False)))
        pkg_checked = by_kernel(kernels(lambda: engine.decode(latent)))
        only = {k: v for k, v in pkg.items() if k not in mod}
        result[name] |= {"package_device_ms": round(sum(v[0] for v in pkg.values()), 3),
                         "package_checked_device_ms": round(sum(v[0] for v in pkg_checked.values()), 3),
                         "module_kernels": sum(v[1] for v in mod.values()),
                         "package_kernels": sum(v[1] for v in pkg.values()),
                         "package_only": only, "package": pkg,
                         "checked_only": {k: v for k, v in pkg_checked.items() if k not in pkg}}
        print(json.dumps({k: v for k, v in result[name].items() if k not in ("module", "package", "layers")}),
              flush=True)
        (out / "profile.json").write_text(json.dumps(result, indent=1))
        module = engine = None
        path.unlink()
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
