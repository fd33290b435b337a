"""What goes beside every number: versions, device, runtime, model and params hash."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from vae_engines.core.params import section_hash
from vae_engines.model.export import load_onnx, onnx_metadata
from vae_engines.core.fileio import read_json


@lru_cache(maxsize=8)
def _metadata(onnx_path: str) -> dict[str, str]:
    # parsing a full-size ONNX takes seconds; stages ask for its metadata more than once
    return onnx_metadata(load_onnx(onnx_path, load_weights=False))


def provenance(env_json: str | Path, onnx_path: str | Path, *sections: Any) -> dict:
    env = read_json(env_json)
    meta = _metadata(str(onnx_path))
    return {
        "model": meta.get("model", "unknown"),
        "device": {"cpu": env.get("cpu"), "cpu_count": env.get("cpu_count"), "gpu": env.get("gpu")},
        "versions": env.get("versions", {}),
        "params_hash": section_hash(*sections),
    }


def model_facts(onnx_path: str | Path) -> tuple[int, int]:
    """(hop, sampling_rate) from the exported ONNX's metadata."""
    meta = _metadata(str(onnx_path))
    return int(meta.get("hop", 1920)), int(meta.get("sampling_rate", 48000))
