"""`vae-engines`: helpers around the pipeline (the stages themselves run through `dvc repro`).

  vae-engines check-params [PARAMS]             validate a params file, list the variants
  vae-engines env                               print this machine's fingerprint and the toolchain
  vae-engines check-metrics --baseline REV      fail if a quality metric fell more than the
                                                tolerance below the one committed at REV
  vae-engines experiments                       DVC experiments as one short row each: every
                                                variant's peak PSNR and the params changed
  vae-engines repro --jobs N                    `dvc repro` with up to N independent stages
                                                side by side (stages that time things alone)
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

from vae_engines.core import entry
from vae_engines.core.env import fingerprint, toolchain
from vae_engines.core.errors import UserError
from vae_engines.core.params import load
from vae_engines.core.repro import reproduce

QUALITY_KEYS = ("peak_psnr_db", "snr_db", "si_sdr_db")  # dB, higher is better
# Gated: fidelity to the fp32 / fp16 decodes. The round-trip against the input audio
# includes the encoder's error, which dominates it: reported, not gated.
UNGATED = ".vs_audio."


def _flatten(obj: object, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        out[prefix] = float(obj)
    return out


def compare_quality(current: dict, baseline: dict, tolerance_db: float) -> list[str]:
    """Problems of `current` against `baseline`: a metric the baseline has and current lacks,
    or a dB metric more than `tolerance_db` below the baseline."""
    now, then = _flatten(current), _flatten(baseline)
    problems = []
    for key, old in sorted(then.items()):
        if key not in now:
            problems.append(f"{key}: missing (committed {old:.2f})")
        elif key.endswith(QUALITY_KEYS) and UNGATED not in key and now[key] < old - tolerance_db:
            problems.append(f"{key}: {now[key]:.2f} dB, committed {old:.2f} dB")
    return problems


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], capture_output=True, text=True)


def check_metrics(params_file: Path, reports: Path, baseline_rev: str, tolerance_db: float) -> int:
    if not math.isfinite(tolerance_db) or tolerance_db < 0:
        raise UserError(f"--tolerance-db {tolerance_db} must be a finite number >= 0")
    if _git("rev-parse", "--verify", "--quiet", f"{baseline_rev}^{{commit}}").returncode != 0:
        raise UserError(f"--baseline {baseline_rev!r} is not a commit of this repository; give a branch, tag or sha "
                        "(e.g. origin/main)")
    failures, compared = [], 0
    for variant in load(params_file).variant_names():
        path = reports / variant / "quality.json"
        if not path.is_file():
            failures.append(f"{variant}: {path} is missing; run `dvc repro`")
            continue
        shown = _git("show", f"{baseline_rev}:{path.as_posix()}")
        if shown.returncode != 0:
            print(f"{path}: new at this revision, no baseline at {baseline_rev} to compare with")
            continue
        problems = compare_quality(json.loads(path.read_text()), json.loads(shown.stdout), tolerance_db)
        compared += 1
        failures += [f"{variant}: {p}" for p in problems]
        print(f"{path}: {'OK' if not problems else 'REGRESSED'} against {baseline_rev}")
    if compared == 0 and not failures:
        failures.append(f"nothing compared: no variant has a quality.json committed at {baseline_rev}")
    for f in failures:
        print(f"regression: {f}", file=sys.stderr)
    return 1 if failures else 0


def _flat_params(doc: dict) -> dict[str, object]:
    out: dict[str, object] = {}

    def walk(node: object, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}.{k}" if prefix else str(k))
        else:
            out[prefix] = node

    walk(doc, "")
    return out


def experiment_rows(shown: list, metric: str) -> list[dict]:
    """Rows of `dvc exp show --json` output: name, each variant's `metric`, the params that
    differ from the row's baseline commit."""
    rows = []
    for base in shown:
        base_params = _flat_params(((base.get("data") or {}).get("params") or {}).get("params.yaml", {}).get("data", {}))
        revs = [base] + [e["revs"][0] for e in base.get("experiments") or [] if e.get("revs")]
        for rev in revs:
            data = rev.get("data") or {}
            params = _flat_params((data.get("params") or {}).get("params.yaml", {}).get("data", {}))
            values = {}
            for path, doc in (data.get("metrics") or {}).items():
                if path.endswith("/quality.json"):
                    node = doc.get("data") or {}
                    for part in metric.split("."):
                        node = node.get(part, {}) if isinstance(node, dict) else {}
                    values[path.split("/")[-2]] = node if isinstance(node, (int, float)) else None
            sha = str(rev.get("rev", ""))
            name = rev.get("name") or (sha[:7] if len(sha) == 40 else sha)
            changed = [] if rev is base else [f"{k}={v}" for k, v in params.items() if base_params.get(k) != v]
            failed = " (failed)" if rev.get("error") else ""
            rows.append({"experiment": name + failed, "values": values, "changed": changed})
    return rows


