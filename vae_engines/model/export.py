"""ONNX export of the folded decoder: fp32 for quantization, fp16 for strongly typed engines.

The graph takes `latent` [B, C, T] and returns `audio` [B, audio_channels, T * hop], with
batch and frames dynamic. The fp16 graph is the fp32 one converted by graph.float16 (the
same pass that gives INT8 variants their fp16 parts), so fp16 and INT8+fp16 engines share
one definition of "fp16". Model facts later stages need (hop, sampling rate, where the
weights came from) travel in the ONNX metadata.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import onnx
import torch

from vae_engines.core.params import ExportParams, ModelParams, section_hash
from vae_engines.graph.float16 import float16_graph
from vae_engines.graph.io import INPUT_NAME, OUTPUT_NAME, load_onnx, save_onnx
from vae_engines.model.folded import save_folded
from vae_engines.model.oobleck import fold_decoder, load_vae

log = logging.getLogger(__name__)


def onnx_from_decoder(decoder: Any, out_path: str | os.PathLike, *, opset: int,
                      metadata: dict[str, str] | None = None) -> Path:
    """Export a folded decoder (see model.oobleck.fold_decoder) as fp32 ONNX, checked and atomic.

    metadata: string key/values stored in the model's metadata_props.
    """
    # the exporter warns that torchvision's ops are not registered: this model has none
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    channels = decoder.conv1.in_channels
    example = torch.zeros(1, channels, 4)
    batch = torch.export.Dim("batch", min=1, max=1024)
    frames = torch.export.Dim("frames", min=1, max=1 << 16)
    with torch.no_grad():
        program = torch.onnx.export(
            decoder, (example,), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: batch, 2: frames},), opset_version=opset, dynamo=True,
            optimize=True, verbose=False, report=False,
        )
    model = program.model_proto
    # The exporter annotates every node with Python stack traces, which hold the install
    # path of torch and diffusers: the same model exported from two checkouts would differ
    # in bytes (and in DVC hashes). They are debug information only; drop them.
    for node in model.graph.node:
        del node.metadata_props[:]
    model.producer_name = "vae-engines"
    for key, value in sorted((metadata or {}).items()):
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=str(value)))
    out_path = save_onnx(model, out_path)
    log.info("exported %s (fp32, %.1f MB)", out_path, out_path.stat().st_size / 1e6)
    return out_path


def fp16_from_fp32(fp32_path: str | os.PathLike, out_path: str | os.PathLike, float32_io: bool = True) -> Path:
    """The fp16 graph of an exported fp32 ONNX (graph.float16), checked and atomic."""
    out_path = save_onnx(float16_graph(load_onnx(fp32_path), float32_io), out_path)
    log.info("wrote %s (fp16, %.1f MB)", out_path, out_path.stat().st_size / 1e6)
    return out_path


def export_model(model: ModelParams, export: ExportParams, fp32_path: str | os.PathLike,
                 fp16_path: str | os.PathLike, decoder_path: str | os.PathLike) -> None:
    """The `export` stage: load the model `model` names, write fp32 and fp16 ONNX, and the
    folded decoder (model.folded) for the PyTorch engines' stages."""
    loaded = load_vae(model)
    metadata = {"hop": loaded.hop, "sampling_rate": loaded.sampling_rate, "model": loaded.description,
                "params_hash": section_hash(model, export)}
    decoder = fold_decoder(loaded.vae)
    onnx_from_decoder(decoder, fp32_path, opset=export.opset, metadata=metadata)
    fp16_from_fp32(fp32_path, fp16_path, float32_io=export.fp16_io == "float32")
    save_folded(loaded, decoder, decoder_path)
