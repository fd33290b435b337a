"""Engine builds: an ONNX graph, one optimization profile, one plan and its record.

Steps, each small, composed by `build_plan` (the shape of Polygraphy's
NetworkFromOnnxPath -> CreateConfig -> EngineBytesFromNetwork -> SaveEngine):

- `network_from_onnx`: a strongly typed network (precision from the ONNX itself: fp16
  weights, explicit Q/DQ), or for an implicit INT8 variant a weakly typed one that
  trt.implicit prepares;
- `builder_config`: workspace, optimization level, target GPUs, the profile, the timing cache;
- `serialize`: the build, timed, with the builder's own error on failure;
- `save_plan` and `plan_record`: the plan written atomically, the record beside it --
  including what the backend does with the variant's INT8 (`int8_execution`).

No INT8 / FP16 builder flags for explicit graphs: TensorRT 10, TensorRT 11 and
TensorRT-RTX all build the same file.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from vae_engines.core.choices import Quantization
from vae_engines.core.errors import UserError
from vae_engines.core.fileio import atomic_path, sha256_file, write_bytes, write_json
from vae_engines.core.params import BuildParams, ProfileParams
from vae_engines.graph.io import file_metadata, latent_range, variant_recipe
from vae_engines.trt.backend import TensorRT
from vae_engines.trt.implicit import apply_implicit_int8

log = logging.getLogger(__name__)

MAX_VOLUME = 2**31 - 1  # TensorRT tensors are indexed with int32
SHAPE_ONLY = ("SHUFFLE", "UNSQUEEZE", "SQUEEZE", "IDENTITY")


def network_from_onnx(backend: TensorRT, onnx_path: Path, logger: Any, strongly_typed: bool = True) -> tuple:
    """(builder, network, parser); parser errors name their nodes."""
    trt = backend.trt
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    network = builder.create_network(flags)
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
    """The types the network gives its layers, as parsed (before fusion).

    convolutions: how many Conv / ConvTranspose layers take int8 or fp8 (their input comes
    from a DequantizeLinear of that type), fp16 or fp32 input. layers: the count of layers per (type, output
    type). The engine inspector would give the fused layers but needs a GPU that can
    deserialize the plan."""
    producer: dict[str, Any] = {}
    layers: dict[str, int] = {}
    convolutions = {"int8": 0, "fp8": 0, "fp16": 0, "fp32": 0}

    def origin(tensor: Any) -> Any:
        # the parser reshapes 1-D convolutions to 2-D: look through shape-only layers
        while tensor is not None and tensor.name in producer:
            layer = producer[tensor.name]
            if str(layer.type).split(".")[-1] not in SHAPE_ONLY:
                return layer
            tensor = layer.get_input(0)
        return None

    for i in range(network.num_layers):
        layer = network.get_layer(i)
        kind = str(layer.type).split(".")[-1]
        for j in range(layer.num_outputs):
            producer[layer.get_output(j).name] = layer
        dtype = str(layer.get_output(0).dtype).split(".")[-1] if layer.num_outputs else "none"
        layers[f"{kind} -> {dtype}"] = layers.get(f"{kind} -> {dtype}", 0) + 1
        if kind in ("CONVOLUTION", "DECONVOLUTION"):
            source = layer.get_input(0)
            made_by = origin(source)
            if made_by is not None and str(made_by.type).endswith("DEQUANTIZE"):
                convolutions["fp8" if "FP8" in str(made_by.get_input(0).dtype) else "int8"] += 1
            else:
                convolutions["fp16" if "HALF" in str(source.dtype) else "fp32"] += 1
    return {"convolutions": convolutions, "layers": dict(sorted(layers.items()))}


def check_profile(profile: ProfileParams, hop: int, out_channels: int = 2) -> None:
    """Reject profiles whose largest output TensorRT cannot index."""
    largest = profile.max_batch * out_channels * profile.max_frames * hop
    if largest > MAX_VOLUME:
        raise UserError(f"profile max_batch x max_frames = {profile.max_batch} x {profile.max_frames} makes an "
                        f"output of {largest} samples, over TensorRT's 2^31-1; lower max_frames or max_batch")


def builder_config(backend: TensorRT, builder: Any, network: Any, profile: ProfileParams, build: BuildParams,
                   timing_cache: bytes | None) -> tuple[Any, Any]:
    """(config, timing cache object) for one optimization profile over the input's frames."""
    trt = backend.trt
    inp = network.get_input(0)
    channels = inp.shape[1]
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
    if timing_cache is not None:
        cache = config.create_timing_cache(timing_cache)
        if backend.uses_timing_cache:
            config.set_timing_cache(cache, ignore_mismatch=True)
    return config, cache


def serialize(backend: TensorRT, builder: Any, network: Any, config: Any, logger: Any, name: str) -> tuple[Any, float]:
    """(serialized plan, seconds) or a one-line error with the builder's own reason."""
    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    if serialized is None:
        reason = "; ".join(logger.errors[-3:]) or "no reason given"
        raise UserError(f"{backend.name} failed to build {name}: {reason}; try build.opt_level: 1 or exclude the "
                        "failing layers")
    return serialized, seconds


def save_plan(serialized: Any, plan_path: Path) -> None:
    with atomic_path(plan_path) as tmp:
        with open(tmp, "wb") as f:
            f.write(memoryview(serialized))


