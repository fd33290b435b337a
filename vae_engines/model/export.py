"""ONNX export of the folded decoder: fp32 for quantization, fp16 for strongly typed engines.

The graph takes `latent` [B, C, T] and returns `audio` [B, audio_channels, T * hop], with
batch and frames dynamic. Model facts the later stages need (hop, sampling rate, where the
weights came from) travel in the ONNX metadata, so those stages never load torch.
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import Any

from vae_engines.core.errors import UserError
from vae_engines.core.fileio import atomic_path

log = logging.getLogger(__name__)

INPUT_NAME = "latent"
OUTPUT_NAME = "audio"
FP16_MAX = 65504.0


def _fp16_module(decoder: Any, float32_io: bool) -> Any:
    import torch

    for name, buf in decoder.named_buffers():
        peak = float(buf.abs().max())
        if peak > FP16_MAX:
            raise UserError(f"Snake constant {name} reaches {peak:.3g}, beyond fp16's range; this checkpoint "
                            "cannot run as an fp16 engine (use an INT8 variant, which keeps Snake in fp32)")

    class Fp16Decoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.decoder = copy.deepcopy(decoder).half()

        def forward(self, latent: torch.Tensor) -> torch.Tensor:
            audio = self.decoder(latent.half() if float32_io else latent)
            return audio.float() if float32_io else audio

    return Fp16Decoder().eval()


def onnx_from_decoder(decoder: Any, out_path: str | os.PathLike, *, opset: int, precision: str = "fp32",
                      float32_io: bool = True, metadata: dict[str, str] | None = None) -> Path:
    """Export a folded decoder (see model.fold_decoder) to `out_path`, checked and atomic.

    precision: "fp32" or "fp16" (fp16 weights and compute). float32_io: for fp16, keep the
    graph's input and output float32 (casts inside the graph); False makes them float16.
    metadata: string key/values stored in the model's metadata_props.
    """
    import onnx
    import torch

    module = decoder if precision == "fp32" else _fp16_module(decoder, float32_io)
    in_dtype = torch.float32 if precision == "fp32" or float32_io else torch.float16
    channels = decoder.conv1.in_channels
    example = torch.zeros(1, channels, 4, dtype=in_dtype)
    batch = torch.export.Dim("batch", min=1, max=1024)
    frames = torch.export.Dim("frames", min=1, max=1 << 16)
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp, torch.no_grad():
        program = torch.onnx.export(
            module, (example,), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
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
        onnx.save_model(model, str(tmp))
        onnx.checker.check_model(str(tmp), full_check=True)
    log.info("exported %s (%s, %.1f MB)", out_path, precision, out_path.stat().st_size / 1e6)
    return out_path


def load_onnx(path: str | os.PathLike, load_weights: bool = True) -> Any:
    """onnx.load with a user-facing error for a missing or corrupted file."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist; run `dvc repro` to make it")
    try:
        return onnx.load(str(path), load_external_data=load_weights)
    except Exception as exc:  # protobuf raises DecodeError, truncation raises others
        raise UserError(f"{path} is not a readable ONNX model ({type(exc).__name__}); delete it and run "
                        "`dvc repro` to re-export") from None


def onnx_metadata(model: Any) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}
