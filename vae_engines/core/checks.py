"""The `check` stage: runs first on every `dvc repro`, and cheaply.

It validates params.yaml as a whole (every section and the checks across them, variant
names included) before DVC runs any other stage, and writes the build toolchain record
that engine builds depend on. Every root stage depends on its constant stamp file, which
is what makes DVC run this stage first; the stamp never changes, so it re-runs nothing.
"""

from __future__ import annotations

from pathlib import Path

from vae_engines.core.env import toolchain
from vae_engines.core.errors import UserError
from vae_engines.core.fileio import write_bytes, write_json
from vae_engines.core.params import load

STAMP = b"params.yaml is validated by the check stage before any other stage runs\n"


def check_stage(params_file: str | Path, *, toolchain_json: str | Path, stamp: str | Path) -> None:
    params = load(params_file)
    checkpoint = Path(params.model.checkpoint)
    if not checkpoint.exists():
        raise UserError(f"model.checkpoint: {checkpoint} does not exist; fix the path in params.yaml")
    write_json(toolchain_json, toolchain(params.build.backend))
    stamp = Path(stamp)
    if not stamp.is_file() or stamp.read_bytes() != STAMP:
        write_bytes(stamp, STAMP)