def int8_execution(backend: TensorRT, recipe: dict | None) -> str:
    """What the backend does with the variant's INT8 or FP8 (recorded in the plan's record).

    TensorRT-RTX lists INT8 only as weight-only quantization (support matrices 1.0-1.5;
    the 1.7 release notes: INT8 weight-only convolutions give smaller engines and lower
    peak memory); no INT8-activation convolution is documented. Its FP8 is for matrix
    multiplications only, on compute capability 8.9 and later ("Working with Quantized
    Types", TensorRT-RTX docs): these are convolutions. Full TensorRT runs INT8 kernels
    where the Q/DQ placement lets it fuse them; implicit INT8 (TensorRT 10.x) picks INT8 per
    layer where its dynamic ranges allow and it is faster; FP8 Q/DQ needs compute capability
    8.9 or later there too."""
    if recipe is None:
        return "none: an fp16 engine"
    if recipe.get("format") == "fp8":
        if backend.name == "tensorrt_rtx":
            return ("fp8 Q/DQ on convolutions, which TensorRT-RTX's FP8 (matrix multiplications on compute "
                    "capability 8.9+) does not name: expect float convolutions and at best fp16's speed until "
                    "measured on the target GPU")
        return ("explicit FP8 Q/DQ (conv_inputs placement): FP8 kernels where TensorRT has them for these "
                "convolutions, on compute capability 8.9+ only; float elsewhere")
    if backend.name == "tensorrt_rtx":
        return ("weight-only: TensorRT-RTX keeps the int8 weights (smaller plan, less memory) and computes the "
                "convolutions in float; expect at best fp16's speed until measured on the target GPU")
    if recipe.get("quantization") == Quantization.IMPLICIT:
        return "implicit: TensorRT 10 chooses INT8 per layer from the dynamic ranges, fp16 elsewhere"
    return (f"explicit Q/DQ ({recipe.get('placement')} placement): INT8 kernels where TensorRT can fuse the Q/DQ "
            "around a layer, float elsewhere")


def plan_record(backend: TensorRT, network: Any, onnx_path: Path, plan_path: Path, *, profile: ProfileParams,
                build: BuildParams, seconds: float, precisions: dict, recipe: dict | None) -> dict:
    channels = network.get_input(0).shape[1]
    facts = file_metadata(onnx_path)

    def io(tensor: Any) -> dict:
        return {"name": tensor.name, "shape": list(tensor.shape), "dtype": str(tensor.dtype).split(".")[-1]}

    return {
        "kind": backend.name, "backend": backend.name, "backend_version": backend.version,
        "target": backend.target(build.compute_capabilities),
        "profile": {"min": [profile.min_batch, channels, profile.min_frames],
                    "opt": [profile.opt_batch, channels, profile.opt_frames],
                    "max": [profile.max_batch, channels, profile.max_frames]},
        "builder_optimization_level": build.opt_level, "workspace_mib": build.workspace_mib,
        "timing_cache": "used" if backend.uses_timing_cache else "none (TensorRT-RTX has no timing cache)",
        "build_seconds": round(seconds, 2), "plan_bytes": plan_path.stat().st_size,
        "plan_sha256": sha256_file(plan_path), "num_layers": network.num_layers, "precisions": precisions,
        "precision": recipe["precision"] if recipe else "fp16",
        "quantization": recipe.get("quantization") if recipe else None,
        "int8_execution": int8_execution(backend, recipe),
        "input_range": latent_range(recipe),  # the latent range the runtime guards (runtime.guard)
        "inputs": [io(network.get_input(i)) for i in range(network.num_inputs)],
        "outputs": [io(network.get_output(i)) for i in range(network.num_outputs)],
        "onnx": str(onnx_path), "onnx_sha256": sha256_file(onnx_path),
        "hop": int(facts.get("hop", 1920)), "sampling_rate": int(facts.get("sampling_rate", 48000)),
    }


def build_plan(backend: TensorRT, onnx_path: str | Path, plan_path: str | Path, *, profile: ProfileParams,
               build: BuildParams, timing_cache_path: str | Path | None = None) -> dict:
    """Build `onnx_path` into `plan_path` and write `<plan>.json` beside it; returns the record.
    The previous plan stays in place until the new one is complete."""
    onnx_path, plan_path = Path(onnx_path), Path(plan_path)
    meta = file_metadata(onnx_path) if onnx_path.is_file() else {}
    recipe = variant_recipe(onnx_path) if meta else None
    implicit = recipe is not None and recipe.get("quantization") == Quantization.IMPLICIT
    logger = backend.logger()
    builder, network, _parser = network_from_onnx(backend, onnx_path, logger, strongly_typed=not implicit)
    check_profile(profile, int(meta.get("hop", 1920)))
    cache_path = Path(timing_cache_path) if timing_cache_path else None
    previous = cache_path.read_bytes() if cache_path and cache_path.is_file() else b""
    config, cache = builder_config(backend, builder, network, profile, build, previous if cache_path else None)
    if implicit:
        apply_implicit_int8(backend, network, config, recipe)
    precisions = layer_precisions(network)
    log.info("building %s with %s %s (opt level %d, target %s)", plan_path.name, backend.name, backend.version,
             build.opt_level, backend.target(build.compute_capabilities))
    serialized, seconds = serialize(backend, builder, network, config, logger, onnx_path.name)
    save_plan(serialized, plan_path)
    log.info("built %s in %.1f s (%.1f MB)", plan_path.name, seconds, plan_path.stat().st_size / 1e6)
    if cache_path is not None:
        # TensorRT-RTX ignores timing caches; it still serializes an (empty) one, which keeps
        # the DVC output declared for both backends
        write_bytes(cache_path, bytes(memoryview(cache.serialize())))
    record = plan_record(backend, network, onnx_path, plan_path, profile=profile, build=build, seconds=seconds,
                         precisions=precisions, recipe=recipe)
    write_json(plan_path.with_suffix(".json"), record)
    return record
