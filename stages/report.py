"""DVC stage `report`: reports/report.md and its plots, from the measured JSON."""

from vae_engines.core import params as config

from vae_engines.core import entry
from vae_engines.report.report import write_report


def main(args):
    params = config.load(args.params)
    write_report(args.reports, args.env, params, args.out, args.plots, args.sensitivity)


if __name__ == "__main__":
    p = entry.parser(__doc__)
    p.add_argument("--reports", required=True)
    p.add_argument("--sensitivity", required=True, help="sensitivity.json")
    p.add_argument("--env", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--plots", required=True)
    entry.run(main, p)
