"""Where each INT8 engine and its variant's Q/DQ graph part, layer by layer (measure.agreement),
in a workspace where `dvc repro` has run: on held-out windows, calibration windows, the seeded
N(0, 1) latent the build check used to decode (issue 30's 27 dB), and normal latents with the
calibration latents' own per-channel mean and std.

    python benchmarks/int8_agreement.py --out DIR [--variants a,b] [--frames 250] [--count 2]

Reads params.yaml (model, compute, compile.int8), engines/onnx/{fp32,<variant>}.onnx and
.ranges.json, data/holdout, data/calibration and, on a GPU, engines/torch/tiles.json (the
engine runs the tune stage's Triton tiles; on a CPU the op's torch reference). Writes
DIR/agreement.json and DIR/agreement.md, one variant at a time as each finishes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def latent_sets(frames: int, count: int, channels: int) -> dict[str, np.ndarray]:
    from vae_engines.data.latentset import read_latent_set

    held = read_latent_set("data/holdout")[:count, :, :frames]
    calibration = read_latent_set("data/calibration")
    rng = np.random.default_rng(0)
    mean = calibration.mean(axis=(0, 2))[None, :, None]
    std = calibration.std(axis=(0, 2))[None, :, None]
    normal = rng.standard_normal((count, channels, frames)).astype(np.float32)
    return {"held-out windows": held, "calibration windows": calibration[:count, :, :frames],
            "seeded N(0, 1) (the build check's latent before issue 30)": normal,
            "normal with the calibration latents' per-channel mean and std": (normal * std + mean).astype(np.float32)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--variants", help="comma-separated INT8 variants (default: compile.int8, else every variant)")
    p.add_argument("--frames", type=int, default=250, help="frames per latent (default 250)")
    p.add_argument("--count", type=int, default=2, help="latents per set (default 2)")
    args = p.parse_args()

    from vae_engines.compiled.build import read_tiles
    from vae_engines.compiled.tune import tiles_for
    from vae_engines.core import device as devices
    from vae_engines.core.env import fingerprint
    from vae_engines.core.fileio import read_json
    from vae_engines.core.params import load
    from vae_engines.measure.agreement import agreement_markdown, fp32_graph, int8_agreement
    from vae_engines.model.oobleck import fold_decoder, load_vae

    params = load("params.yaml")
    device = devices.resolve(params.compute)
    variants = args.variants.split(",") if args.variants else list(params.compile.int8 or params.int8)
    loaded = load_vae(params.model)
    decoder = fold_decoder(loaded.vae).to(device)
    sets = latent_sets(args.frames, args.count, loaded.latent_channels)
    tuned = read_tiles("engines/torch/tiles.json", device) if device.type == "cuda" else {}
    fp32 = fp32_graph("engines/onnx/fp32.onnx", device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"machine": fingerprint(), "device": devices.describe(device), "model": loaded.description,
           "frames": args.frames, "count": args.count, "variants": {}}
    lines = [f"# INT8 engines against their Q/DQ graphs, layer by layer ({loaded.description})", "",
             f"{args.count} latents of {args.frames} frames per set; device {doc['device'].get('name', 'cpu')}.", ""]
    for variant in variants:
        record = read_json(f"engines/onnx/{variant}.ranges.json")
        int8 = {layer["name"] for layer in record["layers"] if layer["int8"]}
        result = int8_agreement(decoder, fp32, f"engines/onnx/{variant}.onnx", record, sets, device=device,
                                tiles=tiles_for(tuned, int8) if tuned else None)
        doc["variants"][variant] = result
        lines += agreement_markdown(result)
        (out / "agreement.json").write_text(json.dumps(doc, indent=1) + "\n")
        (out / "agreement.md").write_text("\n".join(lines) + "\n")
        for name, s in result["sets"].items():
            o = s["output"]
            print(f"{variant:14s} {name[:40]:40s} graph {o['graph_vs_fp32_db']:6.1f}  engine "
                  f"{o['engine_vs_fp32_db']:6.1f}  mutual {o['engine_vs_graph_db']:6.1f}  clipped at "
                  f"{s['clipped_at']}  parted at {s['parted_at']}", flush=True)


if __name__ == "__main__":
    main()
