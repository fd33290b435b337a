"""What equalization through Snake can buy on a workspace's model, and where the INT8 error
of the default model comes from (issue 38). Run after `dvc repro stats holdout`:

    python benchmarks/equalize_study.py spread          # per-channel spread at every quantized input
    python benchmarks/equalize_study.py errors          # per-tensor vs per-channel ranges, layers alone
    python benchmarks/equalize_study.py headroom 1.5 2 3   # equalization that leaves each channel headroom
    python benchmarks/equalize_study.py fullsize --frames 24   # full-size seeded decoder, unit-normal latents

Every figure is held-out peak PSNR against the fp32 decode, the Q/DQ arithmetic computed by
the project's fake quantization (quant.fakequant, equal to the Q/DQ graph) on the CPU, except
`fullsize`, which runs each variant's Q/DQ graph on ONNX Runtime. Prints markdown / JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _setup(onnx_path: str, calibration: str, holdout: str):
    import torch

    from vae_engines.data.latentset import read_latent_set
    from vae_engines.graph.execute import GraphExecutor
    from vae_engines.graph.io import load_onnx
    from vae_engines.quant.equalize import channel_maxima
    from vae_engines.quant.qdq import quantizable_layers

    torch.set_num_threads(2)
    model = load_onnx(onnx_path)
    layers = quantizable_layers(model)
    executor = GraphExecutor(model, "cpu")
    cal, held = read_latent_set(calibration), read_latent_set(holdout)
    tensors = [l.activation for l in layers]
    return model, layers, executor, cal, held, channel_maxima(executor, tensors, cal), channel_maxima(
        executor, tensors, held)


def spread(args) -> None:
    import onnx

    model, layers, _, _, _, cal, held = _setup(args.onnx, args.calibration, args.holdout)
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    print("| layer input | channels | max / median | max / min | activation-noise cut if evened (dB) | held-out / "
          "calibration max, tensor | same, worst channel |\n|---|---|---|---|---|---|---|")
    for l in layers:
        a, h = cal[l.activation], held[l.activation]
        w = inits[l.weight].astype(np.float64)
        axis = 1 if l.op_type == "Conv" else 0
        norms = (w ** 2).sum(axis=tuple(d for d in range(w.ndim) if d != axis))
        cut = 10 * np.log10(a.max() ** 2 * norms.sum() / (a ** 2 * norms).sum())
        print(f"| {l.name} | {len(a)} | {a.max() / np.median(a):.2f} | {a.max() / a.min():.1f} | {cut:.2f} | "
              f"{h.max() / a.max():.2f} | {np.max(h / a):.2f} |")


def errors(args) -> None:
    import torch

    from vae_engines.graph.execute import fake_quantize
    from vae_engines.metrics import peak_psnr
    from vae_engines.quant.fakequant import FakeQuant

    _, layers, executor, _, held, cal, held_max = _setup(args.onnx, args.calibration, args.holdout)
    reference = executor.decode(held)
    fq = FakeQuant(executor, layers)

    def psnr(ranges: dict, only: set | None = None) -> float:
        hooks = {}
        for l in layers:
            if only is not None and l.name not in only:
                continue
            scale = torch.tensor(np.asarray(ranges[l.activation]) / 127, dtype=torch.float32)
            scale = scale.reshape(1, -1, 1) if scale.dim() else scale
            hooks[(l.node, 0)] = (lambda s: (lambda x: fake_quantize(x, s)))(scale)
        weights = {l.node: fq.weights[l.name] for l in layers if only is None or l.name in only}
        return round(peak_psnr(reference, executor.decode(held, input_hooks=hooks, weights=weights)), 2)

    tensor = {t: float(a.max()) for t, a in cal.items()}
    rows = {
        "per-tensor minmax (calibration)": psnr(tensor),
        "per-tensor, held-out's own maxima (oracle)": psnr({t: float(a.max()) for t, a in held_max.items()}),
        "per-tensor minmax x 1.25": psnr({t: 1.25 * v for t, v in tensor.items()}),
        "per-channel minmax (calibration): what full equalization approaches": psnr(cal),
        "per-channel, held-out's own maxima (oracle)": psnr(held_max),
        "conv1 alone (reads the latent: no Snake before it)": psnr(tensor, {"conv1"}),
        "conv2 alone (the last convolution)": psnr(tensor, {"conv2"}),
        "all but conv1": psnr(tensor, {l.name for l in layers} - {"conv1"}),
        "all but conv1 and conv2": psnr(tensor, {l.name for l in layers} - {"conv1", "conv2"}),
    }
    print(json.dumps(rows, indent=1))


def headroom(args) -> None:
    from vae_engines.graph.execute import GraphExecutor
    from vae_engines.metrics import peak_psnr
    from vae_engines.quant import equalize as eq
    from vae_engines.quant.fakequant import FakeQuant

    model, layers, executor, _, held, cal, _ = _setup(args.onnx, args.calibration, args.holdout)
    reference = executor.decode(held)
    groups = eq.scale_groups(model)
    for h in args.values:
        # each channel's range min(A, h * its calibrated max): evened, with h of headroom
        scales = {g.name: np.clip(h * np.max([cal[t] / cal[t].max() for t in g.tensors if t in cal], axis=0),
                                  1e-3, 1.0) for g in groups}
        graph = GraphExecutor(eq.equalized_graph(model, groups, scales), "cpu")
        ranges = eq.equalized_channel_amax(groups, scales, cal)
        overrides = FakeQuant(graph, layers).overrides({l.name: float(ranges[l.activation].max()) for l in layers})
        print(json.dumps({"headroom": h, "peak_psnr_db": round(peak_psnr(reference, graph.decode(held, **overrides)),
                                                                2)}), flush=True)


def fullsize(args) -> None:
    import torch

    from vae_engines.core.params import Int8Variant, ModelParams
    from vae_engines.data.latentset import write_latent_set
    from vae_engines.data.sources import normal_latents
    from vae_engines.graph.execute import GraphExecutor
    from vae_engines.graph.io import load_onnx, ort_session
    from vae_engines.metrics import peak_psnr
    from vae_engines.model.export import onnx_from_decoder
    from vae_engines.model.oobleck import fold_decoder, load_vae
    from vae_engines.quant.qdq import quantizable_layers
    from vae_engines.quant.quantize import quantize_variant
    from vae_engines.quant.stats import collect, quantizable_tensors, write_stats

    torch.set_num_threads(2)
    out = Path(args.work)
    out.mkdir(parents=True, exist_ok=True)
    fp32 = out / "fp32.onnx"
    if not fp32.exists():
        loaded = load_vae(ModelParams(source="seeded", checkpoint="vae_engines/fixtures/acestep-1.5", seed=0))
        onnx_from_decoder(fold_decoder(loaded.vae), fp32, opset=19, metadata={"hop": loaded.hop,
                                                                             "sampling_rate": 48000})
    cal, _ = normal_latents(args.frames, 8, 64, 0)
    held, _ = normal_latents(args.frames, 4, 64, 1)
    write_latent_set(out / "cal", cal, {"source": "normal"})
    model = load_onnx(fp32)
    layers = quantizable_layers(model)
    write_stats(out / "s.npz", out / "s.json", collect(GraphExecutor(model, "cpu"), quantizable_tensors(layers), cal),
                layers, {})
    session = ort_session(fp32, 2)
    reference = np.concatenate([session.run(None, {"latent": x[None]})[0] for x in held])
    result = {"frames": args.frames, "calibration": "8 unit-normal latents (seed 0)",
              "holdout": "4 unit-normal latents (seed 1)"}
    for name, recipe in (("minmax", {}), ("minmax_equalized", {"equalize": True})):
        start = time.perf_counter()
        record = quantize_variant(name, Int8Variant(calibrator="minmax", float_type="fp32", **recipe), fp32_onnx=fp32,
                                  stats_npz=out / "s.npz", calibration_dir=out / "cal", out_onnx=out / f"{name}.onnx",
                                  ranges_json=out / f"{name}.json", device=torch.device("cpu"))
        q = ort_session(out / f"{name}.onnx", 2)
        decoded = np.concatenate([q.run(None, {"latent": x[None]})[0] for x in held])
        result[name] = {"heldout_peak_psnr_db": round(peak_psnr(reference, decoded), 2),
                        "quantize_seconds": round(time.perf_counter() - start, 1),
                        "equalization": {k: v for k, v in (record.get("equalization") or {}).items() if k != "scales"}}
        print(json.dumps(result), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study", choices=["spread", "errors", "headroom", "fullsize"])
    p.add_argument("values", nargs="*", type=float, help="headroom: the factors to try")
    p.add_argument("--onnx", default="engines/onnx/fp32.onnx")
    p.add_argument("--calibration", default="data/calibration")
    p.add_argument("--holdout", default="data/holdout")
    p.add_argument("--frames", type=int, default=24, help="fullsize: latent frames per window")
    p.add_argument("--work", default="/tmp/equalize_fullsize", help="fullsize: scratch folder (its fp32 ONNX is kept)")
    args = p.parse_args()
    {"spread": spread, "errors": errors, "headroom": headroom, "fullsize": fullsize}[args.study](args)


if __name__ == "__main__":
    main()
