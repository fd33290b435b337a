"""Where a GPU stage's start-up goes (issue 37): each step in a fresh process, timed from
the interpreter's start, on the machine it runs on. A record of one experiment.

    python benchmarks/experiments/stage_startup.py --out DIR

Steps (each its own process, 3 times, median): the bare interpreter; `import torch`; torch
plus CUDA's first context (a 1-element tensor on the device, synchronised); the imports of
the compile_int8 and bench_int8 stage scripts; diffusers' AutoencoderOobleck; the seeded
full-size model (vae_engines/fixtures/acestep-1.5) built and folded, as compile_int8 reads it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository, as the stages see it

STEPS = {
    "interpreter": "pass",
    "import torch": "import torch",
    "torch + CUDA context": "import torch; torch.zeros(1, device='cuda' if torch.cuda.is_available() else 'cpu')"
                            "; torch.cuda.synchronize() if torch.cuda.is_available() else None",
    "compile_int8 imports": "import stages.compile_int8",
    "bench_int8 imports": "import stages.bench_int8",
    "diffusers AutoencoderOobleck": "from vae_engines.model.oobleck import _quiet_diffusers; _quiet_diffusers(); "
                                    "from diffusers import AutoencoderOobleck",
    "torch._inductor": "import torch._inductor.compile_fx",
    "seeded full-size model, folded": "from vae_engines.core.params import ModelParams; "
                                      "from vae_engines.model.oobleck import load_vae, fold_decoder; "
                                      "fold_decoder(load_vae(ModelParams(source='seeded', "
                                      "checkpoint='vae_engines/fixtures/acestep-1.5', seed=0)).vae)",
}


def timed(code: str) -> float:
    began = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])
    return time.perf_counter() - began


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    from vae_engines.core.env import fingerprint

    result = {"machine": fingerprint(), "how": "wall seconds of `python -c CODE` from process start to exit, "
              f"median of {args.repeats}", "steps": {}}
    for name, code in STEPS.items():
        runs = [timed(code) for _ in range(args.repeats)]
        result["steps"][name] = {"median_s": round(statistics.median(runs), 2), "runs_s": [round(r, 2) for r in runs]}
        print(f"{name}: {result['steps'][name]['median_s']} s", flush=True)
        (args.out / "startup.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
