"""DVC stage `report`: reports/report.md, its plots and the latency rows for `dvc plots`,
from the measured records."""

from vae_engines.core import entry, params
from vae_engines.report.render import write_report


def main(args):
    p = params.load(args.params)
    write_report(["fp16", *p.int8], p.bench.frames, p.build.backend, reports=args.reports, torch_json=args.torch,
                 int8_engines=[f"{args.int8_engines}/{v}.json" for v in p.compile.int8],
                 quality_target_db=p.report.quality_target_db, sensitivity_json=args.sensitivity, calibration_dir=args.calibration, holdout_dir=args.holdout,
                 out_md=args.out, plots_dir=args.plots, latency_json=args.latency)


if __name__ == "__main__":
    p = entry.parser(__doc__)
    p.add_argument("--reports", required=True, help="reports/variants folder")
    p.add_argument("--torch", required=True, help="the PyTorch engines' bench.json")
    p.add_argument("--int8-engines", required=True, help="folder of the INT8 engines' records (bench_int8)")
    p.add_argument("--sensitivity", required=True, help="sensitivity.json")
    p.add_argument("--calibration", required=True, help="calibration latent set folder (its manifest)")
    p.add_argument("--holdout", required=True, help="held-out latent set folder (its manifest)")
    p.add_argument("--out", required=True, help="report.md")
    p.add_argument("--plots", required=True, help="folder for the PNG plots")
    p.add_argument("--latency", required=True, help="latency rows for dvc plots (JSON)")
    entry.run(main, p)
