"""Wall time of a no-op `dvc repro` (everything up to date, only the always-run `check` stage)
beside `dvc status`, the two taking turns.

    dvc repro                                   # once, so that everything is up to date
    python benchmarks/noop_repro.py [--runs 7] [--out benchmarks/results/noop_repro]

Runs `dvc repro` --runs times in the current workspace, one after another, and fails if any
run did more than the `check` stage (then it was not a no-op). Writes <out>.json (every
time, the machine, DVC's version) and <out>.md (min / median / max).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--out", default="benchmarks/results/noop_repro", help="output path without suffix")
    args = p.parse_args()
    from vae_engines.core.env import fingerprint

    dvc = shutil.which("dvc")
    if dvc is None:
        raise SystemExit("error: dvc is not on PATH; activate the project's virtualenv (. .venv/bin/activate)")
    seconds, status_seconds = [], []
    for round_ in range(args.runs):  # the two take turns, so a slow moment hits both
        for command in (("status", "repro") if round_ % 2 else ("repro", "status")):
            start = time.perf_counter()
            result = subprocess.run([dvc, command], capture_output=True, text=True)
            (seconds if command == "repro" else status_seconds).append(round(time.perf_counter() - start, 3))
            if command == "repro":
                ran = [line for line in result.stdout.splitlines() if line.startswith("Running stage")]
                if result.returncode != 0 or ran != ["Running stage 'check/dvc.yaml:check':"]:
                    raise SystemExit(f"error: `dvc repro` was not a no-op here (ran {ran}, exit "
                                     f"{result.returncode}); run `dvc repro` once first")
    version = subprocess.run([dvc, "--version"], capture_output=True, text=True).stdout.strip()
    ratio = statistics.median(r / s for r, s in zip(seconds, status_seconds))
    record = {"seconds": seconds, "min_s": min(seconds), "median_s": statistics.median(seconds),
              "max_s": max(seconds), "status_seconds": status_seconds,
              "status_median_s": statistics.median(status_seconds), "median_ratio_repro_to_status": round(ratio, 2),
              "dvc": version, "workspace": str(Path.cwd()), "machine": fingerprint()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [f"No-op `dvc repro` (only `check` runs), {len(seconds)} runs in {record['workspace']}, DVC {version}, "
             f"on {record['machine']['cpu']} ({record['machine']['cpu_count']} cores): min {record['min_s']} s, "
             f"median {record['median_s']} s, max {record['max_s']} s; `dvc status` in the same rounds: median "
             f"{record['status_median_s']} s; repro / status per round: median {ratio:.2f}x."]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
