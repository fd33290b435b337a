"""Per-stage wall time of a real `dvc repro`, read from DVC's own output as it runs.

    python benchmarks/stage_times.py --out benchmarks/results/NAME [--set KEY=VALUE ...] [--jobs N]
                                     [-- DVC REPRO ARGS]

--set edits params.yaml in place first (dotted keys, YAML values), so run it in a scratch
copy of the project when that matters. Each "Running stage" line DVC prints is
timestamped; a stage's time is the gap to the next one (its Python start-up, its work,
and DVC's own bookkeeping for it). With --jobs N the pipeline runs through `vae-engines
repro --jobs N` (independent stages side by side), whose record gives each stage's start
and duration. Writes NAME.json (stages, seconds, the params applied,
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


def _streamed(cmd: list[str], start: float, marks: list[tuple[str, float]]) -> tuple[int, list[str]]:
    """Run `cmd`, its output passed through as it comes; each "Running stage" line's stage and
    time since `start` appended to `marks`. Returns its exit code and its lines."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    log = []
    for line in proc.stdout:
        sys.stdout.write(line)
        log.append(line)
        found = re.match(r"Running stage '([^']+)'", line)
        if found:
            marks.append((found.group(1), time.perf_counter() - start))
    return proc.wait(), log


def timed_repro(args: list[str]) -> tuple[list[dict], float, int, str]:
    start = time.perf_counter()
    marks: list[tuple[str, float]] = []
    code, log = _streamed(["dvc", "repro", *args], start, marks)
    total = time.perf_counter() - start
    stages = [{"stage": name, "started_s": round(t, 2), "seconds": round((marks[i + 1][1] if i + 1 < len(marks)
                                                                           else total) - t, 2)}
              for i, (name, t) in enumerate(marks)]
    return stages, total, code, "".join(log[-40:])


def parallel_repro(jobs: int, args: list[str], record: Path) -> tuple[list[dict], float, int, str]:
    """`vae-engines repro --jobs N` (core/repro.py): its own record gives each stage's start and
    time (only the stages that ran). Its output streams through as it comes, and its record is
    rewritten at `record` after every stage, so a run cut short (the lent GPU machine can be
    taken back, a call ends at its time limit) still says how far it got."""
    start = time.perf_counter()
    code, log = _streamed([sys.executable, "-m", "vae_engines.cli", "repro", "--jobs", str(jobs), "--record",
                           str(record), *args], start, [])
    total = time.perf_counter() - start
    doc = json.loads(record.read_text()) if record.is_file() else {"stages": []}
    stages = [{"stage": s["stage"], "started_s": s["started_s"], "seconds": s["seconds"],
               **({"alone": True} if s["alone"] else {}),
               **{k: s[k] for k in ("dvc_before_s", "command_s", "dvc_after_s") if k in s}}
              for s in doc["stages"] if s["outcome"] in ("ran", "failed")]
    return stages, total, code, "".join(log[-40:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output path without suffix")
    p.add_argument("--set", action="append", default=[], help="params.yaml override KEY=VALUE (repeatable)")
    p.add_argument("--label", default="", help="what this run is, for the report")
    p.add_argument("--jobs", type=int, default=0, help="run `vae-engines repro --jobs N` instead of dvc repro")
    p.add_argument("repro_args", nargs="*", help="arguments for dvc repro (after --)")
    args = p.parse_args()

    from vae_engines.core.env import fingerprint

    applied = apply_sets(Path("params.yaml"), args.set)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # the driver's own record lands where the result will: replaced by it at the end, there until then
    stages, total, code, tail = (parallel_repro(args.jobs, args.repro_args, out.with_suffix(".json")) if args.jobs
                                 else timed_repro(args.repro_args))
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
    result = {"label": args.label, "exit_code": code, "total_seconds": round(total, 1),
              "runner": f"vae-engines repro --jobs {args.jobs}" if args.jobs else "dvc repro", "stages": stages,
              "params_set": applied, "records": records, "machine": fingerprint(), "dvc_tail": tail}
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# {args.label or 'dvc repro'}", "",
             f"`{result['runner']}` exit code {code}, {total:.0f} s in all, on {result['machine']['cpu']} "
             f"({result['machine']['cpu_count']} cores), GPU {result['machine']['gpu']}.", "",
             "Params set: " + (", ".join(f"`{k}={v}`" for k, v in applied.items()) or "none"), "",
             "| stage | started (s) | seconds | DVC before the command | command | DVC after it |",
             "|---|---|---|---|---|---|"] + [
                 f"| {s['stage']}{' (alone)' if s.get('alone') else ''} | {s['started_s']} | {s['seconds']} | "
                 f"{s.get('dvc_before_s', '-')} | {s.get('command_s', '-')} | {s.get('dvc_after_s', '-')} |"
                 for s in stages]
    if "stats" in records:
        s = records["stats"]
        lines += ["", f"Activation statistics: {s.get('latents')} latents x {s.get('frames')} frames, "
                      f"{s.get('sweeps')} sweeps, {s.get('seconds')} s of collection on {s.get('compute', {}).get('name', s.get('compute', {}).get('device'))}."]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    sys.exit(code)


if __name__ == "__main__":
    main()
