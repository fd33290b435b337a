"""Where an engine's time goes with and without kernels.triton_outconv, kernel by kernel
(issue 36, item 3): the four engines of gpu_units' run `results/outconv/h100_run2_units`
(fp16 and int8-observed, units fused, conv2 by the output-conv kernel or by its fastest
layer-kernel tile), built from that run's tune record, each decoding 60 s once as a CUDA
graph under torch.profiler; prints each engine's total device time by kernel name.

    python benchmarks/experiments/outconv_profile.py RECORD.json
"""

import json
import sys
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gpu_units  # noqa: E402
from gpu_units import CFG, engines, graph, quant_of, seeded  # noqa: E402

from vae_engines.model.oobleck import fold_decoder, load_vae  # noqa: E402


def main() -> None:
    tuned = json.loads(Path(sys.argv[1]).read_text())["phases"]["tune"]["result"]
    decoder = fold_decoder(load_vae(CFG.model).vae).eval()
    quants = {"int8 observed": quant_of(decoder, None)}
    decoder.to("cpu")
    decoders = {k: v for k, v in engines(decoder, quants, tuned).items() if "units" in k}
    latent = seeded(CFG.frames, 0)
    for name, module in decoders.items():
        replay, _ = graph(module, latent)
        replay()
        gpu_units.sync()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            replay()
            gpu_units.sync()
        by_name = defaultdict(float)
        for e in prof.events():
            if e.device_type == torch.autograd.DeviceType.CUDA:
                by_name[e.name[:60]] += e.device_time_total / 1e3
        total = sum(by_name.values())
        top = sorted(by_name.items(), key=lambda kv: -kv[1])[:8]
        print(json.dumps({"engine": name, "device_ms": round(total, 3),
                          "top": [[k, round(v, 3)] for k, v in top]}), flush=True)


if __name__ == "__main__":
    main()
