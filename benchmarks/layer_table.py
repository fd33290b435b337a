"""Each decoder layer's arithmetic rate at the longest tuned length, from the tune stage's record
(engines/torch/tiles.json): the torch path (cuDNN's convolution, then the epilogue -- bias,
residual, Snake, quantization -- as separate passes), the fused fp16 kernel and the fused int8
kernel in the tiles the tune stage chose. Issue 31 asks for it: it shows which layers are
arithmetic-bound and how far from the tensor cores' rate each runs.

    python benchmarks/layer_table.py [--tiles engines/torch/tiles.json] [--out DIR]

FLOPs of a layer: 2 x rows x columns x (taps x input channels) of its implicit GEMM
(model.fused: a ConvTranspose is its 2-tap phase convolution, which does the same multiplies
as the transposed convolution). Reads the model from params.yaml (shapes only). Writes
DIR/layer_table.md and .json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def layer_table(tuned: dict, decoder) -> list[dict]:
    from vae_engines.compiled.tune import layer_frames
    from vae_engines.model.fused import FusedDecoder

    module = FusedDecoder(decoder)
    frames = max(tuned["frames"])
    index = tuned["frames"].index(frames)
    rows = layer_frames([layer.spec for layer in module.layers], frames)
    out = []
    for layer, m in zip(module.layers, rows):
        n, k = layer.weight.shape
        flop = 2.0 * m * n * k
        row = {"layer": layer.spec.name, "rows": m, "columns": n, "k": k, "gflop": round(flop / 1e9, 2)}
        for kind in ("fp16", "int8"):
            entry = tuned[kind][layer.spec.name]
            chosen = entry["chosen"]
            ms = entry["ms"][chosen][index]
            torch_ms = entry["ms"].get("torch", [None] * len(tuned["frames"]))[index]
            row[f"{kind}_tile"] = chosen
            row[f"{kind}_ms"] = ms
            row[f"{kind}_tflops"] = round(flop / ms / 1e9, 1)
            if kind == "fp16" and torch_ms:
                row["torch_ms"] = torch_ms
                row["torch_tflops"] = round(flop / torch_ms / 1e9, 1)
        out.append(row)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiles", default="engines/torch/tiles.json", help="the tune stage's record")
    p.add_argument("--out", default=".", help="output folder")
    args = p.parse_args()

    from vae_engines.core.params import load
    from vae_engines.model.oobleck import fold_decoder, load_vae

    tuned = json.loads(Path(args.tiles).read_text())
    if not tuned.get("fp16"):
        sys.exit(f"error: {args.tiles} holds no tuned layers ({tuned.get('note', 'tuned on no GPU')}); run the tune "
                 "stage on a GPU")
    rows = layer_table(tuned, fold_decoder(load_vae(load("params.yaml").model).vae))
    frames = max(tuned["frames"])
    device = tuned.get("device", {}).get("name", "?")
    total = {k: round(sum(r[k] for r in rows if r.get(k)), 3) for k in ("torch_ms", "fp16_ms", "int8_ms")}
    lines = [f"# Per layer at {frames} frames on {device} (the tune stage's timings)", "",
             "TFLOP/s = the layer's implicit-GEMM FLOPs / its median time. torch: cuDNN's convolution plus the "
             "epilogue as separate passes; fp16 / int8: the fused Triton kernel in the chosen tile (int8: TOPS).", "",
             "| layer | M x N x K | GFLOP | torch ms (TFLOP/s) | fused fp16 ms (TFLOP/s), tile | fused int8 ms (TOPS), tile |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['layer']} | {r['rows']} x {r['columns']} x {r['k']} | {r['gflop']} | "
                     f"{r.get('torch_ms', 'n/a')} ({r.get('torch_tflops', 'n/a')}) | {r['fp16_ms']} ({r['fp16_tflops']}), "
                     f"{r['fp16_tile']} | {r['int8_ms']} ({r['int8_tflops']}), {r['int8_tile']} |")
    lines += ["", f"Sum over the layers: torch {total['torch_ms']} ms, fused fp16 {total['fp16_ms']} ms, fused int8 "
              f"{total['int8_ms']} ms (each layer timed alone; a decode adds what runs between them)."]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "layer_table.md").write_text("\n".join(lines) + "\n")
    (out / "layer_table.json").write_text(json.dumps({"device": device, "frames": frames, "layers": rows,
                                                      "sum_ms": total}, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
