"""reports/report.md: the table, plots and a decision guide, written from measured JSON only.

Every number in the report is read from a quality.json, bench.json or plan metadata file
produced by a stage; where a figure could not be measured the report says so and why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vae_engines.core.fileio import atomic_path, read_json

PSNR_SHIP = 30.0  # dB vs fp16: below this, a variant is flagged as a quality risk


def _fmt(value: Any, digits: int = 1, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:.{digits}f}{suffix}"


def load_variant(reports: Path, name: str, recipe: Any) -> dict:
    """A variant's metrics merged with the provenance files written beside them."""
    quality = {**read_json(reports / name / "quality.json"), **read_json(reports / name / "quality.provenance.json")}
    bench = {**read_json(reports / name / "bench.json"), **read_json(reports / name / "bench.provenance.json")}
    return {"name": name, "recipe": recipe, "quality": quality, "bench": bench, "plan": bench["engine"]}


def _kept(v: dict) -> str:
    if v["recipe"] is None:
        return "all (fp16)"
    kept = v["quality"].get("kept_in_float", [])
    return ", ".join(f"`{k}`" for k in kept) if kept else "none"


def _plots(variants: list[dict], plots_dir: Path, sensitivity: dict | None = None) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    with atomic_path(plots_dir, is_dir=True) as tmp:
        fig, ax = plt.subplots(figsize=(7, 4))
        fp32_done = False
        for v in variants:
            lat = v["bench"]["latency"]
            for runtime in [v["name"]] + ([] if fp32_done else ["fp32"]):
                points = sorted((int(k.split("_f")[1]), s["median_ms"]) for k, s in lat.get(runtime, {}).items()
                                if k.startswith("b1_"))
                if points:
                    ax.plot(*zip(*points), marker="o", label=f"{runtime} ({v['bench']['runtimes'][runtime]['runtime']})")
            fp32_done = True
        ax.set_xlabel("latent frames (25 per second)")
        ax.set_ylabel("median latency, batch 1 (ms)")
        ax.set_title("Decode latency (CPU, ONNX Runtime; TensorRT not measured here)")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(tmp / "latency.png", dpi=110)
        plt.close(fig)
        names.append("latency.png")

        fig, ax = plt.subplots(figsize=(7, 3.5))
        labels = [v["name"] for v in variants]
        fp32 = [v["quality"]["heldout"]["vs_fp32"]["peak_psnr_db"] for v in variants]
        fp16 = [v["quality"]["heldout"].get("vs_fp16", {}).get("peak_psnr_db", 0) for v in variants]
        xs = range(len(labels))
        ax.bar([x - 0.2 for x in xs], fp32, width=0.4, label="vs fp32")
        ax.bar([x + 0.2 for x in xs], fp16, width=0.4, label="vs fp16")
        ax.set_xticks(list(xs), labels, rotation=20, fontsize=8)
        ax.set_ylabel("peak PSNR, held-out latents (dB)")
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        fig.savefig(tmp / "psnr.png", dpi=110)
        plt.close(fig)
        names.append("psnr.png")

        if sensitivity:
            layers = list(sensitivity["layers"])  # network order
            fig, ax = plt.subplots(figsize=(8, 3.8))
            ax.bar(range(len(layers)), [sensitivity["layers"][n]["peak_psnr_db"] for n in layers])
            ax.set_xticks(range(len(layers)), layers, rotation=90, fontsize=6)
            ax.set_ylabel("peak PSNR vs fp32 (dB)")
            ax.set_title(f"Each layer alone in INT8 ({sensitivity['calibrator']}), network order: lower = more sensitive",
                         fontsize=9)
            ax.grid(axis="y", alpha=0.3)
            fig.tight_layout()
            fig.savefig(tmp / "sensitivity.png", dpi=110)
            plt.close(fig)
            names.append("sensitivity.png")
    return names


