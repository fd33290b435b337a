"""The measured records the report is written from, read once and kept apart.

Each variant has three documents: quality.json (the DVC metrics), quality.provenance.json
(what made them: runtime, the recipe its graph recorded) and bench.json (timings, ratios,
the engine's build record, provenance). They are held side by side in a `VariantRecords`,
never merged into one dictionary; labels (calibrator, placement, kept layers) come from
these records, which the variant's own stages wrote. The PyTorch engines have one record
for all of them (bench_torch).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vae_engines.core.fileio import read_json


@dataclass
class VariantRecords:
    name: str
    quality: dict
    quality_provenance: dict
    bench: dict
    plan: dict  # the engine's build record, as bench.json carries it

    @property
    def is_int8(self) -> bool:
        return self.name != "fp16"

    def label(self, key: str) -> str | None:
        """What the variant's graph recorded (calibrator, placement, quantization, ...)."""
        return self.quality_provenance.get(key)

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


def load_variants(reports: Path, names: list[str]) -> list[VariantRecords]:
    out = []
    for name in names:
        folder = reports / name
        bench = read_json(folder / "bench.json")
        out.append(VariantRecords(name, read_json(folder / "quality.json"),
                                  read_json(folder / "quality.provenance.json"), bench, bench["engine"]))
    return out
