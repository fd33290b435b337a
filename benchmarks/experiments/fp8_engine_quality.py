"""The fused engines' held-out quality in fp16, INT8 and FP8 (issue 36, item 5), on the CPU, from a
`dvc repro` workspace: engines/decoder.safetensors, engines/onnx/<variant>.ranges.json, data/holdout.

    python benchmarks/experiments/fp8_engine_quality.py [WORKSPACE] [--variant minmax]

The engines are model.fused.FusedDecoder on their torch path (kernels.reference: on the CPU fp32
arithmetic on the stored fp16 / int8 / fp8 values, what the Triton kernels compute within
kernels.op.TOLERANCES): fp16; INT8 from the variant's ranges (compiled.int8.layer_quant, what the
compile_int8 stage builds); FP8 from the same ranges (layer_quant's fp8: range / 448, weights per
output channel / 448). Each held-out latent is decoded by each engine and by the folded decoder
in fp32, and scored by peak PSNR against that; also the latents scaled 2x and 4x (beyond what
calibration saw, as benchmarks/experiments/fp8_quality.py does for the Q/DQ graphs), each against
its own fp32 decode. Prints one JSON object.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from vae_engines.compiled.int8 import layer_quant  # noqa: E402
from vae_engines.core.env import fingerprint  # noqa: E402
from vae_engines.core.fileio import read_json  # noqa: E402
from vae_engines.data.latentset import read_latent_set  # noqa: E402
from vae_engines.metrics import peak_psnr  # noqa: E402
from vae_engines.model.folded import load_folded  # noqa: E402
from vae_engines.model.fused import FusedDecoder  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("workspace", nargs="?", type=Path, default=Path("."))
    p.add_argument("--variant", default="minmax")
    args = p.parse_args()
    torch.set_num_threads(2)
    ws = args.workspace
    decoder = load_folded(ws / "engines/decoder.safetensors").decoder
    record = read_json(ws / f"engines/onnx/{args.variant}.ranges.json")
    engines = {"fp16": FusedDecoder(decoder).eval(),
               "int8": FusedDecoder(decoder, layer_quant(decoder, record)).eval(),
               "fp8": FusedDecoder(decoder, layer_quant(decoder, record, fp8=True)).eval()}
    held = read_latent_set(ws / "data/holdout")
    out = {"machine": fingerprint(), "variant": args.variant, "latents": list(held.shape),
           "how": "peak PSNR (dB) against the folded decoder in fp32, mean over the held-out latents; engines on "
                  "their torch path on the CPU (fp32 arithmetic on the stored values)"}
    for scale in (1.0, 2.0, 4.0):
        scores = {name: [] for name in engines}
        for latent in held:
            x = torch.from_numpy(np.ascontiguousarray(latent[None] * scale, dtype=np.float32))
            with torch.inference_mode():
                exact = decoder(x).numpy()
                for name, engine in engines.items():
                    scores[name].append(peak_psnr(exact, engine(x).float().numpy()))
        out[f"x{scale:g}"] = {name: round(float(np.mean(s)), 2) for name, s in scores.items()}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
