"""What each pipeline stage needs of the GPU, for `vae-engines repro --jobs N` (core/repro.py).

Each stage measures its own peak when it ends (core/entry.py: PyTorch's peak reservation on
the GPU plus an allowance for the CUDA context, 0 where it never touched a GPU) and writes it
to the file the driver named in the environment (MEMORY_RECORD_ENV). The driver keeps the
last figure of every stage, per GPU model, in one JSON file (`--memory-record`, default
reports/stage_memory.json: commit it, and a fresh clone on the same GPU model starts with
the figures). It starts a stage only when the figures of the stages running and its own fit
the GPU's memory less a margin. A stage with no figure yet starts as before; one that runs out
of GPU memory beside others runs again (core/repro.py), and then its foreach family's largest
figure (peak_of: `evaluate@mse` takes `evaluate@minmax`'s) says where it fits. Only then: the
figures are peaks of a moment, and a sum of them is pessimistic -- on an H100 from scratch, a
run that fitted every stage without a figure of its own to its siblings' ran the seven
compile_int8 stages in waves (174 s) where side by side they had taken 60 s and fitted.
What the figure leaves out: memory a library allocates outside PyTorch's allocator (a TensorRT builder's workspace);
such a stage that runs out of memory is caught by the same fallback.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from vae_engines.core.fileio import read_json, write_json

MEMORY_RECORD_ENV = "VAE_ENGINES_MEMORY_RECORD"  # set by the driver: where a stage writes its peak
# What a CUDA context holds outside PyTorch's allocator (the driver's own state and the loaded
# kernel modules): an allowance, not a measurement; it errs on the large side.
CUDA_CONTEXT_BYTES = 768 * 2**20
MARGIN = 0.1  # the share of the GPU's memory the driver leaves free
NO_GPU = "cpu"  # the records' key where the machine has no NVIDIA GPU


def stage_peak() -> dict:
    """This process's peak GPU memory, read when the stage ends. torch is never imported here:
    a stage that did not import it used no GPU."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():
        return {"peak_bytes": 0, "method": "no GPU used"}
    reserved = int(torch.cuda.max_memory_reserved())
    return {"peak_bytes": reserved + CUDA_CONTEXT_BYTES, "reserved_bytes": reserved,
            "method": "torch.cuda.max_memory_reserved() + CUDA context allowance"}


def write_stage_peak(path: str | Path) -> None:
    write_json(path, stage_peak())


@dataclass(frozen=True)
class Budget:
    """The GPU memory stages side by side may share: `device` names the records' entry
    (the GPU model, or NO_GPU), `usable_bytes` is None where there is nothing to fit."""

    device: str
    usable_bytes: int | None

    def fits(self, stage: str, running: set[str], peaks: dict[str, int]) -> bool:
        """Whether `stage` may start beside `running`. A stage with no recorded peak may (its
        running out of memory is the fallback), and so may any stage when nothing runs."""
        if self.usable_bytes is None or stage not in peaks or not running:
            return True
        return sum(peaks.get(name, 0) for name in running) + peaks[stage] <= self.usable_bytes


def family(stage: str) -> str:
    """A foreach stage's family ("evaluate@minmax" -> "evaluate"); any other stage is its own."""
    return stage.split("@", 1)[0]


def peak_of(stage: str, peaks: dict[str, int]) -> int | None:
    """The stage's recorded peak, else the largest of its foreach family's, else None (unknown)."""
    if stage in peaks:
        return peaks[stage]
    kin = [peak for name, peak in peaks.items() if "@" in stage and family(name) == family(stage)]
    return max(kin) if kin else None


def first_gpu() -> tuple[str, int] | None:
    """(name, memory in bytes) of this machine's first NVIDIA GPU, from nvidia-smi (no torch)."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20).stdout
        name, mib = out.splitlines()[0].rsplit(",", 1)
        return name.strip(), int(float(mib)) * 2**20
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def device_budget(memory_gib: float | None = None, margin: float = MARGIN) -> Budget:
    """This machine's GPU memory less `margin`; `memory_gib` replaces what the GPU has (a
    share of a GPU other work uses too; a test's fake GPU). No GPU and no memory_gib: no budget."""
    gpu = first_gpu()
    total = memory_gib * 2**30 if memory_gib is not None else gpu[1] if gpu else None
    return Budget(gpu[0] if gpu else NO_GPU, None if total is None else int(total * (1 - margin)))


def read_peaks(record: str | Path | None, device: str) -> dict[str, int]:
    """stage -> its last recorded peak (bytes) on GPUs named `device`."""
    if record is None or not Path(record).is_file():
        return {}
    entries = read_json(record).get("devices", {}).get(device, {})
    return {stage: int(entry["peak_bytes"]) for stage, entry in entries.items()}


def record_peak(record: str | Path, device: str, stage: str, report: dict) -> None:
    """Keep `stage`'s peak (its own report, stage_peak) as its figure on `device`."""
    doc = read_json(record) if Path(record).is_file() else {}
    doc.setdefault("about", "each pipeline stage's peak GPU memory in its last run (core/gpu_memory.py)")
    doc.setdefault("devices", {}).setdefault(device, {})[stage] = report
    write_json(record, doc)
