"""Per-stage wall time of a real `dvc repro`, read from DVC's own output as it runs.

    python benchmarks/stage_times.py --out benchmarks/results/NAME [--set KEY=VALUE ...] [-- DVC REPRO ARGS]

--set edits params.yaml in place first (dotted keys, YAML values), so run it in a scratch
copy of the project when that matters. Each "Running stage" line DVC prints is
timestamped; a stage's time is the gap to the next one (its Python start-up, its work,
and DVC's own bookkeeping for it). Writes NAME.json (stages, seconds, the params applied,
the machine, and every stage's statistics / search records where they exist) and NAME.md.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def apply_sets(params_file: Path, sets: list[str]) -> dict:
    if not sets:  # leave the file (and its comments) alone
        return {}
    params = yaml.safe_load(params_file.read_text())
    applied = {}
    for item in sets:
        key, _, raw = item.partition("=")
        value = yaml.safe_load(raw)
        node = params
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
        applied[key] = value
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    return applied


def timed_repro(args: list[str]) -> tuple[list[dict], float, int, str]:
    start = time.perf_counter()
    proc = subprocess.Popen(["dvc", "repro", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1)
    marks: list[tuple[str, float]] = []
    log = []
    for line in proc.stdout:
        sys.stdout.write(line)
        log.append(line)
        found = re.match(r"Running stage '([^']+)'", line)
        if found:
            marks.append((found.group(1), time.perf_counter() - start))
    code = proc.wait()
    total = time.perf_counter() - start
    stages = [{"stage": name, "started_s": round(t, 2), "seconds": round((marks[i + 1][1] if i + 1 < len(marks)
                                                                           else total) - t, 2)}
              for i, (name, t) in enumerate(marks)]
    return stages, total, code, "".join(log[-40:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output path without suffix")
    p.add_argument("--set", action="append", default=[], help="params.yaml override KEY=VALUE (repeatable)")
    p.add_argument("--label", default="", help="what this run is, for the report")
    p.add_argument("repro_args", nargs="*", help="arguments for dvc repro (after --)")
    args = p.parse_args()

    from vae_engines.core.env import fingerprint

    applied = apply_sets(Path("params.yaml"), args.set)
    stages, total, code, tail = timed_repro(args.repro_args)
    records = {}
    stats_json = Path("data/stats/stats.json")
    if stats_json.is_file():
        stats = json.loads(stats_json.read_text())
        records["stats"] = {k: stats[k] for k in ("latents", "frames", "seconds", "sweeps", "compute") if k in stats}
    for ranges in sorted(Path("engines/onnx").glob("*.ranges.json")):
        doc = json.loads(ranges.read_text())
        if doc.get("search") or doc.get("auto"):
            records[ranges.stem.split(".")[0]] = {"search": doc.get("search"), "auto": doc.get("auto") and {
                k: v for k, v in doc["auto"].items() if k != "steps"}}
    result = {"label": args.label, "exit_code": code, "total_seconds": round(total, 1), "stages": stages,
              "params_set": applied, "records": records, "machine": fingerprint(), "dvc_tail": tail}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# {args.label or 'dvc repro'}", "",
             f"`dvc repro` exit code {code}, {total:.0f} s in all, on {result['machine']['cpu']} "
             f"({result['machine']['cpu_count']} cores), GPU {result['machine']['gpu']}.", "",
             "Params set: " + (", ".join(f"`{k}={v}`" for k, v in applied.items()) or "none"), "",
             "| stage | seconds |", "|---|---|"] + [f"| {s['stage']} | {s['seconds']} |" for s in stages]
    if "stats" in records:
        s = records["stats"]
        lines += ["", f"Activation statistics: {s.get('latents')} latents x {s.get('frames')} frames, "
                      f"{s.get('sweeps')} sweeps, {s.get('seconds')} s of collection on {s.get('compute', {}).get('name', s.get('compute', {}).get('device'))}."]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    sys.exit(code)


if __name__ == "__main__":
    main()
