"""DVC stage `report`: reports/report.md, its plots and the latency rows for `dvc plots`,
from the measured records."""

from vae_engines.core import entry, params
from vae_engines.report.render import write_report


def main(args):
    write_report(params.load(args.params), reports=args.reports, sensitivity_json=args.sensitivity,
                 out_md=args.out, plots_dir=args.plots, latency_json=args.latency)


if __name__ == "__main__":
    p = entry.parser(__doc__)
    p.add_argument("--reports", required=True, help="reports/variants folder")
    p.add_argument("--sensitivity", required=True, help="sensitivity.json")
    p.add_argument("--out", required=True, help="report.md")
    p.add_argument("--plots", required=True, help="folder for the PNG plots")
    p.add_argument("--latency", required=True, help="latency rows for dvc plots (JSON)")
    entry.run(main, p)
