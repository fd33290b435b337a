"""`vae-engines`: helpers around the pipeline (the stages themselves run through `dvc repro`).

  vae-engines check-params [params.yaml]        validate a params file, print the variants
  vae-engines env                               print the environment fingerprint
  vae-engines check-metrics [--baseline REV]    fail if a quality metric fell below the
                                                committed value by more than the tolerance
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from vae_engines.core import entry
from vae_engines.core.errors import UserError

QUALITY_KEYS = ("peak_psnr_db", "snr_db", "si_sdr_db")


def _flatten(obj: object, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        out[prefix] = float(obj)
    return out


def compare_quality(current: dict, baseline: dict, tolerance_db: float) -> list[str]:
    """Quality metrics (dB, higher is better) that fell more than `tolerance_db` below baseline."""
    now, then = _flatten(current), _flatten(baseline)
    drops = []
    for key, old in sorted(then.items()):
        if key.endswith(QUALITY_KEYS) and key in now and now[key] < old - tolerance_db:
            drops.append(f"{key}: {now[key]:.2f} dB, committed {old:.2f} dB")
    return drops


def check_metrics(reports: Path, baseline_rev: str, tolerance_db: float) -> int:
    failures = []
    files = sorted(reports.glob("*/quality.json"))
    if not files:
        raise UserError(f"no quality.json under {reports}; run `dvc repro` first")
    for path in files:
        shown = subprocess.run(["git", "show", f"{baseline_rev}:{path.as_posix()}"], capture_output=True, text=True)
        if shown.returncode != 0:
            print(f"{path}: no committed baseline at {baseline_rev}, skipped")
            continue
        drops = compare_quality(json.loads(path.read_text()), json.loads(shown.stdout), tolerance_db)
        failures += [f"{path.parent.name}: {d}" for d in drops]
        print(f"{path}: {'OK' if not drops else 'REGRESSED'} against {baseline_rev}")
    for f in failures:
        print(f"regression: {f}", file=sys.stderr)
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="vae-engines", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--debug", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check-params", help="validate a params file")
    c.add_argument("params", nargs="?", default="params.yaml")
    sub.add_parser("env", help="print the environment fingerprint")
    m = sub.add_parser("check-metrics", help="compare reports/variants/*/quality.json with a git revision")
    m.add_argument("--reports", default="reports/variants")
    m.add_argument("--baseline", default="HEAD")
    m.add_argument("--tolerance-db", type=float, default=0.5)

    def run(args: argparse.Namespace) -> None:
        if args.command == "check-params":
            from vae_engines.core.params import load

            params = load(args.params)
            print(f"{args.params}: OK; variants: {', '.join(params.variant_names())}")
        elif args.command == "env":
            from vae_engines.core.env import fingerprint

            print(json.dumps(fingerprint(), indent=2))
        else:
            sys.exit(check_metrics(Path(args.reports), args.baseline, args.tolerance_db))

    entry.run(run, p, argv)


if __name__ == "__main__":
    main()
