"""ONNX files in and out, their metadata, and the one place ONNX Runtime sessions are made.

Model facts the later stages need (hop, sampling rate, where the weights came from) travel
in the ONNX metadata, so those stages never load torch or the checkpoint.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from vae_engines.core.errors import UserError
from vae_engines.core.fileio import atomic_path
from vae_engines.core.lazy import lazy_import

onnx = lazy_import("onnx")
ort = lazy_import("onnxruntime")

INPUT_NAME = "latent"
OUTPUT_NAME = "audio"
RECIPE_KEY = "vae_engines.recipe"  # a variant graph's record (quant.quantize writes it)


def load_onnx(path: str | os.PathLike, load_weights: bool = True) -> Any:
    """onnx.load with a user-facing error for a missing or corrupted file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist; run `dvc repro` to make it")
    try:
        return onnx.load(str(path), load_external_data=load_weights)
    except Exception as exc:  # protobuf raises DecodeError, truncation raises others
        raise UserError(f"{path} is not a readable ONNX model ({type(exc).__name__}); delete it and run "
                        "`dvc repro` to re-export") from None


def save_onnx(model: Any, path: str | os.PathLike) -> Path:
    """Write `model` atomically after the full ONNX checker (types and shapes) passed on it."""
    path = Path(path)
    with atomic_path(path) as tmp:
        onnx.save_model(model, str(tmp))
        onnx.checker.check_model(str(tmp), full_check=True)
    return path


def metadata(model: Any) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def set_metadata(model: Any, entries: dict[str, str]) -> Any:
    """`model` with `entries` in its metadata_props (replacing entries of the same key)."""
    kept = [p for p in model.metadata_props if p.key not in entries]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in sorted(entries.items()):
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=str(value)))
    return model


@lru_cache(maxsize=8)
def _file_metadata(path: str) -> dict[str, str]:
    return metadata(load_onnx(path, load_weights=False))


def file_metadata(path: str | os.PathLike) -> dict[str, str]:
    """Metadata of the ONNX at `path`, parsed once per process (a full-size model takes seconds)."""
    return _file_metadata(str(path))


def variant_recipe(path: str | os.PathLike) -> dict | None:
    """The record an INT8 variant's graph carries (None for a float graph)."""
    value = file_metadata(path).get(RECIPE_KEY)
    return json.loads(value) if value else None


def latent_range(recipe: dict | None) -> float | None:
    """The calibrated max |x| of the graph input (the latent, conv1's input) in an INT8
    variant's record (its ranges.json, or the recipe its graph carries): the range an engine
    of the variant guards (runtime.guard). None for a float graph or a record without it."""
    value = (recipe or {}).get("amax", {}).get(INPUT_NAME)
    return None if value is None else float(value)


def model_facts(path: str | os.PathLike) -> tuple[int, int]:
    """(hop, sampling_rate) from an exported ONNX's metadata."""
    meta = file_metadata(path)
    return int(meta.get("hop", 1920)), int(meta.get("sampling_rate", 48000))


def graph_precision(path: str | os.PathLike) -> str:
    """fp32, fp16, or int8+ / fp8+ either: what the graph asks for (from its initializers)."""
    model = load_onnx(path, load_weights=False)
    types = {i.data_type for i in model.graph.initializer}
    quantized = any(n.op_type == "QuantizeLinear" for n in model.graph.node)
    base = "fp16" if 10 in types else "fp32"  # TensorProto.FLOAT16
    code = "fp8" if 17 in types else "int8"  # TensorProto.FLOAT8E4M3FN codes
    return f"{code}+{base}" if quantized else base


def ort_session(model: str | os.PathLike | Any, threads: int | None = None, *, keep_names: bool = False) -> Any:
    """An ONNX Runtime CPU session for a path or a ModelProto.

    keep_names: disable graph optimisations so intermediate tensors keep their names.
    """
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if keep_names:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    source = model.SerializeToString() if hasattr(model, "SerializeToString") else str(model)
    if not hasattr(model, "SerializeToString") and not Path(source).is_file():
        raise UserError(f"{source} does not exist; run `dvc repro` to make it")
    try:
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        where = "the model" if hasattr(model, "SerializeToString") else source
        raise UserError(f"onnxruntime cannot load {where} ({str(exc).splitlines()[0][:120]}); delete it and run "
                        "`dvc repro`") from None
