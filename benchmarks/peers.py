"""This project's INT8 ranges next to ONNX Runtime's quantizer, on the same model and data.

    dvc repro stats          # (or a full dvc repro) makes the inputs below
    python benchmarks/peers.py [--out benchmarks/results/peers]

Every row quantizes the same fp32 ONNX (engines/onnx/fp32.onnx) with every convolution in
INT8, from the same calibration latents (data/calibration), and is measured on the same
held-out latents (data/holdout): peak PSNR, SNR and SI-SDR against the fp32 decode, all
by ONNX Runtime on the CPU (every graph here keeps its float parts in fp32, so one runtime
fits all rows). Then each graph is given to TensorRT-RTX: does it parse and build, and how
big is the plan. Writes <out>.md (the table) and <out>.json (the rows and provenance).

Rows:
- onnxruntime quantize_static at its defaults (Q/DQ on every op it knows, int32 bias),
  then restricted to TensorRT's placement (Conv/ConvTranspose inputs only, symmetric,
  per-channel weights, no bias quantization, no output quantization) with its three
  calibrators;
- this project's calibrators on its Q/DQ placement (float_type fp32 here, for the same
  comparison; the pipeline's default variants run their float parts in fp16), and minmax
  with equalization through Snake (quant.equalize); range search with --search.
- with --nncf-python (the python of a virtualenv holding NNCF 3.4, onnx and onnxruntime):
  NNCF's post-training quantization in three recipes (benchmarks/peer_nncf.py, run there);
- with --aimet-python (the python of a virtualenv holding aimet-onnx): AIMET-ONNX's in four
  (benchmarks/peer_aimet.py, run there).
Without those options PEERS_NOT_RUN holds what the team measured of NNCF and AIMET on the same
graph, data and evaluator, shown labelled under the table.
NVIDIA ModelOpt is not run: its 0.47 `[onnx]` extra pins onnxruntime-gpu ~1.24 and onnx
~1.21, which cannot share this project's virtualenv.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


# Peers that need their own virtualenv, and what the team measured of them before on the same
# graph, data and evaluator (FIELD_NOTES, 2026-12-06): shown labelled, never as this run's rows.
PEERS_NOT_RUN = [
    {"peer": "AIMET-ONNX 2.42 (CLE, AdaRound, SeqMSE)",
     "reason": "it runs in its own virtualenv: give --aimet-python (benchmarks/peer_aimet.py says what to install)",
     "measured": "2026-12-06, same default model, data and peak_psnr, ONNX Runtime CPU",
     "figures": "best 51.99 dB (SeqMSE); with CLE 51.97 (changed no weight: Snake stops it); AdaRound 51.95 (skips "
                "Conv1d silently; run on a Conv2d rewrite)"},
    {"peer": "NNCF 3.4 (bias correction, SmoothQuant)",
     "reason": "it runs in its own virtualenv: give --nncf-python (benchmarks/peer_nncf.py says what to install)",
     "measured": "2026-12-06, same default model, data and peak_psnr, ONNX Runtime CPU",
     "figures": "defaults 40.06 dB (mean-of-minmax ranges clip; also quantizes Snake's Mul/Add inputs); MinMax "
                "ranges 52.14; best 53.08 with MinMax ranges, overflow fix off and SmoothQuant alpha 0.5"},
]


def commit() -> str | None:
    import subprocess

    try:
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def ort_quantized(fp32: Path, out: Path, latents: np.ndarray, *, defaults: bool, method: str) -> Path:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    class Reader:
        def __init__(self) -> None:
            self.items = iter([{"latent": x[None]} for x in latents])

        def get_next(self):
            return next(self.items, None)

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    if defaults:
        quantize_static(str(fp32), str(out), Reader(), calibrate_method=methods[method])
        return out
    extra = {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
             "OpTypesToExcludeOutputQuantization": ["Conv", "ConvTranspose"],
             "CalibPercentile": 99.999, "CalibTensorRangeSymmetric": True}
    quantize_static(str(fp32), str(out), Reader(), quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=["Conv", "ConvTranspose"], per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, calibrate_method=methods[method],
                    extra_options=extra)
    return out


def ours(fp32: Path, out: Path, stats_npz: Path, calibration: Path, calibrator: str, percentile: float | None,
         **recipe) -> dict:
    """This project's variant (float parts fp32; `recipe`: further Int8Variant keys); returns its ranges record."""
    import torch

    from vae_engines.core.params import Int8Variant
    from vae_engines.quant.quantize import quantize_variant

    torch.set_num_threads(2)
    variant = Int8Variant(calibrator=calibrator, percentile=percentile, float_type="fp32", **recipe)
    return quantize_variant(out.stem, variant, fp32_onnx=fp32, stats_npz=stats_npz, calibration_dir=calibration,
                            out_onnx=out, ranges_json=out.with_suffix(".json"), device=torch.device("cpu"))


