"""The measured records the report is written from, read once and kept apart.

Each variant has three documents: quality.json (the DVC metrics), quality.provenance.json
(what made them: runtime, the recipe its graph recorded) and bench.json (timings, ratios,
the engine's build record, provenance). They are held side by side in a `VariantRecords`,
never merged into one dictionary; labels (calibrator, placement, kept layers) come from
these records, which the variant's own stages wrote. The PyTorch engines have bench_torch's
record (eager references and the compiled precision engines, timed in one run) and one
record per INT8 engine (bench_int8: that engine beside the compiled fp16 engine in the same
rounds; a record kept from an earlier run of the stage where neither engine changed), held
apart in `TorchRecords`: a figure is read from the record that measured it,
and a ratio only from a record that timed both engines in the same rounds.
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
        """A quantized variant (int8 or fp8: every variant of params `int8`)."""
        return self.name != "fp16"

    @property
    def format(self) -> str | None:
        """int8 or fp8 for a quantized variant (from its graph's precision, `fp8+fp16`; records from
        before FP8 say int8), None for fp16."""
        if not self.is_int8:
            return None
        return "fp8" if str(self.label("precision") or "").startswith("fp8") else "int8"

    def label(self, key: str) -> str | None:
        """What the variant's graph recorded (calibrator, placement, quantization, ...)."""
        return self.quality_provenance.get(key)

    @property
    def input_range(self) -> float | None:
        """The calibrated max |x| of the latent, which the variant's engines guard
        (runtime.guard); None for fp16, or a record from before the guard."""
        return self.quality_provenance.get("input_range")

    def range_label(self) -> str:
        return range_label(self.input_range)

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


def range_label(input_range: float | None) -> str:
    """An INT8 row's calibrated latent range, in words."""
    return "latent range not recorded" if input_range is None else f"latent max abs <= {input_range:.3g}"


FP16_ENGINE = "compiled fp16"  # the engine every INT8 engine is timed against (measure.torch_engines)


def flip(ratio: dict) -> dict:
    """A ratio record seen from the other side (reference / subject)."""
    verdict = {"faster": "slower", "slower": "faster"}.get(ratio["verdict"], ratio["verdict"])
    return {**ratio, "subject": ratio["reference"], "reference": ratio["subject"], "median_ratio": 1 / ratio["median_ratio"],
            "ci95": [1 / ratio["ci95"][1], 1 / ratio["ci95"][0]], "verdict": verdict}


@dataclass
class TorchRecords:
    bench: dict | None  # bench_torch's record
    int8: list[dict]  # bench_int8's records, one per INT8 engine

    def _records(self) -> list[dict]:
        return [r for r in (self.bench, *self.int8) if r]

    def own_timings(self) -> list[dict]:
        """Every engine's timing rows from the record that measured it for itself: all of
        bench_torch's, and each INT8 record's rows of its own engine (not of the fp16 engine
        it was timed beside, which bench_torch measured)."""
        rows = list((self.bench or {}).get("timings", []))
        for record in self.int8:
            rows += [t for t in record.get("timings", []) if t["series"] == record.get("engine")]
        return rows

    def ratio(self, subject: str, reference: str, frames: int, batch: int = 1) -> dict | None:
        """subject against reference (> 1: subject faster), from a record that timed both in
        the same rounds; None where none did."""
        for record in self._records():
            for r in record.get("ratios", []):
                if r["frames"] != frames or r["batch"] != batch:
                    continue
                if (r["subject"], r["reference"]) == (subject, reference):
                    return r
                if (r["subject"], r["reference"]) == (reference, subject):
                    return flip(r)
        return None

    def _owner(self, name: str) -> dict:
        return next((r for r in self.int8 if r.get("engine") == name), self.bench or {})

    def quality(self, name: str) -> float | None:
        """Held-out peak PSNR vs fp32 of engine `name`."""
        return self._owner(name).get("quality", {}).get(name, {}).get("peak_psnr_db")

    def memory_gib(self, name: str) -> float | None:
        return self._owner(name).get("memory", {}).get("device_memory_gib", {}).get(name)

    def described(self, name: str) -> dict:
        return self._owner(name).get("runtimes", {}).get(name, {})

    def device(self) -> dict:
        return next((r["device"] for r in self._records() if r.get("device")), {})

    def sweeps(self) -> dict[str, dict]:
        """engine -> its length-sweep rows and flags, from every record; and the lengths."""
        out = {}
        for record in self._records():
            out.update((record.get("sweep") or {}).get("engines", {}))
        return out


def load_torch_records(bench_json: str | Path, int8_jsons: list[str | Path]) -> TorchRecords:
    return TorchRecords(read_json(bench_json), [read_json(p) for p in int8_jsons])


def load_variants(reports: Path, names: list[str]) -> list[VariantRecords]:
    out = []
    for name in names:
        folder = reports / name
        bench = read_json(folder / "bench.json")
        out.append(VariantRecords(name, read_json(folder / "quality.json"),
                                  read_json(folder / "quality.provenance.json"), bench, bench["engine"]))
    return out
