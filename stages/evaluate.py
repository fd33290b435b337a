"""DVC stage `evaluate_fp16` / `evaluate@<variant>`: quality metrics and wav clips."""

from pathlib import Path

from vae_engines.core import params as config

from vae_engines.core import entry
from vae_engines.measure.evaluate import evaluate_variant
from vae_engines.core.fileio import read_json, write_json
from vae_engines.core.provenance import model_facts, provenance
from vae_engines.measure.runtimes import variant_runtime


def main(args):
    params = config.load(args.params)
    runtime, trt_status = variant_runtime(params.build.backend, args.plan, args.onnx, params.evaluate.threads)
    hop, sr = model_facts(args.onnx)
    out = Path(args.out)
    result = evaluate_variant(args.variant, runtime, args.holdout, args.reference, out / "clips", sr,
                              params.evaluate.clip_seconds)
    variant = params.int8.get(args.variant)
    ranges = Path(args.onnx).with_suffix(".ranges.json")
    ranges_doc = read_json(ranges) if variant is not None else {}
    kept = ranges_doc.get("kept_in_float")
    described = runtime.describe()
    # quality.json holds the numbers (DVC metrics); the provenance beside it says where they come from
    write_json(out / "quality.json", {
        "variant": args.variant,
        "precision": "fp16" if variant is None else "int8",
        "runtime": f"{described['runtime']} {described['version']}",
        "tensorrt": trt_status,
        **result,
    })
    write_json(out / "quality.provenance.json", {
        "runtime": described,
        "kept_in_float": kept,
        "auto": ranges_doc.get("auto") and {k: v for k, v in ranges_doc["auto"].items() if k != "steps"},
        "fp16_note": "fp16 ONNX executed by ONNX Runtime's CPU kernels" if runtime.name == "onnxruntime" else None,
        "provenance": provenance(args.env, args.onnx, params.model, params.holdout, variant, params.evaluate),
    })


if __name__ == "__main__":
    p = entry.parser(__doc__)
    p.add_argument("--variant", required=True)
    p.add_argument("--onnx", required=True)
    p.add_argument("--plan", required=True)
    p.add_argument("--holdout", required=True)
    p.add_argument("--reference", required=True)
    p.add_argument("--env", required=True)
    p.add_argument("--out", required=True, help="reports/<variant> directory")
    entry.run(main, p)