def print_experiments(metric: str) -> None:
    beside = Path(sys.executable).parent / "dvc"  # the dvc of this environment, activated or not
    try:
        shown = subprocess.run([str(beside) if beside.is_file() else "dvc", "exp", "show", "--json"],
                               capture_output=True, text=True)
    except FileNotFoundError:
        raise UserError("dvc is not installed in this environment; pip install -e . installs it") from None
    if shown.returncode != 0:
        raise UserError(f"dvc exp show failed ({shown.stderr.strip().splitlines()[-1] if shown.stderr else ''}); "
                        "run it from the project root")
    rows = experiment_rows(json.loads(shown.stdout or "[]"), metric)
    variants = list(dict.fromkeys(v for r in rows for v in r["values"]))
    width = max([len(r["experiment"]) for r in rows] + [10])
    print(f"{metric} per variant")
    print("experiment".ljust(width) + "".join(f"{v[:10]:>11}" for v in variants))
    for r in rows:
        cells = "".join(f"{'-' if r['values'].get(v) is None else format(r['values'][v], '.1f'):>11}"
                        for v in variants)
        print(r["experiment"].ljust(width) + cells)
        for change in r["changed"]:
            print(" " * 4 + change)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="vae-engines", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--debug", action="store_true", help="show tracebacks of user errors")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check-params", help="validate a params file and list its variants")
    c.add_argument("params", nargs="?", default="params.yaml", help="params file (default: params.yaml)")
    sub.add_parser("env", help="print this machine's fingerprint and the build toolchain, as JSON")
    m = sub.add_parser("check-metrics", help="compare reports/variants/*/quality.json with a git revision")
    m.add_argument("--baseline", default="HEAD", help="git revision holding the committed metrics (default: HEAD)")
    m.add_argument("--tolerance-db", type=float, default=0.5,
                   help="largest allowed drop of a dB metric (default: 0.5)")
    m.add_argument("--params", default="params.yaml", help="params file naming the variants (default: params.yaml)")
    m.add_argument("--reports", default="reports/variants", help="folder of per-variant reports")
    e = sub.add_parser("experiments", help="DVC experiments as one short row each (fits a terminal)")
    e.add_argument("--metric", default="heldout.vs_fp16.peak_psnr_db",
                   help="quality.json key to show per variant (default: heldout.vs_fp16.peak_psnr_db)")
    r = sub.add_parser("repro", help="dvc repro, independent stages side by side (core/repro.py)")
    r.add_argument("--jobs", "-j", type=int, default=2, help="stages at a time (default: 2)")
    r.add_argument("--record", help="write each stage's outcome and times here (JSON)")
    r.add_argument("--memory-record", default="reports/stage_memory.json",
                   help="each stage's peak GPU memory in its last run, kept per GPU model: stages start side by "
                        "side only where their peaks fit the GPU (default: reports/stage_memory.json)")
    r.add_argument("--gpu-memory-gib", type=float,
                   help="GPU memory the stages may share (default: what the GPU has; a share where other work "
                        "uses the GPU too)")

    def run(args: argparse.Namespace) -> None:
        if args.command == "check-params":
            params = load(args.params)
            print(f"{args.params}: OK; variants: {', '.join(params.variant_names())}")
        elif args.command == "env":
            backend = load("params.yaml").build.backend if Path("params.yaml").is_file() else "auto"
            print(json.dumps({"machine": fingerprint(), "toolchain": toolchain(backend)}, indent=2))
        elif args.command == "experiments":
            print_experiments(args.metric)
        elif args.command == "repro":
            reproduce(".", args.jobs, args.record, args.memory_record, args.gpu_memory_gib)
        else:
            sys.exit(check_metrics(Path(args.params), Path(args.reports), args.baseline, args.tolerance_db))

    entry.run(run, p, argv)


if __name__ == "__main__":
    main()
