"""Wall time of a no-op `dvc repro`: everything up to date, only the always-run `check` stage.

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
    seconds = []
    for _ in range(args.runs):
        start = time.perf_counter()
        result = subprocess.run([dvc, "repro"], capture_output=True, text=True)
        seconds.append(round(time.perf_counter() - start, 3))
        ran = [line for line in result.stdout.splitlines() if line.startswith("Running stage")]
        if result.returncode != 0 or ran != ["Running stage 'check':"]:
            raise SystemExit(f"error: `dvc repro` was not a no-op here (ran {ran}, exit {result.returncode}); "
                             "run `dvc repro` once first")
    version = subprocess.run([dvc, "--version"], capture_output=True, text=True).stdout.strip()
    record = {"seconds": seconds, "min_s": min(seconds), "median_s": statistics.median(seconds),
              "max_s": max(seconds), "dvc": version, "workspace": str(Path.cwd()), "machine": fingerprint()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [f"No-op `dvc repro` (only `check` runs), {len(seconds)} runs in {record['workspace']}, DVC {version}, "
             f"on {record['machine']['cpu']} ({record['machine']['cpu_count']} cores): min {record['min_s']} s, "
             f"median {record['median_s']} s, max {record['max_s']} s."]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
