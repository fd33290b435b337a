"""The report's figures (PNG, matplotlib) and the rows `dvc plots show` draws.

- latency: one labelled line per series (variant and runtime), one panel per runtime
  kind, each point the median of its rounds with the 10th-90th percentile as a bar, on a
  log axis (eager fp32 is ~15x the compiled engines on a GPU: a linear axis squashes them);
- psnr: peak PSNR of every variant against fp32 and fp16;
- sensitivity: each layer alone in INT8, in network order, one labelled bar per layer.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402  (after use())
from matplotlib.ticker import FuncFormatter  # noqa: E402

from vae_engines.core.fileio import atomic_path
from vae_engines.report.records import TorchRecords, VariantRecords


def _kind(series: str) -> str:
    return series.rsplit("(", 1)[1].rstrip(")") if "(" in series else "torch"


def _log_tick(value: float, _: int) -> str:
    """A log axis's tick as a plain number (2000, not 2 x 10^3), labelled at 1, 2 and 5 of each decade."""
    if value <= 0:
        return ""
    return f"{value:g}" if round(value / 10 ** math.floor(math.log10(value))) in (1, 2, 5) else ""


def latency_rows(variants: list[VariantRecords], torch: TorchRecords) -> list[dict]:
    """Every variant's own series at batch 1 (the references timed beside each variant stay
    in that variant's bench.json), and every PyTorch engine's (each from its own record)."""
    timings = [(t, t["series"].startswith(f"{v.name} (")) for v in variants for t in v.bench.get("timings", [])]
    timings += [(t, True) for t in torch.own_timings()]
    return [{"series": t["series"], "runtime": _kind(t["series"]), "frames": t["frames"], "median_ms": t["median_ms"],
             "p10_ms": t["p10_ms"], "p90_ms": t["p90_ms"]} for t, own in timings if own and t["batch"] == 1]


def render_plots(variants: list[VariantRecords], torch: TorchRecords, sensitivity: dict | None,
                 plots_dir: Path) -> list[str]:
    names = []
    rows = latency_rows(variants, torch)
    kinds = sorted({r["runtime"] for r in rows})
    with atomic_path(plots_dir, is_dir=True) as tmp:
        if kinds:
            fig, axes = plt.subplots(1, len(kinds), figsize=(6.5 * len(kinds), 4.2), squeeze=False)
            for ax, kind in zip(axes[0], kinds):
                for series in sorted({r["series"] for r in rows if r["runtime"] == kind}):
                    pts = sorted((r["frames"], r["median_ms"], r["p10_ms"], r["p90_ms"]) for r in rows
                                 if r["series"] == series)
                    xs, med, lo, hi = zip(*pts)
                    ax.errorbar(xs, med, yerr=[[m - a for m, a in zip(med, lo)], [b - m for m, b in zip(med, hi)]],
                                marker="o", capsize=3, label=series)
                ax.set_title(f"{kind}: median per call, 10th-90th percentile bars", fontsize=10)
                ax.set_xlabel("latent frames (25 per second)")
                ax.set_yscale("log")
                for axis in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
                    axis(FuncFormatter(_log_tick))
                ax.set_ylabel("milliseconds, batch 1 (log scale)")
                ax.grid(alpha=0.3, which="both")
                ax.legend(fontsize=8)
            fig.tight_layout()
            fig.savefig(tmp / "latency.png", dpi=110)
            plt.close(fig)
            names.append("latency.png")

        fig, ax = plt.subplots(figsize=(7.5, 3.8))
        labels = [v.name for v in variants]
        xs = range(len(labels))
        ax.bar([x - 0.2 for x in xs], [v.psnr("fp32") or 0 for v in variants], width=0.4, label="vs fp32")
        ax.bar([x + 0.2 for x in xs], [v.psnr("fp16") or 0 for v in variants], width=0.4,
               label="vs fp16 (computed in fp16)")
        ax.set_xticks(list(xs), labels, rotation=20, fontsize=9)
        ax.set_ylabel("peak PSNR, held-out latents (dB)")
        ax.legend(fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        fig.savefig(tmp / "psnr.png", dpi=110)
        plt.close(fig)
        names.append("psnr.png")

        if sensitivity:
            layers = sensitivity["layers"]  # a list, in network order
            fig, ax = plt.subplots(figsize=(8, 0.22 * len(layers) + 1.2))
            ax.barh(range(len(layers)), [row["peak_psnr_db"] for row in layers], color="tab:blue")
            ax.set_yticks(range(len(layers)), [f"{row['index']:2d}  {row['layer']}" for row in layers], fontsize=8)
            ax.invert_yaxis()  # first layer on top
            ax.set_xlabel("peak PSNR vs fp32 with only this layer in INT8 (dB): lower = more sensitive")
            ax.set_title(f"Per-layer sensitivity ({sensitivity['calibrator']} ranges), network order, first layer "
                         "on top", fontsize=10)
            ax.grid(axis="x", alpha=0.3)
            fig.tight_layout()
            fig.savefig(tmp / "sensitivity.png", dpi=110)
            plt.close(fig)
            names.append("sensitivity.png")
    return names
