"""Engine builds: a strongly typed network from an fp16 or Q/DQ ONNX, one profile, one plan.

No INT8 / FP16 builder flags and no calibrator: precision comes from the ONNX itself
(fp16 weights, or explicit Q/DQ), which is how TensorRT 10, TensorRT 11 and TensorRT-RTX
all build the same file.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from vae_engines.core.errors import UserError
from vae_engines.core.fileio import atomic_path, sha256_file, write_bytes, write_json
from vae_engines.trt.backend import TensorRT

log = logging.getLogger(__name__)

MAX_VOLUME = 2**31 - 1  # TensorRT tensors are indexed with int32
SHAPE_ONLY = ("SHUFFLE", "UNSQUEEZE", "SQUEEZE", "IDENTITY")


def network_from_onnx(backend: TensorRT, onnx_path: Path, logger: Any) -> tuple[Any, Any, Any]:
    """(builder, network, parser) for a strongly typed network; parser errors name their nodes."""
    trt = backend.trt
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not onnx_path.is_file():
        raise UserError(f"{onnx_path} does not exist; run `dvc repro` to make it")
    if not parser.parse_from_file(str(onnx_path)):
        errors = []
        for i in range(parser.num_errors):
            err = parser.get_error(i)
            node = err.node_name() if hasattr(err, "node_name") else str(err.node())
            errors.append(f"[{node or 'graph'}] {err.desc()}")
        raise UserError(f"{backend.name} cannot parse {onnx_path}: {'; '.join(errors) or 'unknown error'}; "
                        "re-export it (dvc repro) or exclude the named nodes")
    return builder, network, parser


def layer_precisions(network: Any) -> dict:
    """The types the strongly typed network gives its layers, as parsed (before fusion).

    convolutions: how many Conv / ConvTranspose layers take int8 (their input comes from a
    DequantizeLinear, so TensorRT runs them in INT8), fp16 or fp32 input. layers: the count
    of layers per (type, output type). The engine inspector would give the fused layers but
    needs a GPU that can deserialize the plan."""
    producer: dict[str, Any] = {}
    layers: dict[str, int] = {}
    convolutions = {"int8": 0, "fp16": 0, "fp32": 0}

    def origin(tensor: Any) -> str:
        # the parser reshapes 1-D convolutions to 2-D: look through shape-only layers
        kind = "INPUT"
        while tensor is not None and tensor.name in producer:
            layer = producer[tensor.name]
            kind = str(layer.type).split(".")[-1]
            if kind not in SHAPE_ONLY:
                return kind
            tensor = layer.get_input(0)
        return kind

    for i in range(network.num_layers):
        layer = network.get_layer(i)
        kind = str(layer.type).split(".")[-1]
        for j in range(layer.num_outputs):
            producer[layer.get_output(j).name] = layer
        dtype = str(layer.get_output(0).dtype).split(".")[-1] if layer.num_outputs else "none"
        key = f"{kind} -> {dtype}"
        layers[key] = layers.get(key, 0) + 1
        if kind in ("CONVOLUTION", "DECONVOLUTION"):
            source = layer.get_input(0)
            if origin(source) == "DEQUANTIZE":
                convolutions["int8"] += 1
            else:
                convolutions["fp16" if "HALF" in str(source.dtype) else "fp32"] += 1
    return {"convolutions": convolutions, "layers": dict(sorted(layers.items()))}


def check_profile(profile: Any, channels: int, hop: int, out_channels: int = 2) -> None:
    """Reject profiles whose largest output TensorRT cannot index."""
    largest = profile.max_batch * out_channels * profile.max_frames * hop
    if largest > MAX_VOLUME:
        raise UserError(f"profile max_batch x max_frames = {profile.max_batch} x {profile.max_frames} makes an "
                        f"output of {largest} samples, over TensorRT's 2^31-1; lower max_frames or max_batch")
    del channels


def engine_from_onnx(backend: TensorRT, onnx_path: str | Path, plan_path: str | Path, *, profile: Any,
                     build: Any, hop: int, timing_cache_path: str | Path | None = None) -> dict:
    """Build `onnx_path` into `plan_path` and write `<plan>.json` metadata beside it.

    profile: ProfileParams (frames and batch); build: BuildParams. Returns the metadata.
    The previous plan stays in place until the new one is complete.
    """
    onnx_path, plan_path = Path(onnx_path), Path(plan_path)
    trt = backend.trt
    logger = backend.logger()
    builder, network, _parser = network_from_onnx(backend, onnx_path, logger)
    inp = network.get_input(0)
    channels = inp.shape[1]
    precisions = layer_precisions(network)
    check_profile(profile, channels, hop)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, build.workspace_mib << 20)
    config.builder_optimization_level = build.opt_level
    backend.apply_target(config, build.compute_capabilities)
    opt_profile = builder.create_optimization_profile()
    opt_profile.set_shape(inp.name, (profile.min_batch, channels, profile.min_frames),
                          (profile.opt_batch, channels, profile.opt_frames),
                          (profile.max_batch, channels, profile.max_frames))
    config.add_optimization_profile(opt_profile)
    cache = None
    if timing_cache_path is not None:
        previous = Path(timing_cache_path).read_bytes() if Path(timing_cache_path).is_file() else b""
        cache = config.create_timing_cache(previous)
        if backend.uses_timing_cache:
            config.set_timing_cache(cache, ignore_mismatch=True)

    log.info("building %s with %s %s (opt level %d, target %s)", plan_path.name, backend.name, backend.version,
             build.opt_level, backend.target(build.compute_capabilities))
    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    if serialized is None:
        reason = "; ".join(logger.errors[-3:]) or "no reason given"
        raise UserError(f"{backend.name} failed to build {onnx_path.name}: {reason}; try build.opt_level: 1 or "
                        "exclude the failing layers")
    with atomic_path(plan_path) as tmp:
        with open(tmp, "wb") as f:
            f.write(memoryview(serialized))
    log.info("built %s in %.1f s (%.1f MB)", plan_path.name, seconds, plan_path.stat().st_size / 1e6)
    if timing_cache_path is not None:
        # TensorRT-RTX ignores timing caches; it still serializes an (empty) one, which keeps
        # the DVC output declared for both backends
        write_bytes(timing_cache_path, bytes(memoryview(cache.serialize())))

    def io(tensor: Any) -> dict:
        return {"name": tensor.name, "shape": list(tensor.shape), "dtype": str(tensor.dtype).split(".")[-1]}

    meta = {
        "backend": backend.name,
        "backend_version": backend.version,
        "target": backend.target(build.compute_capabilities),
        "profile": {"min": [profile.min_batch, channels, profile.min_frames],
                    "opt": [profile.opt_batch, channels, profile.opt_frames],
                    "max": [profile.max_batch, channels, profile.max_frames]},
        "builder_optimization_level": build.opt_level,
        "workspace_mib": build.workspace_mib,
        "timing_cache": "used" if backend.uses_timing_cache else "none (TensorRT-RTX has no timing cache)",
        "build_seconds": round(seconds, 2),
        "plan_bytes": plan_path.stat().st_size,
        "plan_sha256": sha256_file(plan_path),
        "num_layers": network.num_layers,
        "precisions": precisions,
        "inputs": [io(network.get_input(i)) for i in range(network.num_inputs)],
        "outputs": [io(network.get_output(i)) for i in range(network.num_outputs)],
        "onnx": str(onnx_path),
        "onnx_sha256": sha256_file(onnx_path),
        "hop": hop,
    }
    write_json(plan_path.with_suffix(".json"), meta)
    return meta


def build_stage(params: Any, *, onnx_path: str | Path, plan_path: str | Path,
                timing_cache_path: str | Path | None) -> dict:
    """The `build_fp16` / `build@<variant>` stage: one plan and its metadata."""
    from vae_engines.graph.io import model_facts
    from vae_engines.trt.backend import resolve

    backend = resolve(params.build.backend)
    hop, _ = model_facts(onnx_path)
    return engine_from_onnx(backend, onnx_path, plan_path, profile=params.profile, build=params.build, hop=hop,
                            timing_cache_path=timing_cache_path)