def decision_guide(variants: list[dict], frames: tuple[int, ...]) -> list[str]:
    int8 = [v for v in variants if v["recipe"] is not None]
    lines = []
    if not int8:
        return ["No INT8 variant is declared in params.yaml; fp16 is the only engine."]
    lo, hi = f"b1_f{min(frames)}", f"b1_f{max(frames)}"

    def psnr16(v: dict) -> float:
        return v["quality"]["heldout"]["vs_fp16"]["peak_psnr_db"]

    def speed(v: dict, point: str) -> float:
        return v["bench"]["speedup_vs_fp16"].get(point, 0.0)

    good = [v for v in int8 if psnr16(v) >= PSNR_SHIP] or int8
    best_q = max(int8, key=psnr16)
    best_batch = max(good, key=lambda v: (speed(v, hi), psnr16(v)))
    best_stream = max(good, key=lambda v: (speed(v, lo), psnr16(v)))
    runtime = best_batch["bench"]["runtimes"][best_batch["name"]]["runtime"]
    lines.append(f"- **Highest quality INT8**: `{best_q['name']}` at {psnr16(best_q):.1f} dB peak PSNR vs fp16 "
                 f"({best_q['quality']['heldout']['vs_fp32']['peak_psnr_db']:.1f} dB vs fp32).")
    lines.append(f"- **Long / batch decode** (largest measured window, {max(frames)} frames): `{best_batch['name']}`, "
                 f"{speed(best_batch, hi):.2f}x fp16 and {best_batch['bench']['speedup_vs_fp32'].get(hi, 0):.2f}x "
                 f"fp32 on {runtime}, {psnr16(best_batch):.1f} dB vs fp16.")
    lines.append(f"- **Short streaming windows** ({min(frames)} frames): `{best_stream['name']}`, "
                 f"{speed(best_stream, lo):.2f}x fp16 at that size; per-call overhead matters as much as the "
                 "long-window figure (the reference project's INT8 gain shrank to ~1.7% end to end in streaming).")
    below = [v["name"] for v in int8 if psnr16(v) < PSNR_SHIP]
    if below:
        lines.append(f"- **Quality risk**: {', '.join(f'`{b}`' for b in below)} fall below {PSNR_SHIP:.0f} dB vs "
                     "fp16; listen to their difference clips before shipping.")
    if runtime == "onnxruntime":
        lines.append("- These speed figures are ONNX Runtime on the CPU, where Q/DQ convolutions placed for "
                     "TensorRT run as dequantize + float convolution: they show the cost of the Q/DQ graph, not "
                     "TensorRT's int8 speed. The TensorRT engines were built but **not measured** on this machine; "
                     "run `dvc repro` on an RTX-class GPU to measure them before choosing on speed.")
    return lines


