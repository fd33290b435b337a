"""The report's first screen: which engine to ship on the machine that ran the pipeline, for a
held-out quality target (params `report.quality_target_db`, peak PSNR vs fp32), from this run's
measurements alone.

Candidates are the PyTorch engines that ran here (eager, compiled, INT8 and FP8; their records hold
their held-out quality, latency and device memory). The pick is the one with the lowest
median at the longest bench frames among those that reach the target; it is called faster
than the runner-up only where a record timed both in the same rounds and the ratio's 95%
interval excludes 1 -- otherwise the two are named as indistinguishable in speed, and the one
with the higher quality (then the smaller memory) comes first. `eager fp32` computes the fp32
reference again: it is labelled as the reference (its PSNR against itself is rounding) and
never named the highest quality. Percentiles hold steady calls; a new length's first call,
timed apart, gets its own line where it costs more. TensorRT plans, which no
machine here can run, are listed for the RTX-class GPU they are built for by their simulated
quality and plan size, their speed "not measured".
"""

from __future__ import annotations

from vae_engines.report.records import TorchRecords, VariantRecords

REFERENCE_ENGINE = "eager fp32"  # the fp32 model itself: the reference every engine's quality is measured against
FIRST_CALL_NOTE = 1.25  # a first call at a new length gets its own line above this times the steady median


def candidates(torch: TorchRecords, frames: int) -> list[dict]:
    """Each engine timed at `frames` (batch 1) with its quality and memory, fastest first."""
    short = min((t["frames"] for t in torch.own_timings()), default=frames)
    rows = []
    for t in torch.own_timings():
        if t["frames"] != frames or t["batch"] != 1:
            continue
        name = t["series"]
        small = next((s for s in torch.own_timings() if s["series"] == name and s["frames"] == short
                      and s["batch"] == 1), None)
        rows.append({"engine": name, "timing": t, "short": small, "quality_db": torch.quality(name),
                     "memory_gib": torch.memory_gib(name), "executed": torch.described(name).get("executed", "")})
    return sorted(rows, key=lambda r: r["timing"]["median_ms"])


def _ms(t: dict) -> str:
    return f"{t['median_ms']:.1f} ms ({t['p10_ms']:.1f}-{t['p90_ms']:.1f})"


def _speed_verdict(torch: TorchRecords, pick: dict, other: dict, frames: int) -> tuple[str, bool]:
    """(how `pick` compares with `other` in speed, whether it is measurably faster)."""
    ratio = torch.ratio(pick["engine"], other["engine"], frames)
    if ratio is None:
        return f"not timed in the same rounds as `{other['engine']}`, so not called faster", False
    interval = f"{ratio['median_ratio']:.2f}x [{ratio['ci95'][0]:.2f}-{ratio['ci95'][1]:.2f}]"
    if ratio["verdict"] == "faster":
        return f"{interval} faster than `{other['engine']}` (same rounds)", True
    return f"no measurable difference from `{other['engine']}` ({interval}, same rounds)", False


def _quality(r: dict) -> str:
    if r["engine"] == REFERENCE_ENGINE:
        return "the reference"
    return "n/a" if r["quality_db"] is None else f"{r['quality_db']:.1f} dB"


def _first_call(r: dict, frames: int) -> list[str]:
    """The first call at a new length, on its own line where it costs more than the steady calls."""
    first, t = r["timing"].get("first_call_ms"), r["timing"]
    if first is None or first <= FIRST_CALL_NOTE * t["median_ms"]:
        return []
    return [f"- A new length costs more at first: `{r['engine']}`'s first timed call at {frames} frames took "
            f"{first:.1f} ms against {t['median_ms']:.1f} ms once warm (kept out of the percentiles)."]


