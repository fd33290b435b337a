"""The `check` stage: runs first on every `dvc repro`, and cheaply (no torch, no TensorRT).

It validates params.yaml as a whole (every section and the checks across them, variant
names included) before DVC runs any other stage, and writes the two records engines
depend on: the TensorRT toolchain (backend and version: plans rebuild when it changes, and
only then) and the PyTorch target (torch version and the GPU, or the CPU, compiled engines
are built for: they rebuild on another GPU). Records are rewritten only when they change.
Every root stage depends on the constant stamp file, which is what makes DVC run this
stage first; the stamp never changes, so it re-runs nothing.
"""

from __future__ import annotations

from pathlib import Path

from vae_engines.core.choices import Quantization
from vae_engines.core.env import toolchain, torch_target
from vae_engines.core.errors import UserError
from vae_engines.core.fileio import write_bytes, write_json_if_changed
from vae_engines.core.params import load

STAMP = b"params.yaml is validated by the check stage before any other stage runs\n"


def check_stage(params_file: str | Path, *, toolchain_json: str | Path, torch_json: str | Path,
                stamp: str | Path) -> None:
    params = load(params_file)
    checkpoint = Path(params.model.checkpoint)
    if not checkpoint.exists():
        raise UserError(f"model.checkpoint: {checkpoint} does not exist; fix the path in params.yaml")
    tools = toolchain(params.build.backend)
    implicit = [name for name, v in params.int8.items() if v.quantization == Quantization.IMPLICIT]
    if implicit and not (tools["backend"] == "tensorrt" and str(tools["version"]).startswith("10.")):
        raise UserError(f"int8.{implicit[0]}.quantization: implicit INT8 is not available with {tools['backend']} "
                        f"{tools['version']}: it needs full TensorRT 10.x (TensorRT 11 removed it; TensorRT-RTX never "
                        "had it); set quantization: explicit")
    write_json_if_changed(toolchain_json, tools)
    write_json_if_changed(torch_json, torch_target(params.compute.device))
    stamp = Path(stamp)
    if not stamp.is_file() or stamp.read_bytes() != STAMP:
        write_bytes(stamp, STAMP)
