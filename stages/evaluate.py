"""DVC stage `evaluate@<variant>`: quality metrics (DVC metrics), their provenance, and wav
clips to listen to."""

from vae_engines.core import device, entry, params
from vae_engines.measure.evaluate import evaluate_stage


def main(args):
    p = params.load(args.params)
    evaluate_stage(args.variant, onnx_path=args.onnx, plan=args.plan, holdout_dir=args.holdout,
                   reference_dir=args.reference, out_dir=args.out,
                   clip_seconds=p.evaluate.clip_seconds, device=device.resolve(p.compute))


if __name__ == "__main__":
    p = entry.parser(__doc__)
    p.add_argument("--variant", required=True, help="fp16, or a recipe name under int8: in params.yaml")
    p.add_argument("--onnx", required=True, help="the variant's ONNX")
    p.add_argument("--plan", required=True, help="the variant's engine plan")
    p.add_argument("--holdout", required=True, help="held-out latent set folder")
    p.add_argument("--reference", required=True, help="reference decodes folder")
    p.add_argument("--out", required=True, help="reports/variants/<variant> folder")
    entry.run(main, p)
