"""`load(path)`: the engine at `path` as a runtime Decoder, whatever its kind.

The kind comes from the record written beside the engine when it was built
(`<name>.json`: TensorRT and TensorRT-RTX plans, compiled PyTorch packages); an `.onnx`
file is an ONNX graph and runs on ONNX Runtime. One table maps each kind to its runner.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from vae_engines.core.choices import EngineKind
from vae_engines.core.errors import UserError
from vae_engines.core.fileio import read_json
from vae_engines.runtime.base import Decoder
from vae_engines.runtime.compiled import CompiledDecoder
from vae_engines.runtime.onnx import OnnxDecoder
from vae_engines.runtime.tensorrt import PlanDecoder

KINDS: dict[EngineKind, Callable[..., Decoder]] = {
    EngineKind.TENSORRT: PlanDecoder,
    EngineKind.TENSORRT_RTX: PlanDecoder,
    EngineKind.TORCH: CompiledDecoder,
    EngineKind.ONNX: OnnxDecoder,
}


def engine_kind(path: str | Path) -> EngineKind:
    """What the engine at `path` is, from its build record (or its suffix, for ONNX)."""
    path = Path(path)
    if path.suffix == ".onnx":
        return EngineKind.ONNX
    record = path.with_suffix(".json")
    if not record.is_file():
        raise UserError(f"{path} has no build record beside it ({record.name}); engines are loaded with the record "
                        "`dvc repro` writes next to them")
    meta = read_json(record)
    kind = meta.get("kind") or meta.get("backend")
    try:
        return EngineKind(kind)
    except ValueError:
        raise UserError(f"{record} names engine kind {kind!r}; known: {', '.join(k.value for k in EngineKind)}") from None


def load(path: str | Path, **options: Any) -> Decoder:
    """The engine at `path`, ready to decode. Options: `device` for plans, `threads` for
    ONNX; for any kind, `range_guard` (the factor beyond an INT8 engine's calibrated input
    range that a latent may not reach, default runtime.guard.DEFAULT_RANGE_GUARD) and
    `on_range` ("error", "warn" or "off": what a decode does beyond it)."""
    return KINDS[engine_kind(path)](path, **options)
