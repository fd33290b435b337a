"""The experiment behind `range_margin` (quant.margin, issue 38), on the embedded default's
workspace data (engines/onnx/fp32.onnx, data/calibration, data/holdout, data/stats after
`dvc repro`): the conv-inputs Q/DQ graph, every convolution in INT8, fake-quantized with fp32
float parts (the ONNX graph executor on the CPU), scored on the held-out latents.

    python benchmarks/experiments/range_margin.py

Prints: held-out peak PSNR of minmax ranges times each margin; of ranges that also saw the
held-out latents (no held-out clipping: a ceiling); the largest held-out / calibration range
ratios; and repeated 2-fold cross-validation on the calibration latents only (the halves the
stage uses, then two random splits), the squared error by margin. The held-out figures are
for understanding; the stage chooses on the calibration latents alone.
"""

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from vae_engines.data.latentset import read_latent_set  # noqa: E402
from vae_engines.graph.execute import GraphExecutor  # noqa: E402
from vae_engines.graph.io import load_onnx  # noqa: E402
from vae_engines.metrics import peak_psnr  # noqa: E402
from vae_engines.quant.calibrators import calibrate  # noqa: E402
from vae_engines.quant.fakequant import FakeQuant  # noqa: E402
from vae_engines.quant.margin import MARGINS, widened  # noqa: E402
from vae_engines.quant.qdq import conv_inputs_plan, quantizable_layers  # noqa: E402
from vae_engines.quant.stats import collect, read_stats  # noqa: E402


def main() -> None:
    torch.set_num_threads(2)
    model = load_onnx("engines/onnx/fp32.onnx")
    layers = quantizable_layers(model)
    plan, tensors = conv_inputs_plan(layers), [l.activation for l in layers]
    executor = GraphExecutor(model, torch.device("cpu"))
    fake = FakeQuant(executor, layers)
    cal, held = read_latent_set("data/calibration"), read_latent_set("data/holdout")
    reference = executor.decode(held)

    def held_psnr(amax: dict) -> float:
        return round(peak_psnr(reference, executor.decode(held, **fake.plan_overrides(plan, amax))), 3)

    base = calibrate(read_stats("data/stats/stats.npz"), tensors, "minmax")
    for margin in MARGINS:
        print(f"held-out, minmax x {margin}: {held_psnr(widened(base, margin))} dB", flush=True)
    seen = calibrate(collect(executor, tensors, np.concatenate([cal, held])), tensors, "minmax")
    print(f"held-out, minmax over calibration + held-out (no held-out clipping): {held_psnr(seen)} dB", flush=True)
    held_only = calibrate(collect(executor, tensors, held), tensors, "minmax")
    ratios = sorted((held_only[t] / base[t], t) for t in tensors)[-6:]
    print("held-out range / calibration range, largest:", [(round(r, 2), t) for r, t in ratios])
    first = np.arange(len(cal)) < len(cal) // 2
    splits = [first, ~first]
    rng = np.random.default_rng(0)
    for _ in range(2):
        pick = np.zeros(len(cal), bool)
        pick[rng.choice(len(cal), len(cal) // 2, replace=False)] = True
        splits += [pick, ~pick]
    errors = dict.fromkeys(MARGINS, 0.0)
    for fit in splits:
        amax = calibrate(collect(executor, tensors, cal[fit]), tensors, "minmax")
        ref = executor.decode(cal[~fit]).astype(np.float64)
        for margin in MARGINS:
            out = executor.decode(cal[~fit], **fake.plan_overrides(plan, widened(amax, margin)))
            errors[margin] += float(np.sum((out.astype(np.float64) - ref) ** 2))
    print("calibration-only repeated 2-fold CV, squared error by margin:", {m: round(e, 4) for m, e in errors.items()})


if __name__ == "__main__":
    main()
