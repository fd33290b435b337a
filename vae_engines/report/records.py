"""The measured records the report is written from, read once and kept apart.

Each variant has three documents: quality.json (the DVC metrics), quality.provenance.json
(what made them) and bench.json (timings, ratios, the engine's build record, provenance).
They are held side by side in a `VariantRecords`, never merged into one dictionary.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vae_engines.core.fileio import read_json


@dataclass
class VariantRecords:
    name: str
    recipe: Any  # core.params.Int8Variant, or None for fp16
    quality: dict
    quality_provenance: dict
    bench: dict
    plan: dict  # the engine's build record, as bench.json carries it

    @property
    def is_int8(self) -> bool:
        return self.recipe is not None

    def psnr(self, reference: str, set_name: str = "heldout", key: str = "peak_psnr_db") -> float | None:
        return self.quality.get(set_name, {}).get(f"vs_{reference}", {}).get(key)

    def ratios(self, reference_prefix: str, runtime_kind: str | None = None) -> list[dict]:
        """This variant's ratios against the reference series starting with `reference_prefix`
        (e.g. "fp16 (" ), optionally only for one runtime kind."""
        rows = [r for r in self.bench.get("ratios", []) if r["reference"].startswith(reference_prefix)
                and r["subject"].startswith(f"{self.name} (")]
        if runtime_kind:
            rows = [r for r in rows if r["subject"].endswith(f"({runtime_kind})")]
        return rows

    def timing(self, series: str, frames: int, batch: int = 1) -> dict | None:
        return next((t for t in self.bench.get("timings", []) if t["series"] == series and t["frames"] == frames
                     and t["batch"] == batch), None)


def load_variants(reports: Path, params: Any) -> list[VariantRecords]:
    out = []
    for name in params.variant_names():
        folder = reports / name
        bench = read_json(folder / "bench.json")
        out.append(VariantRecords(name, params.int8.get(name), read_json(folder / "quality.json"),
                                  read_json(folder / "quality.provenance.json"), bench, bench["engine"]))
    return out
