"""The decision guide: which engine to ship, written only from the measured records.

Quality ranks the INT8 variants. What INT8 buys is said per backend, from what the plan's
record says that backend does with it (trt.build.int8_execution) and the measured plan
sizes. A speed winner is named only where its ratio's 95% interval excludes 1
(measure.timing.paired_ratio); a runtime that does not execute int8 (ONNX Runtime's CPU
provider) is never read as TensorRT's speed; every engine that ran on this machine is
ranked on this machine.
"""

from __future__ import annotations

from vae_engines.report.engines import int8_engines
from vae_engines.report.records import TorchRecords, VariantRecords

QUALITY_RISK_DB = 30.0  # peak PSNR vs fp16 below this: listen before shipping
RERUN = "dvc repro --force --glob 'bench*'"


def _interval(r: dict) -> str:
    return f"{r['median_ratio']:.2f}x [{r['ci95'][0]:.2f}-{r['ci95'][1]:.2f}]"


def _speed_lines(int8: list[VariantRecords], kind: str, frames: tuple[int, ...]) -> list[str]:
    lines = []
    for f, what in ((max(frames), "long / batch windows"), (min(frames), "short streaming windows")):
        rows = [(v, r) for v in int8 for r in v.ratios("fp16 (", kind) if r["frames"] == f and r["batch"] == 1]
        if not rows:
            continue
        faster = sorted([(v, r) for v, r in rows if r["verdict"] == "faster"], key=lambda vr: -vr[1]["median_ratio"])
        if faster:
            v, r = faster[0]
            others = ", ".join(f"`{w.name}`" for w, _ in faster[1:])
            lines.append(f"- **{what.capitalize()}** ({f} frames, {kind}): `{v.name}` is faster than fp16, "
                         f"{_interval(r)} over {r['rounds']} rounds" + (f"; also faster: {others}" if others else "")
                         + ".")
        else:
            spread = ", ".join(f"`{v.name}` {_interval(r)} {r['verdict']}" for v, r in rows)
            lines.append(f"- **{what.capitalize()}** ({f} frames, {kind}): no INT8 variant is measurably faster "
                         f"than fp16 here ({spread}).")
    return lines


def formats_label(variants: list[VariantRecords]) -> str:
    """INT8, FP8 or INT8 / FP8: the formats among quantized `variants`."""
    return " / ".join(f.upper() for f in sorted({v.format for v in variants if v.format}, key=("int8", "fp8").index))


def quality_lines(int8: list[VariantRecords]) -> list[str]:
    ranked = sorted(int8, key=lambda v: -(v.psnr("fp16") or 0))
    best, lines = ranked[0], []
    nxt = f"; next `{ranked[1].name}` at {ranked[1].psnr('fp16'):.1f} dB." if len(ranked) > 1 else "."
    lines.append(f"- **Highest quality {formats_label(int8)}**: `{best.name}`"
                 + (f" ({best.format})" if len({v.format for v in int8}) > 1 else "")
                 + f", {best.psnr('fp16'):.1f} dB peak PSNR vs fp16 "
                 f"({best.psnr('fp32'):.1f} dB vs fp32, SNR {best.psnr('fp32', key='snr_db'):.1f} dB){nxt}")
    spectral = [v for v in int8 if v.psnr("fp32", key="mr_stft") is not None]
    closest = min(spectral, key=lambda v: v.psnr("fp32", key="mr_stft"), default=None)
    if closest is not None and closest is not best and best.psnr("fp32", key="mr_stft") is not None:
        lines.append(f"- **Closest in spectrum**: `{closest.name}`, MR-STFT {closest.psnr('fp32', key='mr_stft'):.3f} "
                     f"against `{best.name}`'s {best.psnr('fp32', key='mr_stft'):.3f} vs fp32 (SI-SDR "
                     f"{closest.psnr('fp32', key='si_sdr_db'):.1f} against "
                     f"{best.psnr('fp32', key='si_sdr_db'):.1f} dB): peak PSNR weighs the loud samples, these the "
                     "quiet ones too; listen to both.")
    risky = [v.name for v in int8 if (v.psnr("fp16") or 0) < QUALITY_RISK_DB]
    if risky:
        lines.append(f"- **Quality risk**: {', '.join(f'`{n}`' for n in risky)} below {QUALITY_RISK_DB:.0f} dB vs "
                     "fp16; listen to their difference clips before shipping.")
    return lines


def int8_buys(variants: list[VariantRecords]) -> list[str]:
    """What INT8 (and FP8) buys with the backend that built the plans, from the plans' own records."""
    fp16 = next((v for v in variants if v.name == "fp16"), None)
    if fp16 is None:
        return []
    lines = []
    for fmt in ("int8", "fp8"):
        plans = [v for v in variants if v.format == fmt]
        if not plans:
            continue
        backend = f"{plans[0].plan['backend']} {plans[0].plan['backend_version']}"
        sizes = sorted(v.plan["plan_bytes"] / fp16.plan["plan_bytes"] for v in plans)
        share = f"{sizes[0]:.0%}" if f"{sizes[0]:.0%}" == f"{sizes[-1]:.0%}" else f"{sizes[0]:.0%}-{sizes[-1]:.0%}"
        memory = plans[0].bench.get("memory", {}).get("engine_device_memory_bytes")
        lines.append(f"- **What {fmt.upper()} buys with {backend}**: {plans[0].plan.get('int8_execution', 'unknown')}. "
                     f"Measured here: {fmt.upper()} plans are {share} of the fp16 plan's "
                     f"{fp16.plan['plan_bytes'] / 1e6:.1f} MB; device memory "
                     + (f"{memory / 2**20:.0f} MiB." if memory
                        else f"{plans[0].bench.get('tensorrt', 'not measured')}."))
        if fmt == "int8" and plans[0].plan["backend"] == "tensorrt_rtx":
            lines.append("- INT8 activations only speed up on full TensorRT (10.x implicit, or explicit Q/DQ placed "
                         "so TensorRT can fuse it: the `fused` placement); ship TensorRT-RTX INT8 for size, not speed.")
    return lines


