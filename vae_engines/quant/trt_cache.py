"""Import a TensorRT 10 calibration cache as per-tensor ranges for a Q/DQ model.

TensorRT 11 removed implicit INT8 calibration, so a cache made with TensorRT 10 (by
trtexec or an IInt8Calibrator) can no longer be fed to the builder; its scales can still
become the Q/DQ scales here. The text format is a header line such as
`TRT-100xx-EntropyCalibration2`, then one `tensor_name: hex` line per tensor, where hex is
the big-endian IEEE-754 float32 scale; amax = scale * 127.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

from vae_engines.core.errors import UserError

LINE = re.compile(r"^(?P<name>.+): (?P<hex>[0-9a-fA-F]{8})$")


def read_trt_cache(path: str | Path) -> dict[str, float]:
    """{tensor: amax} from a TensorRT calibration cache file."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read TensorRT calibration cache {path} ({exc}); check int8.<variant>.cache") from None
    if not lines or not lines[0].startswith("TRT-"):
        raise UserError(f"{path} is not a TensorRT calibration cache (no 'TRT-...' header line)")
    amax = {}
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        match = LINE.match(line.strip())
        if not match:
            raise UserError(f"{path}:{number}: {line[:60]!r} is not 'tensor: hexscale'")
        scale = struct.unpack(">f", bytes.fromhex(match["hex"]))[0]
        amax[match["name"]] = scale * 127.0
    return amax


def ranges_from_trt_cache(path: str | Path, tensors: list[str]) -> dict[str, float]:
    """The cache's amax for each of `tensors`; a missing one is an error naming it."""
    amax = read_trt_cache(path)
    missing = [t for t in tensors if t not in amax]
    if missing:
        raise UserError(f"{path} has no scale for {len(missing)} tensor(s), e.g. {missing[0]!r}; the cache was made "
                        "for another ONNX export (tensor names must match engines/onnx/fp32.onnx)")
    return {t: amax[t] for t in tensors}
