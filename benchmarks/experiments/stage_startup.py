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
import shutil
import statistics
import subprocess
import sys
import tempfile
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
    # what the PyTorch engines' stages read instead since b6ac050: the export stage's file of it
    "folded decoder file, loaded": "from vae_engines.model.folded import load_folded; load_folded({folded!r})",
}


def timed(code: str) -> float:
    began = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])
    return time.perf_counter() - began


def folded_file() -> str:
    """The seeded full-size decoder, folded, as the export stage writes it (in a temporary folder:
    337 MB, not a result)."""
    from vae_engines.core.params import ModelParams
    from vae_engines.model.folded import save_folded
    from vae_engines.model.oobleck import fold_decoder, load_vae

    loaded = load_vae(ModelParams(source="seeded", checkpoint="vae_engines/fixtures/acestep-1.5", seed=0))
    return str(save_folded(loaded, fold_decoder(loaded.vae), Path(tempfile.mkdtemp()) / "decoder.safetensors"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", nargs="+", choices=list(STEPS), default=list(STEPS), help="the steps to time")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    folded = folded_file() if any("{folded" in STEPS[name] for name in args.steps) else None
    try:
        rounds(args, folded)
    finally:
        if folded is not None:
            shutil.rmtree(Path(folded).parent, ignore_errors=True)


def rounds(args: argparse.Namespace, folded: str | None) -> None:
    """Every step of args.steps once per round, args.repeats rounds; the record after each step."""
    from vae_engines.core.env import fingerprint

    result = {"machine": fingerprint(), "how": "wall seconds of `python -c CODE` from process start to exit, "
              f"median of {args.repeats} rounds, each round every step once in turn", "steps": {}}
    runs: dict[str, list[float]] = {name: [] for name in args.steps}
    for _ in range(args.repeats):
        for name in args.steps:
            runs[name].append(timed(STEPS[name].format(folded=folded)))
            result["steps"][name] = {"median_s": round(statistics.median(runs[name]), 2),
                                     "runs_s": [round(r, 2) for r in runs[name]]}
            (args.out / "startup.json").write_text(json.dumps(result, indent=1))
    for name in args.steps:
        print(f"{name}: {result['steps'][name]['median_s']} s", flush=True)


if __name__ == "__main__":
    main()