def render(variants: list[dict], env: dict, frames: tuple[int, ...], plots: list[str], backend: str,
           sensitivity: dict | None = None) -> str:
    points = [f"b1_f{f}" for f in frames]
    model = variants[0]["quality"]["provenance"]["model"] if variants else "unknown"
    out = ["# VAE decoder engines: which variant to ship", "",
           f"Model: **{model}**. Generated by `dvc repro` (stage `report`) from the measured JSON under "
           f"reports/variants/ (engines in engines/{backend}/); do not edit by hand.", ""]
    if "random weights" in model:
        out += ["> The model has random weights: its quality figures show how quantization treats this "
                "architecture, not how real ACE-Step weights fare. Point model.checkpoint at a real checkpoint for "
                "figures that matter.", ""]
    head = ["variant", "precision", "calibrator", "kept in float", "PSNR vs fp32 (dB)", "PSNR vs fp16 (dB)",
            "SI-SDR vs fp32 (dB)", "round-trip PSNR vs audio (dB)"]
    head += [f"{p.split('_f')[1]} fr (ms)" for p in points] + [f"x fp32 @{frames[-1]}", f"x fp16 @{frames[-1]}",
                                                               "plan (MB)", "runtime"]
    out += ["## Variants", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for v in variants:
        q, b, recipe = v["quality"], v["bench"], v["recipe"]
        lat = b["latency"][v["name"]]
        rt = q.get("roundtrip", {}).get("vs_audio", {}).get("peak_psnr_db")
        row = [f"`{v['name']}`", "fp16" if recipe is None else "int8",
               "-" if recipe is None else recipe.calibrator + (f" {recipe.percentile}" if recipe.percentile else ""),
               v["kept"], _fmt(q["heldout"]["vs_fp32"]["peak_psnr_db"]),
               _fmt(q["heldout"].get("vs_fp16", {}).get("peak_psnr_db")),
               _fmt(q["heldout"]["vs_fp32"]["si_sdr_db"]), _fmt(rt)]
        row += [_fmt(lat.get(p, {}).get("median_ms"), 0) for p in points]
        row += [_fmt(b["speedup_vs_fp32"].get(points[-1]), 2), _fmt(b["speedup_vs_fp16"].get(points[-1]), 2)
                if v["name"] != "fp16" else "1.00", _fmt(v["plan"]["plan_bytes"] / 1e6, 1),
                b["runtimes"][v["name"]]["runtime"]]
        out.append("| " + " | ".join(row) + " |")
    fp32_ms = variants[0]["bench"]["latency"]["fp32"] if variants else {}
    out += ["", "fp32 ONNX Runtime reference, same runs: " + ", ".join(
        f"{p.split('_f')[1]} frames {fp32_ms[p]['median_ms']:.0f} ms" for p in points if p in fp32_ms) + ".", ""]
    out += ["## Decision guide", ""] + decision_guide(variants, frames) + [""]
    tensorrt = sorted({v["bench"]["tensorrt"] for v in variants})
    out += ["## TensorRT engines", "",
            "| variant | backend | target | build (s) | plan (MB) | layers |", "|---|---|---|---|---|---|"]
    for v in variants:
        p = v["plan"]
        out.append(f"| `{v['name']}` | {p['backend']} {p['backend_version']} | {p['target']} | {p['build_seconds']} | "
                   f"{p['plan_bytes'] / 1e6:.1f} | {p['num_layers']} |")
    out += ["", "TensorRT latency and device memory: " + "; ".join(tensorrt) + ".", ""]
    out += ["## Streaming", "", "| variant | window (frames) | calls | per call (ms) | real-time factor |",
            "|---|---|---|---|---|"]
    for v in variants:
        for name, s in v["bench"]["streaming"].items():
            if name == v["name"] or (name == "fp32" and v is variants[0]):
                out.append(f"| `{name}` | {s['window_frames']} (+{s['overlap_frames']} overlap) | {s['calls']} | "
                           f"{s['per_call_median_ms']:.0f} | {s['real_time_factor']:.3f} |")
    out += ["", "## Plots", ""] + [f"![{p}](plots/{p})" for p in plots] + [""]
    out += ["## Listen", ""] + [f"- `{n}`: [reference](variants/{n}/clips/reference_fp32.wav), "
                                f"[variant](variants/{n}/clips/{n}.wav), "
                                f"[difference x10](variants/{n}/clips/difference_x10.wav)"
                                for n in (v["name"] for v in variants)] + [""]
    versions = env.get("versions", {})
    out += ["## Provenance", "",
            f"- Device: {env.get('cpu')} ({env.get('cpu_count')} cores), GPU: {env.get('gpu')}",
            "- Versions: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items()) if v),
            "- Quality runtime per variant: " + ", ".join(
                f"{v['name']}: {v['quality']['runtime']['runtime']}" for v in variants),
            "- Params hash per variant (quality / bench): " + ", ".join(
                f"{v['name']}: {v['quality']['provenance']['params_hash']} / {v['bench']['provenance']['params_hash']}"
                for v in variants),
            "- PSNR is peak-normalised, 20*log10(max|ref| / RMSE), as the reference project defined it; "
            "held-out latents use another seed than calibration.", ""]
    return "\n".join(out)


def write_report(reports: str | Path, env_json: str | Path, params: Any, out_md: str | Path,
                 plots_dir: str | Path, sensitivity_json: str | Path | None = None) -> Path:
    """Render report.md and its plots from reports/<variant>/{quality,bench}.json."""
    reports = Path(reports)
    variants = []
    for name in params.variant_names():
        v = load_variant(reports, name, params.int8.get(name))
        v["kept"] = _kept(v)
        variants.append(v)
    sensitivity = read_json(sensitivity_json) if sensitivity_json else None
    plots = _plots(variants, Path(plots_dir), sensitivity)
    text = render(variants, read_json(env_json), params.bench.frames, plots, params.build.backend, sensitivity)
    with atomic_path(out_md) as tmp:
        tmp.write_text(text)
    return Path(out_md)