def torch_lines(torch: TorchRecords, frames: tuple[int, ...]) -> list[str]:
    """Every PyTorch engine that ran here, ranked at the longest bench frames."""
    f = max(frames)
    rows = sorted([t for t in torch.own_timings() if t["frames"] == f and t["batch"] == 1],
                  key=lambda t: t["median_ms"])
    if not rows:
        return []
    device = torch.device()
    where = device.get("name", device.get("device", "this machine"))

    def quality(name: str) -> str:
        db = torch.quality(name)
        return "" if db is None else f" ({db:.1f} dB)"
    ranking = ", ".join(f"`{t['series']}` {t['median_ms']:.1f} ms{quality(t['series'])}" for t in rows)
    lines = [f"- **PyTorch engines on {where}** ({f} frames, median per decode, peak PSNR vs fp32 held-out): "
             f"{ranking}."]
    if len(rows) > 1:
        a, b = rows[0]["series"], rows[1]["series"]
        ratio = torch.ratio(a, b, f)
        if ratio is None:
            lines.append(f"- Fastest median: `{a}`; `{b}` was not timed in the same rounds, so no winner is named.")
        else:
            lines.append(f"- Fastest: `{a}`, " + (f"faster than `{b}` ({_interval(ratio)})"
                                                   if ratio["verdict"] == "faster" else
                                                   f"no measurable difference from `{b}` ({_interval(ratio)})") + ".")
    return lines


def int8_engine_lines(variants: list[VariantRecords], torch: TorchRecords) -> list[str]:
    """What INT8 buys on the GPU the pipeline ran on: the INT8 engines (report.engines) against
    the compiled fp16 engine timed in the same rounds, a winner only where the interval excludes 1."""
    rows = [r for r in int8_engines(variants, torch) if r["ratio"] is not None]
    if not rows:
        return []
    device = torch.device().get("name", "this GPU")
    best = max(rows, key=lambda r: r["ratio"]["median_ratio"])
    r = best["ratio"]
    what, cores = ("FP8", "float8 tensor cores") if best["format"] == "fp8" else ("INT8", "int8 tensor cores")
    quality = f"{best['engine_db']:.1f} dB vs fp32" if best["engine_db"] is not None else "quality n/a"
    if r["verdict"] == "faster":
        return [f"- **What {what} buys with the fused kernels on {device}** ({cores}, measured): "
                f"`{best['engine']}` decodes {best['frames']} frames {_interval(r)} faster than `{r['reference']}` "
                f"({quality}; its Q/DQ graph: "
                f"{best['simulated_db'] if best['simulated_db'] is None else round(best['simulated_db'], 1)} dB)."]
    return [f"- **What INT8 buys with the fused kernels on {device}**: nothing measurable at {best['frames']} frames: "
            f"the best INT8 engine `{best['engine']}` against `{r['reference']}` {_interval(r)} ({r['verdict']}). "
            "Per layer on the lent H200 (benchmarks/results/gpu_kernels/run2), int8 made the k=7 convolutions "
            "0.7-0.9x of fp16's time and the epilogue-bound k=1 and ConvTranspose layers no faster."]


def decision_guide(variants: list[VariantRecords], frames: tuple[int, ...], torch: TorchRecords) -> list[str]:
    int8 = [v for v in variants if v.is_int8]
    lines = quality_lines(int8) if int8 else ["- No INT8 variant is declared in params.yaml; fp16 is the only plan."]
    lines += int8_buys(variants)
    kinds = sorted({r["subject"].rsplit("(", 1)[1].rstrip(")") for v in int8 for r in v.bench.get("ratios", [])})
    trt_kinds = [k for k in kinds if k.startswith("tensorrt")]
    for kind in trt_kinds:
        lines += _speed_lines(int8, kind, frames)
    if not trt_kinds and variants:
        status = variants[0].bench.get("tensorrt", "not measured")
        lines.append(f"- **TensorRT speed**: {status}. Choose on quality here, then measure on the target GPU "
                     f"(an RTX-class GPU for TensorRT-RTX): `{RERUN}` re-times every variant there.")
    if "onnxruntime" in kinds:
        lines += [line.replace(" (", " (CPU, ", 1) for line in _speed_lines(int8, "onnxruntime", frames)]
        lines.append("- ONNX Runtime's CPU provider runs these Q/DQ graphs as dequantize + float convolution: its "
                     "ratios show what the Q/DQ graph costs on a CPU, not int8 speed.")
    lines += torch_lines(torch, frames)
    lines += int8_engine_lines(variants, torch)
    lines.append("- Per-call cost at short windows matters as much as the long-window figure for streaming: the "
                 "reference project's INT8 gain shrank to ~1.7% end to end in its streaming loop (README, "
                 "[Reference figures](../README.md#reference-figures)).")
    return lines