def _pick_lines(torch: TorchRecords, rows: list[dict], f: int, target_db: float) -> list[str]:
    """The engine to ship for the target, the runner-up, the best quality and the fastest."""
    meeting = [r for r in rows if r["quality_db"] is not None and r["quality_db"] >= target_db]
    out = []
    if not meeting:
        best = max(rows, key=lambda r: r["quality_db"] or 0)
        out.append(f"- **No engine here reaches {target_db:.0f} dB** held-out peak PSNR vs fp32; the closest is "
                   f"`{best['engine']}` at {best['quality_db']:.1f} dB. Lower `report.quality_target_db` or keep "
                   "more layers in float.")
    else:
        pick, rivals = meeting[0], meeting[1:]
        line = (f"- **For >= {target_db:.0f} dB held-out: `{pick['engine']}`**: {f} frames in {_ms(pick['timing'])}, "
                f"{_quality(pick)}, {pick['memory_gib'] if pick['memory_gib'] is not None else 'n/a'} GiB device memory")
        if rivals:
            verdict, faster = _speed_verdict(torch, pick, rivals[0], f)
            line += f"; {verdict}"
            if not faster:
                better = max([pick, rivals[0]], key=lambda r: (r["quality_db"], -(r["memory_gib"] or 0)))
                line += f"; of the two, `{better['engine']}` has the higher quality"
        out.append(line + ".")
        out += _first_call(pick, f)
        ranked = [r for r in meeting if r["engine"] != REFERENCE_ENGINE]  # the reference is not a contender
        top = max(ranked, key=lambda r: r["quality_db"], default=None)
        if top is not None and top is not pick:
            out.append(f"- Highest quality here: `{top['engine']}`, {top['quality_db']:.1f} dB, {_ms(top['timing'])}.")
    fastest = rows[0]
    if fastest["quality_db"] is not None and fastest["quality_db"] < target_db:
        out.append(f"- Fastest, below the target: `{fastest['engine']}` {_ms(fastest['timing'])} at "
                   f"{fastest['quality_db']:.1f} dB.")
    return out


def _table_lines(torch: TorchRecords, rows: list[dict], f: int, target_db: float) -> list[str]:
    out = ["", f"| engine | {f} frames | {min(t['frames'] for t in torch.own_timings())} frames | device "
           "memory (GiB) | held-out PSNR vs fp32 (dB) | target | executed |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        reference = r["engine"] == REFERENCE_ENGINE
        reached = "n/a" if r["quality_db"] is None else ("yes" if r["quality_db"] >= target_db else "no")
        quality = "n/a" if r["quality_db"] is None else format(r["quality_db"], ".1f")
        out.append(f"| `{r['engine']}`{' (the reference)' if reference else ''} | {_ms(r['timing'])} | "
                   f"{_ms(r['short']) if r['short'] else 'n/a'} | "
                   f"{r['memory_gib'] if r['memory_gib'] is not None else 'n/a'} | "
                   f"{f'reference ({quality}: itself)' if reference else quality} | "
                   f"{'reference' if reference else reached} | {r['executed']} |")
    device = torch.device()
    return out + ["", f"Median (10th-90th percentile) per decode at batch 1 after each length's warm-up calls, "
                  f"{device.get('torch', 'torch')}; quality: each engine's decode of the held-out latents against "
                  f"the fp32 reference, which `{REFERENCE_ENGINE}` computes again (its figure is rounding, not a "
                  "rank).", ""]


def ship_lines(variants: list[VariantRecords], torch: TorchRecords, frames: tuple[int, ...],
               target_db: float) -> list[str]:
    f = max(frames)
    rows = candidates(torch, f)
    device = torch.device()
    out = [f"## Ship this on {device.get('name') or device.get('device') or 'this machine'}", ""]
    if not rows:
        out.append("- No PyTorch engine was timed here (bench.runtimes has no `torch`); see the plans below.")
    else:
        out += _pick_lines(torch, rows, f, target_db) + _table_lines(torch, rows, f, target_db)
    out += plan_lines(variants, target_db)
    return out + [""]


def plan_lines(variants: list[VariantRecords], target_db: float) -> list[str]:
    """The TensorRT plans: the smallest INT8 plan reaching the target by simulated quality,
    else the smallest FP8 one (which only GPUs of compute capability 8.9+ run, where an INT8
    plan runs on every GPU the backend serves), else fp16."""
    int8 = [v for v in variants if v.is_int8 and v.psnr("fp32") is not None]
    fp16 = next((v for v in variants if not v.is_int8), None)
    if not int8 or fp16 is None:
        return []
    backend = f"{fp16.plan['backend']} {fp16.plan['backend_version']}"
    status = fp16.bench.get("tensorrt", "not measured")
    meeting = sorted([v for v in int8 if v.psnr("fp32") >= target_db],
                     key=lambda v: (v.format != "int8", v.plan["plan_bytes"]))
    if meeting:
        v = meeting[0]
        fp8 = ", float8: GPUs of compute capability 8.9+ only" if v.format == "fp8" else ""
        pick = (f"the smallest {v.format.upper()} plan reaching the target is `{v.name}` ({v.format}{fp8}; "
                f"{v.psnr('fp32'):.1f} dB held-out, its Q/DQ graph; {v.plan['plan_bytes'] / 1e6:.1f} MB against "
                f"fp16's {fp16.plan['plan_bytes'] / 1e6:.1f} MB)")
    else:
        best = max(int8, key=lambda v: v.psnr("fp32"))
        pick = f"no quantized plan reaches it (best `{best.name}`, {best.psnr('fp32'):.1f} dB): ship the fp16 plan"
    return [f"- **TensorRT plans** ({backend}, for the GPU they target): {pick}. Their speed: {status}."]