def measure(graph: Path, held: np.ndarray, reference: np.ndarray) -> dict:
    from vae_engines.graph.io import ort_session
    from vae_engines.metrics import peak_psnr, si_sdr, snr

    session = ort_session(graph, 2)
    out = np.concatenate([session.run(None, {"latent": x[None]})[0] for x in held])
    return {"peak_psnr_db": round(peak_psnr(reference, out), 2), "snr_db": round(snr(reference, out), 2),
            "si_sdr_db": round(si_sdr(reference, out), 2)}


def tensorrt_rtx(graph: Path, plan: Path) -> dict:
    from vae_engines.core.errors import UserError
    from vae_engines.core.params import BuildParams, ProfileParams
    from vae_engines.trt.backend import resolve
    from vae_engines.trt.build import build_plan

    try:
        meta = build_plan(resolve("tensorrt_rtx"), graph, plan, profile=ProfileParams(), build=BuildParams())
    except UserError as exc:
        return {"tensorrt_rtx": f"no: {str(exc)[:120]}", "plan_mb": None}
    return {"tensorrt_rtx": "yes", "plan_mb": round(meta["plan_bytes"] / 1e6, 2),
            "int8_convolutions": meta["precisions"]["convolutions"]["int8"]}


NNCF_RECIPES = (("NNCF 3.4, defaults", "defaults"), ("NNCF 3.4, MinMax ranges, overflow fix off", "minmax"),
                ("NNCF 3.4, MinMax + SmoothQuant on convolutions (alpha 0.5)", "smoothquant"))


AIMET_RECIPES = (("AIMET-ONNX, defaults", "defaults"), ("AIMET-ONNX, TensorRT's placement: min-max", "minmax"),
                 ("AIMET-ONNX, same placement: TF-enhanced (SQNR) ranges", "tf_enhanced"),
                 ("AIMET-ONNX, same placement: min-max + sequential MSE", "seqmse"))
PEER_SCRIPTS = {"nncf": ("peer_nncf.py", "NNCF"), "aimet": ("peer_aimet.py", "AIMET-ONNX")}


