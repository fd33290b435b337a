"""Compiled PyTorch engines: the package format, and running one.

A package (`engines/torch/<precision>.pt2`) is a `torch.export` archive of the
channels-last decoder (model.channels_last) in its precision, with the frames axis dynamic
over the build profile, and one extra file: the compiled artifacts of the build
(`torch.compiler.save_cache_artifacts`: Inductor's graphs, the Triton or C++ kernels, the
autotuning results). Loading puts those artifacts back into the local caches and
`torch.compile`s the exported program, which then finds every kernel compiled already: a
package loads in seconds instead of being compiled again. Its record (`<precision>.json`)
says what it was built with and for: torch version, device and compute capability, mode.

Why not an AOTInductor package, which would need no compile at load: on the lent H200 with
torch 2.11.0+cu130 the AOTInductor package of this decoder compiled (82 s, 173 MB) and then
crashed the process with a segmentation fault when loaded (benchmarks/results/README.md).
"""

from __future__ import annotations

import base64
import logging
import time
from pathlib import Path
from typing import Any

from vae_engines.core import device as devices
from vae_engines.core.choices import CompileMode
from vae_engines.core.errors import UserError
from vae_engines.core.fileio import read_json, sha256_file
from vae_engines.core.lazy import lazy_import
from vae_engines.runtime.base import Decoder, Shape
from vae_engines.runtime.guard import OnRange, RangeGuard

torch = lazy_import("torch")
fused_ops = lazy_import("vae_engines.kernels.op")  # fused engines hold its ops
log = logging.getLogger(__name__)

CACHE_FILE = "inductor_artifacts.b64"  # the extra file of the torch.export archive


def package_metadata(path: str | Path) -> dict:
    """The package's build record, after checking the package is whole."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist; build it with `dvc repro`")
    meta = read_json(path.with_suffix(".json"))
    if path.stat().st_size != meta.get("bytes") or sha256_file(path) != meta.get("sha256"):
        raise UserError(f"{path} does not match its build record (size or sha256): it is truncated or replaced; "
                        "rebuild it with `dvc repro`")
    return meta


def check_target(meta: dict, device: Any) -> None:
    """A package runs only where it was built for: this torch version, this kind of device."""
    if meta["torch"] != torch.__version__:
        raise UserError(f"the package was built with torch {meta['torch']}, this is {torch.__version__}; rebuild it "
                        "here (dvc repro)")
    here = devices.describe(device)
    if here.get("compute_capability") != meta.get("compute_capability"):
        raise UserError(f"the package was built for {meta.get('device_name')} ({meta.get('compute_capability')}), "
                        f"this device is {here.get('name', 'the CPU')}; rebuild it here (dvc repro)")


def package_guard(path: Path, meta: dict, range_guard: float | None, on_range: OnRange | str | None) -> RangeGuard:
    """An INT8 package's guard over the input range its record holds; a float package, or
    an INT8 one built before the guard (warned of: rebuild it), has none."""
    input_range = meta.get("input_range")
    if input_range is None and str(meta.get("precision", "")).startswith(("int8", "fp8")):
        log.warning("%s: its record holds no calibrated input range (built before the range guard); latents are "
                    "not checked against it: rebuild it with `dvc repro`", path)
    return RangeGuard.of(f"torch engine {path.name}", input_range, range_guard, on_range)


class CudaGraphs:
    """`fn` run as one CUDA graph per input shape (a package's mode reduce-overhead): a
    shape's first call runs `fn` as it is (compiling and warming it), its second captures it,
    every later one copies the input into the graph's buffer, replays and copies the output
    out (the caller owns its audio; the next replay overwrites the graph's). All graphs share
    one memory pool: they never run at once, and each replay rewrites what it reads.

    Why not Inductor's CUDA graph trees (torch.compile mode reduce-overhead), which this
    replaced: they re-run dynamo's guards and the trees' bookkeeping on every call, host
    work the GPU waits for. On the lent H100 an INT8 package took 13.06 ms for a 60 s decode
    with them where its module as a plain CUDA graph took 12.55, with the same 11.4 ms of
    kernels (benchmarks/results/gpu_units/h100_run5_lean/)."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn
        self.pool = torch.cuda.graph_pool_handle()
        self.graphs: dict[tuple, tuple[Any, Any, Any]] = {}
        self.seen: set[tuple] = set()

    def __call__(self, x: Any) -> Any:
        key = (tuple(x.shape), x.device)
        if key in self.graphs:
            graph, static_in, static_out = self.graphs[key]
            static_in.copy_(x)
            graph.replay()
            return static_out.clone()
        if key not in self.seen:
            self.seen.add(key)
            return self.fn(x)
        static_in = x.clone()
        torch._dynamo.maybe_mark_dynamic(static_in, 2)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            static_out = self.fn(static_in)
        self.graphs[key] = (graph, static_in, static_out)
        graph.replay()
        return static_out.clone()


class CompiledDecoder(Decoder):
    """A compiled PyTorch package on the device it was built for (see the module docstring);
    an INT8 package guards its calibrated input range (range_guard, on_range: runtime.guard)."""

    kind = "torch"

    def __init__(self, path: str | Path, *, range_guard: float | None = None,
                 on_range: OnRange | str | None = None) -> None:
        self.path = Path(path)
        self.meta = package_metadata(self.path)
        self.device = torch.device(self.meta["device"])
        check_target(self.meta, self.device)
        self.precision = self.meta["precision"]
        self.guard = package_guard(self.path, self.meta, range_guard, on_range)
        self.shape = Shape(channels=self.meta["channels"], hop=self.meta["hop"],
                           sampling_rate=self.meta["sampling_rate"], frames=tuple(self.meta["frames"]),
                           batch=tuple(self.meta["batch"]))
        start = time.perf_counter()
        extra = {CACHE_FILE: ""}
        if self.meta.get("kernels") == "fused":
            fused_ops.registered()
        program = torch.export.load(str(self.path), extra_files=extra)
        if extra[CACHE_FILE]:
            torch.compiler.load_cache_artifacts(base64.b64decode(extra[CACHE_FILE]))
        self.module = program.module()
        mode = CompileMode(self.meta["mode"])
        self.fn = torch.compile(self.module, mode=mode.inductor_mode)
        self.graphs = CudaGraphs(self.fn) if mode is CompileMode.REDUCE_OVERHEAD and self.device.type == "cuda" \
            else None
        self.load_seconds = round(time.perf_counter() - start, 2)

    def _run(self, x: Any) -> Any:
        torch._dynamo.maybe_mark_dynamic(x, 2)
        with torch.inference_mode(), devices.exact_fp32():
            return self.graphs(x) if self.graphs is not None else self.fn(x)

    def describe(self) -> dict:
        return {**super().describe(), "runtime": "torch", **devices.describe(self.device),
                "mode": f"torch.compile ({self.meta['mode']}{': a CUDA graph per input shape' if self.graphs else ''})"
                        f" of an exported channels-last program ({self.meta.get('kernels', 'inductor')} kernels)",
                "package": str(self.path), "executed": self.meta["executed"], "load_seconds": self.load_seconds}
