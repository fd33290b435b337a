"""Is a compiled PyTorch engine worth building on a CPU? The embedded default's decoder,
compiled (fp32, channels-last, frames 16..125) beside eager fp32, timed in the same rounds
through the runtime API on this machine's CPU.

    python benchmarks/cpu_compiled.py [--out benchmarks/results/cpu_compiled] [--repeats 7]

Writes OUT.json (every round, the ratios with their 95% intervals, the build record, the
machine) and OUT.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vae_engines.compiled.build import build_package  # noqa: E402
from vae_engines.core.device import keep_freed_memory  # noqa: E402
from vae_engines.core.env import fingerprint  # noqa: E402
from vae_engines.core.params import ModelParams, ProfileParams  # noqa: E402
from vae_engines.measure.timing import interleaved, paired_ratio  # noqa: E402
from vae_engines.model.oobleck import fold_decoder, load_vae  # noqa: E402
from vae_engines.runtime import load  # noqa: E402
from vae_engines.runtime.base import Shape  # noqa: E402
from vae_engines.runtime.eager import EagerDecoder  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="benchmarks/results/cpu_compiled")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as every stage does (core.device.resolve): eager fp32 is ~2x slower without it
    loaded = load_vae(ModelParams(checkpoint=str(ROOT / "vae_engines/fixtures/acestep15-small")))
    decoder = fold_decoder(loaded.vae)
    shape = Shape(channels=64, hop=loaded.hop, sampling_rate=loaded.sampling_rate)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        record = build_package(decoder, shape, precision="fp32", mode="default", device=torch.device("cpu"),
                               profile=ProfileParams(min_frames=16, opt_frames=32, max_frames=125),
                               path=Path(tmp) / "fp32.pt2", model=loaded.description)
        build_s = time.perf_counter() - start
        decoders = {"eager fp32": EagerDecoder(decoder, shape, "fp32", "cpu"), "compiled fp32": load(Path(tmp) / "fp32.pt2")}
        rows, ratios = [], []
        for frames in (32, 125):
            point = interleaved(decoders, 1, frames, 64, warmup=2, repeats=args.repeats)
            rows += [t.summary() for t in point.values()]
            ratios.append(paired_ratio(point["compiled fp32"], point["eager fp32"]))
    doc = {"build_seconds": round(build_s, 1), "build": record, "timings": rows, "ratios": ratios,
           "threads": args.threads, "machine": fingerprint(), "torch": torch.__version__}
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")
    lines = [f"# Compiled vs eager fp32 on the CPU ({doc['machine']['cpu']}, {args.threads} threads, torch "
             f"{torch.__version__})", "", f"Build (export + compile + check): {build_s:.0f} s.", "",
             "| frames | eager fp32 median ms | compiled fp32 median ms | eager / compiled (95% interval) |",
             "|---|---|---|---|"]
    for r in ratios:
        eager = next(t for t in rows if t["series"] == "eager fp32" and t["frames"] == r["frames"])
        comp = next(t for t in rows if t["series"] == "compiled fp32" and t["frames"] == r["frames"])
        lines.append(f"| {r['frames']} | {eager['median_ms']:.1f} | {comp['median_ms']:.1f} | {r['median_ratio']:.2f}x "
                     f"[{r['ci95'][0]:.2f}-{r['ci95'][1]:.2f}] {r['verdict']} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
