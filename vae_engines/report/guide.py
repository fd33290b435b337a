"""The decision guide: which variant to ship, written only from the measured records.

Quality decides where speed could not be measured or shows no difference; a speed winner
is named only where its ratio's 95% interval excludes 1 (bench.paired_ratio), and a
runtime that does not execute int8 (ONNX Runtime's CPU provider) is never read as
TensorRT's speed.
"""

from __future__ import annotations

from vae_engines.report.records import VariantRecords

QUALITY_RISK_DB = 30.0  # peak PSNR vs fp16 below this: listen before shipping
RERUN = "dvc repro --force --glob 'bench*'"


def _speed_lines(int8: list[VariantRecords], kind: str, frames: tuple[int, ...]) -> list[str]:
    lines = []
    for f, what in ((max(frames), "long / batch windows"), (min(frames), "short streaming windows")):
        rows = []
        for v in int8:
            r = next((r for r in v.ratios("fp16 (", kind) if r["frames"] == f and r["batch"] == 1), None)
            if r:
                rows.append((v, r))
        if not rows:
            continue
        faster = sorted([(v, r) for v, r in rows if r["verdict"] == "faster"], key=lambda vr: -vr[1]["median_ratio"])
        if faster:
            v, r = faster[0]
            others = ", ".join(f"`{w.name}`" for w, _ in faster[1:])
            lines.append(f"- **{what.capitalize()}** ({f} frames, {kind}): `{v.name}` is faster than fp16, "
                         f"{r['median_ratio']:.2f}x (95% interval {r['ci95'][0]:.2f}-{r['ci95'][1]:.2f}, "
                         f"{r['rounds']} rounds)" + (f"; also faster: {others}" if others else "") + ".")
        else:
            spread = ", ".join(f"`{v.name}` {r['median_ratio']:.2f}x [{r['ci95'][0]:.2f}-{r['ci95'][1]:.2f}] "
                               f"{r['verdict']}" for v, r in rows)
            lines.append(f"- **{what.capitalize()}** ({f} frames, {kind}): no INT8 variant is measurably faster "
                         f"than fp16 here ({spread}).")
    return lines


def decision_guide(variants: list[VariantRecords], frames: tuple[int, ...]) -> list[str]:
    int8 = [v for v in variants if v.is_int8]
    if not int8:
        return ["No INT8 variant is declared in params.yaml; fp16 is the only engine."]
    lines = []
    by_quality = sorted(int8, key=lambda v: -(v.psnr("fp16") or 0))
    best = by_quality[0]
    runner_up = by_quality[1] if len(by_quality) > 1 else None
    lines.append(f"- **Highest quality INT8**: `{best.name}`, {best.psnr('fp16'):.1f} dB peak PSNR vs fp16 "
                 f"({best.psnr('fp32'):.1f} dB vs fp32, SNR {best.psnr('fp32', key='snr_db'):.1f} dB)"
                 + (f"; next `{runner_up.name}` at {runner_up.psnr('fp16'):.1f} dB." if runner_up else "."))
    risky = [v.name for v in int8 if (v.psnr("fp16") or 0) < QUALITY_RISK_DB]
    if risky:
        lines.append(f"- **Quality risk**: {', '.join(f'`{n}`' for n in risky)} below {QUALITY_RISK_DB:.0f} dB vs "
                     "fp16; listen to their difference clips before shipping.")
    kinds = sorted({r["subject"].rsplit("(", 1)[1].rstrip(")") for v in int8 for r in v.bench.get("ratios", [])})
    trt_kinds = [k for k in kinds if k.startswith("tensorrt")]
    for kind in trt_kinds:
        lines += _speed_lines(int8, kind, frames)
    if not trt_kinds:
        status = int8[0].bench.get("tensorrt", "not measured")
        lines.append(f"- **TensorRT speed**: {status}. Choose on quality here, then measure on the target GPU "
                     f"(an RTX-class GPU for TensorRT-RTX): `{RERUN}` re-times every variant there.")
    if "onnxruntime" in kinds:
        lines += [line.replace(" (", " (CPU, ", 1) for line in _speed_lines(int8, "onnxruntime", frames)]
        lines.append("- ONNX Runtime's CPU provider runs these Q/DQ graphs as dequantize + float convolution: its "
                     "ratios show what the Q/DQ graph costs on a CPU, not int8 speed.")
    lines.append("- Per-call cost at short windows matters as much as the long-window figure for streaming: the "
                 "reference project's INT8 gain shrank to ~1.7% end to end in its streaming loop (README, "
                 "[Reference figures](../README.md#reference-figures)).")
    return lines
