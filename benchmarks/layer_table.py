"""Each decoder layer's time at the longest tuned length, from the tune stage's record
(engines/torch/tiles.json), against its roofline floor: the torch path (cuDNN's convolution,
then the epilogue as separate passes), the fused fp16 kernel and the fused int8 kernel in the
tiles the tune stage chose, and each residual unit run as one kernel (kernels.triton_unit)
against its two layers. It shows which layers are arithmetic-bound, how far from the GPU's
ceilings each runs, and so what to work on next (issues 31, 36).

    python benchmarks/layer_table.py [--tiles engines/torch/tiles.json] [--ceilings C.json] [--out DIR]

FLOPs of a layer: 2 x rows x columns x (taps x input channels) of its implicit GEMM
(model.fused: a ConvTranspose is its 2-tap phase convolution, which does the same multiplies
as the transposed convolution). Bytes: what the layer must read and write once -- its input,
its weights, its stored output (the residual stream, or the audio in fp32), the next layer's
input (fp16, or int8 where that layer is int8), and for a residual k=1 layer the stream read
and written back; a fused unit skips its k=7 output. The floor is the larger of bytes at the
measured copy bandwidth and FLOPs at the measured dense GEMM rate (--ceilings: the JSON that
benchmarks/gpu_units.py measures, {copy_tb_s, fp16_tflops, int8_tops}); "x floor" is the
measured time over it. Reads the model from params.yaml (shapes only). Writes DIR/layer_table.md
and .json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vae_engines.compiled.tune import LAYERS, all_int8, layer_frames  # noqa: E402
from vae_engines.model.fused import FusedDecoder, unit_of  # noqa: E402


def _bytes(layer, rows: int) -> float:
    """What one layer (a model.fused.FusedConv) reads and writes once at `rows` input rows."""
    n, k = layer.weight.shape
    spec, int8 = layer.spec, layer.x_scale > 0
    channels_in = k // spec.taps
    rows_out, n_out = (rows * spec.stride, n // spec.stride) if spec.stride else (rows, n)
    total = rows * channels_in * (1 if int8 else 2) + n * k * (1 if int8 else 2)
    if spec.audio:
        total += rows_out * n_out * 4
    elif spec.store_y:
        total += rows_out * n_out * 2
    if spec.residual:
        total += 2 * rows_out * n_out * 2
    if spec.snake:
        total += rows_out * n_out * (1 if layer.s_scale > 0 else 2)
    return float(total)


def _floor_ms(nbytes: float, flop: float, int8: bool, ceiling: dict | None) -> float | None:
    if not ceiling or not all(ceiling.get(k) for k in ("copy_tb_s", "fp16_tflops", "int8_tops")):
        return None
    rate = ceiling["int8_tops"] if int8 else ceiling["fp16_tflops"]
    return max(nbytes / (ceiling["copy_tb_s"] * 1e9), flop / (rate * 1e9))


def _row(name: str, shape: str, flop: float, nbytes: dict, ms: dict, tile: dict, ceiling: dict | None) -> dict:
    row = {"layer": name, "shape": shape, "gflop": round(flop / 1e9, 2)}
    for kind in ("fp16", "int8"):
        floor = _floor_ms(nbytes[kind], flop, kind == "int8", ceiling)
        row.update({f"{kind}_ms": ms[kind], f"{kind}_tile": tile[kind], f"{kind}_mb": round(nbytes[kind] / 1e6, 1),
                    f"{kind}_floor_ms": None if floor is None else round(floor, 4),
                    f"{kind}_x_floor": None if floor is None or ms[kind] is None else round(ms[kind] / floor, 2)})
    return row


def roofline_rows(tuned: dict, decoder, ceiling: dict | None = None) -> list[dict]:
    """A row per layer, then a row per residual unit the record timed as one kernel (its best tile)."""
    modules = {"fp16": FusedDecoder(decoder), "int8": FusedDecoder(decoder, all_int8(decoder))}
    index = tuned["frames"].index(max(tuned["frames"]))
    rows = layer_frames([layer.spec for layer in modules["fp16"].layers], max(tuned["frames"]))
    out = []
    for i, layer in enumerate(modules["fp16"].layers):
        n, k = layer.weight.shape
        entry = {kind: tuned[kind][layer.spec.name] for kind in modules}
        out.append(_row(layer.spec.name, f"{rows[i]} x {n} x {k}", 2.0 * rows[i] * n * k,
                        {kind: _bytes(m.layers[i], rows[i]) for kind, m in modules.items()},
                        {kind: e["ms"][e["chosen"]][index] for kind, e in entry.items()},
                        {kind: e["chosen"] for kind, e in entry.items()}, ceiling))
        out[-1]["torch_ms"] = entry["fp16"]["ms"].get("torch", [None] * len(tuned["frames"]))[index]
    for i, layer in enumerate(modules["fp16"].layers):
        unit = unit_of(layer.spec)
        if not unit or not tuned["fp16"].get(unit):
            continue
        entry = {kind: tuned[kind][unit] for kind in modules}
        best = {kind: min((t for t in e["ms"] if t != LAYERS), key=lambda t, e=e: e["ms"][t][index], default=None)
                for kind, e in entry.items()}
        n, k = layer.weight.shape
        nbytes = {kind: _bytes(m.layers[i], rows[i]) + _bytes(m.layers[i + 1], rows[i])
                  - 2 * rows[i] * n * (1 if m.layers[i].s_scale > 0 else 2) for kind, m in modules.items()}
        out.append(_row(f"{unit} (one kernel)", f"{rows[i]} x {n} x {k}+{n}", 2.0 * rows[i] * n * (k + n), nbytes,
                        {kind: entry[kind]["ms"][b][index] if b else None for kind, b in best.items()}, best, ceiling))
        out[-1]["chosen"] = {kind: e["chosen"] for kind, e in entry.items()}
    return out


def _sums(rows: list[dict], tuned: dict) -> dict:
    """Per kind: the layers alone, and with each unit the tuner fused in place of its two layers."""
    out = {}
    for kind in ("fp16", "int8"):
        layers = sum(r[f"{kind}_ms"] for r in rows if not r["layer"].endswith("(one kernel)"))
        fused = layers
        for r in rows:
            unit = r["layer"].removesuffix(" (one kernel)")
            if r["layer"].endswith("(one kernel)") and r["chosen"][kind] != LAYERS:
                pair = [x[f"{kind}_ms"] for x in rows if x["layer"] in (f"{unit}.conv1", f"{unit}.conv2")]
                fused += tuned[kind][unit]["ms"][r["chosen"][kind]][tuned["frames"].index(max(tuned["frames"]))] \
                    - sum(pair)
        out[kind] = {"layers_ms": round(layers, 3), "with_units_ms": round(fused, 3)}
    return out


def _cell(r: dict, kind: str) -> str:
    if r[f"{kind}_ms"] is None:
        return "n/a"
    floor = "" if r[f"{kind}_x_floor"] is None else f", {r[f'{kind}_x_floor']}x floor ({r[f'{kind}_floor_ms']})"
    return f"{r[f'{kind}_ms']}{floor}, {r[f'{kind}_tile']}"


HOST_TIMED = ("median of 5 calls, each from an idle GPU: every time also holds the host's work to launch the "
              "layer, which a decode's CUDA graph does not")


def table_md(rows: list[dict], tuned: dict, ceiling: dict | None = None) -> str:
    frames, device = max(tuned["frames"]), tuned.get("device", {}).get("name", "?")
    sums = _sums(rows, tuned)
    lines = [f"# Per layer at {frames} frames on {device} (the tune stage's timings)", "",
             f"Each layer timed alone ({tuned.get('timing', HOST_TIMED)}). Floor: max(bytes / copy bandwidth, "
             "FLOPs / dense GEMM rate); x floor = time / floor. Ceilings: "
             + (json.dumps(ceiling) if ceiling else "not given") + ".",
             "", "| layer | M x N x K | GFLOP | MB fp16 / int8 | torch ms | fused fp16 ms, x floor (floor), tile | "
             "fused int8 ms, x floor (floor), tile |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['layer']} | {r['shape']} | {r['gflop']} | {r['fp16_mb']} / {r['int8_mb']} | "
                     f"{r.get('torch_ms') or 'n/a'} | {_cell(r, 'fp16')} | {_cell(r, 'int8')} |")
    lines += ["", "A unit row: the unit kernel's best tile; the tuner keeps it only where it beats the unit's two "
              "layers (chosen: " + ", ".join(f"{r['layer'].split(' ')[0]} fp16 {r['chosen']['fp16']} / int8 "
                                             f"{r['chosen']['int8']}" for r in rows if "chosen" in r) + ").",
              "", f"Sum over the layers: fused fp16 {sums['fp16']['layers_ms']} ms, with the chosen units "
              f"{sums['fp16']['with_units_ms']} ms; fused int8 {sums['int8']['layers_ms']} ms, with the chosen units "
              f"{sums['int8']['with_units_ms']} ms (each timed alone; a decode adds what runs between them)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiles", default="engines/torch/tiles.json", help="the tune stage's record")
    p.add_argument("--ceilings", default=None, help="JSON {copy_tb_s, fp16_tflops, int8_tops} of the same GPU")
    p.add_argument("--full-size", action="store_true",
                   help="the 60 s GPU configuration's model (the full-size seeded decoder) instead of params.yaml's")
    p.add_argument("--out", default=".", help="output folder")
    args = p.parse_args()

    from vae_engines.core.params import ModelParams, load
    from vae_engines.model.oobleck import fold_decoder, load_vae

    tuned = json.loads(Path(args.tiles).read_text())
    if not tuned.get("fp16"):
        sys.exit(f"error: {args.tiles} holds no tuned layers ({tuned.get('note', 'tuned on no GPU')}); run the tune "
                 "stage on a GPU")
    ceiling = json.loads(Path(args.ceilings).read_text()) if args.ceilings else None
    model = ModelParams(source="seeded", checkpoint=str(ROOT / "vae_engines/fixtures/acestep-1.5"), seed=0) \
        if args.full_size else load("params.yaml").model
    rows = roofline_rows(tuned, fold_decoder(load_vae(model).vae), ceiling)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = table_md(rows, tuned, ceiling)
    (out / "layer_table.md").write_text(text)
    (out / "layer_table.json").write_text(json.dumps({"device": tuned.get("device"), "frames": max(tuned["frames"]),
                                                      "ceilings": ceiling, "layers": rows,
                                                      "sums": _sums(rows, tuned)}, indent=1) + "\n")
    print(text)


if __name__ == "__main__":
    main()
