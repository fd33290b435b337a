"""FP8 (e4m3) against INT8 in quality, on the embedded default's workspace data (issue 36,
item 5; issue 38): engines/onnx/fp32.onnx, data/calibration, data/holdout, data/stats after
`dvc repro`. Every convolution's input and weight fake-quantized, float parts fp32 (the
ONNX graph executor on the CPU), held-out peak PSNR against the fp32 decode.

    python benchmarks/experiments/fp8_quality.py

FP8 as TensorRT's explicit quantization would run it (QuantizeLinear to FLOAT8E4M3FN,
saturating): activations per tensor with scale = range / 448, weights per output channel
with scale = max |w| / 448; INT8 as the project's Q/DQ graphs (quant.fakequant). Ranges:
the minmax calibration of the `stats` stage, times a margin. Also the held-out latents
scaled up 2x and 4x -- latents beyond what calibration saw, as a generator at another scale
hands them over -- each scored against its own fp32 decode. Prints one line per row.
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from vae_engines.data.latentset import read_latent_set  # noqa: E402
from vae_engines.graph.execute import GraphExecutor  # noqa: E402
from vae_engines.graph.io import load_onnx  # noqa: E402
from vae_engines.kernels.reference import FP8_MAX  # noqa: E402
from vae_engines.metrics import peak_psnr  # noqa: E402
from vae_engines.quant.calibrators import calibrate  # noqa: E402
from vae_engines.quant.fakequant import FakeQuant  # noqa: E402
from vae_engines.quant.margin import widened  # noqa: E402
from vae_engines.quant.qdq import conv_inputs_plan, quantizable_layers  # noqa: E402
from vae_engines.quant.stats import read_stats  # noqa: E402

FP8 = torch.float8_e4m3fn


def fp8_round(x: torch.Tensor, scale) -> torch.Tensor:
    """QuantizeLinear -> DequantizeLinear through float8 e4m3fn (saturating), in fp32."""
    return (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8).float() * scale


def main() -> None:
    torch.set_num_threads(2)
    model = load_onnx("engines/onnx/fp32.onnx")
    layers = quantizable_layers(model)
    plan, tensors = conv_inputs_plan(layers), [l.activation for l in layers]
    executor = GraphExecutor(model, torch.device("cpu"))
    fake = FakeQuant(executor, layers)
    held = read_latent_set("data/holdout")
    base = calibrate(read_stats("data/stats/stats.npz"), tensors, "minmax")
    weights = {}
    for layer in plan.layers:
        w = executor.values[layer.weight].float()
        dims = [d for d in range(w.dim()) if d != layer.axis]
        weights[layer.node] = fp8_round(w, w.abs().amax(dim=dims, keepdim=True).clamp_min(1e-12) / FP8_MAX)

    def fp8_overrides(margin: float) -> dict:
        hooks = {}
        for layer in plan.layers:
            scale = torch.tensor(base[layer.activation] * margin / FP8_MAX)
            hooks[(layer.node, 0)] = lambda x, scale=scale: fp8_round(x, scale).to(x.dtype)
        return {"input_hooks": hooks, "weights": dict(weights)}

    for gain in (1.0, 2.0, 4.0):
        latents = held * gain
        reference = executor.decode(latents)
        for margin in (1.0, 1.15, 2.0, 4.0):
            int8 = peak_psnr(reference, executor.decode(latents, **fake.plan_overrides(plan, widened(base, margin))))
            fp8 = peak_psnr(reference, executor.decode(latents, **fp8_overrides(margin)))
            print(f"held-out x{gain:g}, ranges minmax x{margin:g}: int8 {int8:.2f} dB, fp8 e4m3 {fp8:.2f} dB",
                  flush=True)


if __name__ == "__main__":
    main()