def peer_quantized(tool: str, python: str, fp32: Path, calibration: np.ndarray, out: Path, recipe: str) -> str:
    """benchmarks/peer_<tool>.py in that toolkit's virtualenv (`python`), on the same latents; its version."""
    import subprocess

    script, name = PEER_SCRIPTS[tool]
    latents = out.with_suffix(".npy")
    np.save(latents, calibration)
    done = subprocess.run([python, str(ROOT / "benchmarks" / script), "--onnx", str(fp32), "--calibration",
                           str(latents), "--out", str(out), "--recipe", recipe], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{name} ({python}) failed on recipe {recipe}: {done.stderr.strip().splitlines()[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])[tool]


def fieldnotes_sets(fp32: Path, scratch: Path) -> tuple[str, str, str]:
    """The team's earlier protocol: corpus clips of one window each, seed 0 to calibrate and
    seed 1 held out, encoded by the shipped fixture's encoder; statistics of the first."""
    from vae_engines.data.corpus import music_clips
    from vae_engines.data.latentset import write_latent_set
    from vae_engines.graph.execute import GraphExecutor
    from vae_engines.graph.io import load_onnx
    from vae_engines.model.oobleck import FIXTURE_DIR, encode_audio, load_checkpoint
    from vae_engines.quant.qdq import quantizable_layers
    from vae_engines.quant.stats import collect, write_stats

    vae = load_checkpoint(FIXTURE_DIR).vae
    seconds = 32 * 1920 / 48000
    sets = {}
    for name, count, seed in (("calibration", 8, 0), ("holdout", 4, 1)):
        latents = encode_audio(vae, music_clips(count, seconds, 48000, seed), "cpu", progress=False)
        sets[name] = str(write_latent_set(scratch / name, latents, {"source": f"corpus seed {seed}"}))
    model = load_onnx(fp32)
    layers = quantizable_layers(model)
    stats = collect(GraphExecutor(model), layers, np.load(Path(sets["calibration"]) / "latents.npy"))
    write_stats(scratch / "stats.npz", scratch / "stats.json", stats, layers, {})
    return sets["calibration"], sets["holdout"], str(scratch / "stats.npz")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--onnx", default="engines/onnx/fp32.onnx", help="fp32 ONNX")
    p.add_argument("--calibration", default="data/calibration", help="calibration latent set")
    p.add_argument("--holdout", default="data/holdout", help="held-out latent set")
    p.add_argument("--stats", default="data/stats/stats.npz", help="this project's activation statistics")
    p.add_argument("--out", default="benchmarks/results/peers", help="output path without suffix")
    p.add_argument("--protocol", choices=["pipeline", "fieldnotes"], default="pipeline",
                   help="pipeline: the workspace's data/ sets; fieldnotes: the team's earlier protocol (8 "
                        "calibration latents from corpus seed 0, 4 held-out from seed 1, 32 frames, fixture encoder)")
    p.add_argument("--search", action="store_true", help="also this project's range search (minutes on 2 cores)")
    p.add_argument("--nncf-python", default=None, help="python of a virtualenv with NNCF 3.4: adds its rows")
    p.add_argument("--aimet-python", default=None, help="python of a virtualenv with aimet-onnx: adds its rows")
    args = p.parse_args()

    from vae_engines.core.entry import setup_logging
    from vae_engines.core.env import fingerprint
    from vae_engines.data.latentset import read_latent_set, read_manifest
    from vae_engines.graph.io import file_metadata, ort_session

    setup_logging()
    scratch = tempfile.TemporaryDirectory()
    if args.protocol == "fieldnotes":
        args.calibration, args.holdout, args.stats = fieldnotes_sets(Path(args.onnx), Path(scratch.name))
    fp32, calibration, held = Path(args.onnx), read_latent_set(args.calibration), read_latent_set(args.holdout)
    session = ort_session(fp32, 2)
    reference = np.concatenate([session.run(None, {"latent": x[None]})[0] for x in held])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        plans = [("onnxruntime quantize_static, defaults (minmax)", "ort", True, "minmax", None),
                 ("onnxruntime, conv inputs only, no bias Q, no output Q: minmax", "ort", False, "minmax", None),
                 ("onnxruntime, same placement: entropy", "ort", False, "entropy", None),
                 ("onnxruntime, same placement: percentile 99.999", "ort", False, "percentile", None),
                 ("vae-engines: entropy (TensorRT's algorithm)", "ours", False, "entropy", None),
                 ("vae-engines: minmax", "ours", False, "minmax", None),
                 ("vae-engines: percentile 99.99", "ours", False, "percentile", 99.99),
                 ("vae-engines: percentile 99.999", "ours", False, "percentile", 99.999),
                 ("vae-engines: mse", "ours", False, "mse", None),
                 ("vae-engines: minmax + equalization through Snake (equalize: true)", "ours", False, "minmax",
                  None, {"equalize": True}),
                 ("vae-engines: minmax + range margin (range_margin: auto)", "ours", False, "minmax", None,
                  {"range_margin": "auto"})]
        if args.search:
            plans.append(("vae-engines: search", "ours", False, "search", None))
        if args.nncf_python:
            plans += [(label, "nncf", False, recipe, None) for label, recipe in NNCF_RECIPES]
        if args.aimet_python:
            plans += [(label, "aimet", False, recipe, None) for label, recipe in AIMET_RECIPES]
        for index, (label, who, defaults, method, percentile, *extra) in enumerate(plans):
            graph = tmp / f"g{index}.onnx"
            start = time.perf_counter()
            note = None
            if who == "ort":
                ort_quantized(fp32, graph, calibration, defaults=defaults, method=method)
            elif who in PEER_SCRIPTS:
                note = {who: peer_quantized(who, getattr(args, f"{who}_python"), fp32, calibration, graph, method)}
            else:
                record = ours(fp32, graph, Path(args.stats), Path(args.calibration), method, percentile,
                              **(extra[0] if extra else {}))
                if record.get("equalization"):
                    e = record["equalization"]
                    note = {"equalization": {"migration": e["migration"],
                                             "cross_validated_error": e["cross_validated_error"]}}
                if record.get("range_margin"):
                    note = {"range_margin": record["range_margin"]}
            seconds = round(time.perf_counter() - start, 1)
            row = {"method": label, **measure(graph, held, reference), **tensorrt_rtx(graph, tmp / "p.plan"),
                   "quantize_seconds": seconds, **(note or {})}
            print(json.dumps(row), file=sys.stderr)
            rows.append(row)
    provenance = {"model": file_metadata(fp32).get("model"), "calibration": read_manifest(args.calibration)["shape"],
                  "holdout": read_manifest(args.holdout)["shape"], "runtime": "onnxruntime CPU (fp32 float parts)",
                  "protocol": args.protocol, "machine": fingerprint(), "commit": commit(),
                  "peers_not_run": [e for e in PEERS_NOT_RUN if not any(
                      getattr(args, f"{tool}_python") and e["peer"].startswith(name) for tool, (_, name) in
                      PEER_SCRIPTS.items())]}
    scratch.cleanup()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"rows": rows, "provenance": provenance}, indent=2) + "\n")
    lines = [f"Protocol `{args.protocol}`. Model: {provenance['model']}; calibration latents {provenance['calibration']}, held-out "
             f"{provenance['holdout']}; every convolution in INT8; measured by {provenance['runtime']} on "
             f"{provenance['machine']['cpu']} ({provenance['machine']['cpu_count']} cores).", "",
             "| method | peak PSNR vs fp32 (dB) | SNR (dB) | SI-SDR (dB) | TensorRT-RTX builds it | plan (MB) | "
             "quantize (s) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['peak_psnr_db']} | {r['snr_db']} | {r['si_sdr_db']} | {r['tensorrt_rtx']} "
                     f"| {r['plan_mb'] if r['plan_mb'] is not None else '-'} | {r['quantize_seconds']} |")
    lines += ["", "quantize (s): ONNX Runtime's, NNCF's and AIMET's rows include their calibration passes over the "
              "data (NNCF's and AIMET's also their process start); this project's "
              "rows read statistics collected once for all of them (the `stats` stage, a few seconds here), so "
              "theirs is the per-variant cost.", "",
              "NVIDIA ModelOpt 0.47 was not run here (its `[onnx]` extra cannot share this virtualenv); the team "
              "measured it on the same default model on 2026-11-27: entropy 50.9 dB, max 49.3 dB, both built by "
              "TensorRT-RTX."]
    for e in provenance["peers_not_run"]:
        lines += ["", f"{e['peer']} was not run by this script: {e['reason']}. Earlier measurement ({e['measured']}, "
                      f"not this run): {e['figures']}."]
    for tool, (script, name) in PEER_SCRIPTS.items():
        versions = sorted({r[tool] for r in rows if r.get(tool)})
        if versions:
            lines += ["", f"{name} rows: {name} {', '.join(versions)} in its own virtualenv "
                          f"({getattr(args, f'{tool}_python')}), benchmarks/{script}, the same calibration latents; "
                          "measured here like every row."]
    eq = [r for r in rows if r.get("equalization")]
    for r in eq:
        lines += ["", f"Equalization: migration {r['equalization']['migration']} chosen by cross-validation on the "
                      f"calibration latents (squared error by candidate: {r['equalization']['cross_validated_error']})."]
    for r in (r for r in rows if r.get("range_margin")):
        m = r["range_margin"]
        latent = f", the latent's x{m['latent_margin']}" if "latent_margin" in m else ""
        lines += ["", f"Range margin: x{m['margin']}{latent} chosen by cross-validation on the calibration latents' "
                      f"halves (squared error by margin, then the latent's margin: {m['cross_validated_error']})."]
    lines += ["", f"Commit {provenance['commit']}; versions {json.dumps(provenance['machine'].get('versions', {}))}."]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
