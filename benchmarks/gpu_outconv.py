"""The output convolution two ways on a GPU: the layer kernel (kernels.triton_conv, every
input row loaded once per tap) against kernels.triton_outconv (loaded once, partials per tap
and a shifted sum), fp16 and int8, at a 60 s decode's 2.88 M rows (issue 36, item 3).

    python benchmarks/gpu_outconv.py --out DIR [--frames 1500] [--smoke]

Full-size seeded ACE-Step 1.5 decoder's `conv2` (128 -> 2 channels, k=7). For each kind: every
candidate tile of the layer kernel (compiled.tune's) and a grid of the new kernel's tiles
(BM, BK, warps, stages, programs per multiprocessor), each the median of 20 calls after 3
(CUDA events); both checked against the reference (CPU, fp32) on the same operands. The floor:
the input read once and the audio written once at the copy bandwidth measured in the same run
(a 2 GiB device-to-device copy, read + write). Writes DIR/results.json and prints a summary.
--smoke: the small model on the CPU (Triton's interpreter), a few tiles: it checks the script.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

if "--smoke" in sys.argv:  # Triton reads it at import
    os.environ.setdefault("TRITON_INTERPRET", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vae_engines.compiled.tune import CANDIDATES, layer_frames, time_call  # noqa: E402
from vae_engines.core import device as devices  # noqa: E402
from vae_engines.core.env import fingerprint  # noqa: E402
from vae_engines.core.params import ModelParams  # noqa: E402
from vae_engines.kernels import reference, triton_conv, triton_outconv  # noqa: E402
from vae_engines.model.fused import FusedDecoder  # noqa: E402
from vae_engines.model.oobleck import fold_decoder, load_vae  # noqa: E402

NEW_TILES = [(bm, bk, w, s, p) for bm in (128, 256) for bk in (64, 128) for w, s in ((4, 2), (4, 3), (8, 2))
             for p in (2, 4, 8)]


def copy_bandwidth(device) -> float | None:
    """Bytes per second of a device-to-device copy (read + write counted)."""
    if device.type != "cuda":
        return None
    a = torch.empty(1 << 30, dtype=torch.float16, device=device)
    b = torch.empty_like(a)
    ms = time_call(lambda: b.copy_(a), device, repeats=10, warmup=3)
    return 2 * a.numel() * 2 / (ms / 1e3)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--frames", type=int, default=1500)
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device("cpu" if args.smoke else "cuda")
    model = ModelParams() if args.smoke else ModelParams(source="seeded", checkpoint="vae_engines/fixtures/acestep-1.5",
                                                         seed=0)
    module = FusedDecoder(fold_decoder(load_vae(model).vae)).eval()
    layer = module.layers[-1]
    rows = layer_frames([l.spec for l in module.layers], 4 if args.smoke else args.frames)[-1]
    new_tiles = NEW_TILES[:2] if args.smoke else NEW_TILES
    gen = torch.Generator(device=device).manual_seed(0)
    weight = layer.weight.float().to(device)
    n, k = weight.shape
    taps, pad = layer.spec.taps, layer.spec.padding
    channels = k // taps
    bias = None if layer.bias is None else layer.bias.to(device)
    result = {"machine": fingerprint(), "device": devices.describe(device), "rows": rows, "channels": channels,
              "started": time.strftime("%Y-%m-%d %H:%M:%S"), "copy_bytes_per_s": copy_bandwidth(device), "kinds": {}}
    for kind in ("fp16", "int8"):
        x = torch.randn(1, rows, channels, generator=gen, device=device)
        if kind == "int8":
            w_scale = weight.abs().amax(dim=1) / 127
            w, xs = reference.quantize(weight / w_scale[:, None], 1.0), 4.0 / 127
            x = reference.quantize(x, xs)
        else:
            w_scale, w, xs, x = None, weight.half(), 0.0, x.half()
        w = w.contiguous()
        y = torch.empty(1, n, rows, device=device)
        check_rows = min(rows, 1 << 16)  # the reference sees these rows only: compare all but the last `pad`
        want = reference.layer_output(x[:, :check_rows].cpu(), w.cpu(), None if w_scale is None else w_scale.cpu(),
                                      None if bias is None else bias.cpu(), None, taps=taps, dilation=1, padding=pad,
                                      stride=0, x_scale=xs,
                                      res_scale=0.0).transpose(1, 2)
        entry = {"layer_kernel": {}, "outconv": {}}

        def layer_call(tile):
            triton_conv.launch(x, w.contiguous(), w_scale, bias, None, None, y, None, taps=taps, dilation=1,
                               padding=pad, stride=0, x_scale=xs, s_scale=0.0, res_scale=0.0, residual=False,
                               audio=True, tile=tuple(tile))

        def new_call(tile):
            triton_outconv.launch(x, w, w_scale, bias, y, taps=taps, padding=pad, x_scale=xs, tile=tile)

        for bm, bn, bk, warps, stages in CANDIDATES[kind]:
            tile = (bm, min(bn, 16), min(bk, channels), warps, stages)
            entry["layer_kernel"]["x".join(map(str, tile))] = round(time_call(lambda: layer_call(tile), device,
                                                                              repeats=20, warmup=3), 4)
        layer_call(tile)
        entry["layer_kernel_max_err"] = float((y[:, :, :check_rows - pad].cpu() - want[:, :, :-pad]).abs().max())
        for tile in new_tiles:
            try:
                entry["outconv"]["x".join(map(str, tile))] = round(time_call(lambda: new_call(tile), device,
                                                                             repeats=20, warmup=3), 4)
            except Exception as exc:  # noqa: BLE001  (a tile this GPU cannot run is a row of the record)
                entry["outconv"]["x".join(map(str, tile))] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
        ok = {t: ms for t, ms in entry["outconv"].items() if isinstance(ms, float)}
        best = min(ok, key=ok.get)
        new_call(tuple(int(v) for v in best.split("x")))
        entry["outconv_max_err"] = float((y[:, :, :check_rows - pad].cpu() - want[:, :, :-pad]).abs().max())
        entry["reference_max_abs"] = float(want.abs().max())
        floor_bytes = x.numel() * x.element_size() + y.numel() * 4
        entry["floor_ms"] = floor_bytes / result["copy_bytes_per_s"] * 1e3 if result["copy_bytes_per_s"] else None
        lk = min(entry["layer_kernel"].values())
        entry["summary"] = {"layer_kernel_best_ms": lk, "outconv_best_ms": ok[best], "outconv_best_tile": best,
                            "speedup": round(lk / ok[best], 3)}
        result["kinds"][kind] = entry
        print(kind, json.dumps(entry["summary"]), "floor ms", entry["floor_ms"], "errors",
              entry["layer_kernel_max_err"],
              entry["outconv_max_err"], "of", entry["reference_max_abs"], flush=True)
        (out_dir / "results.json").write_text(json.dumps(result, indent=1, default=str))
        del x, y


if __name__ == "__main__":
    main()
