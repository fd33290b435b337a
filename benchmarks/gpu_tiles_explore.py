"""Kernel options the tune stage does not try yet (issue 31), on the layers where a 60 s decode
spends its time, against the tile the tune stage chose -- in a workspace where the pipeline
ran on a GPU (engines/torch/tiles.json, params.yaml's model).

    python benchmarks/gpu_tiles_explore.py --out DIR [--frames 1500]

Options (kernels.triton_conv.launch's tile): a persistent grid (1 or 2 programs per
multiprocessor walking the tiles), the K loop warp-specialized (Triton's warp_specialize),
and larger K blocks (fp16 BK 128, int8 BK 256). Each layer's median of 5 calls at the
decode's shapes (compiled.tune.time_layer), fp16 and int8 (random int8 weights and unit
scales: timing does not depend on the values). Writes DIR/explore.json after every layer.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LAYERS = ("block.0.res_unit1.conv1", "block.2.res_unit1.conv1", "block.4.res_unit1.conv1", "block.4.res_unit1.conv2",
          "block.3.res_unit2.conv2", "block.4.conv_t1")


def variants(tile: list[int], kind: str, channels: int) -> list[list[int]]:
    """The chosen tile with each option, and larger K blocks where the channels allow."""
    bm, bn, bk, warps, stages = tile[:5]
    out = [tile[:5] + [1, 0], tile[:5] + [2, 0], tile[:5] + [0, 1], tile[:5] + [1, 1]]
    big = 128 if kind == "fp16" else 256
    if channels % big == 0 and bk < big:
        out += [[bm, bn, big, warps, max(2, stages - 1)], [bm, bn, big, 8, 2]]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--frames", type=int, default=1500)
    args = p.parse_args()

    import torch

    from vae_engines.compiled.tune import all_int8, label, layer_frames, tile_of, time_layer
    from vae_engines.core.params import load
    from vae_engines.model.fused import FusedDecoder
    from vae_engines.model.oobleck import fold_decoder, load_vae

    device = torch.device("cuda")
    tuned = json.loads(Path("engines/torch/tiles.json").read_text())
    decoder = fold_decoder(load_vae(load("params.yaml").model).vae)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"device": torch.cuda.get_device_name(), "frames": args.frames, "layers": {}}
    generator = torch.Generator(device=device).manual_seed(0)
    for kind, quant in (("fp16", None), ("int8", all_int8(decoder))):
        module = FusedDecoder(decoder, quant).to(device).eval()
        rows = layer_frames([layer.spec for layer in module.layers], args.frames)
        for i, layer in enumerate(module.layers):
            if layer.spec.name not in LAYERS:
                continue
            chosen = tile_of(tuned[kind][layer.spec.name]["chosen"])
            channels = layer.weight.shape[1] // layer.spec.taps
            timings = {}
            for tile in [chosen] + (variants(chosen, kind, channels) if chosen else []):
                layer.tile = tile
                try:
                    timings[label(tile)] = time_layer(layer, rows[i], device, generator)
                except Exception as exc:  # noqa: BLE001  (an option this GPU or Triton cannot run: recorded)
                    timings[label(tile)] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
            n, k = layer.weight.shape
            flop = 2.0 * rows[i] * n * k
            result["layers"][f"{kind} {layer.spec.name}"] = {
                "chosen": label(chosen), "ms": timings,
                "tflops": {t: round(flop / ms / 1e9, 1) for t, ms in timings.items() if isinstance(ms, float)}}
            print(kind, layer.spec.name, timings, flush=True)
            (out / "explore.json").write_text(json.dumps(result, indent=1) + "\n")
        del module


if __name__ == "__main__":
    main()
