"""Typed, frozen params, one dataclass per params.yaml section, validated at the edge.

`load(params_file)` reads the whole file once and returns `Params`; stage entry points
pick their section from it. Every mistake -- an unknown key, a wrong type, a value out of
range -- is a `UserError` naming the file, the key path, what was given and what is
allowed. Nothing falls back to a default silently. Library code never reads params.yaml:
it receives these objects.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from vae_engines.core.choices import (Backend, Calibrator, CompileMode, Device, FloatType, Kernels, Placement,
                                      Precision, QuantFormat, Quantization, Runtime)
from vae_engines.core.errors import UserError

VARIANT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
RESERVED_VARIANTS = ("fp16", "fp32")
TRT_CACHE_DIR = "data/trt_caches"  # the folder dvc.yaml tracks for TensorRT calibration caches
# keys and values of earlier versions, with where they went
MOVED = {
    "architecture": "the architecture comes from model.checkpoint's config.json; for the full size use "
                    "checkpoint: vae_engines/fixtures/acestep-1.5 with source: seeded",
    "max_latents": "statistics are collected once per calibration set; set calibration.count",
    "num_bins": "the histogram has TensorRT's 2048 bins",
    "threads": "set compute.threads",
    "stats": "synthetic latents take their statistics from `path`",
    "audio_clips": "renamed holdout.roundtrip_clips",
    "audio_seconds": "renamed holdout.roundtrip_seconds",
    "torch_compile": "compiled PyTorch engines are built by the compile stages: set compile.precisions",
}


@dataclass(frozen=True)
class ModelParams:
    """Which VAE weights the pipeline runs.

    checkpoint: always a path, so DVC tracks it: a diffusers AutoencoderOobleck folder
    (config.json + safetensors, as ACE-Step ships `vae/`), a checkpoint root holding vae/,
    or a bare .safetensors state dict of the whole VAE or of the decoder alone. The default
    is the small trained model shipped in the package. source: `checkpoint` loads its
    weights; `seeded` builds its architecture (config.json) with weights drawn from `seed`
    (shapes and speed only; vae_engines/fixtures/acestep-1.5 is the full-size architecture).
    """

    source: Literal["checkpoint", "seeded"] = "checkpoint"
    checkpoint: str = "vae_engines/fixtures/acestep15-small"
    seed: int = 0

    def validate(self, where: str) -> None:
        if not self.checkpoint:
            raise UserError(f"{where}.checkpoint: empty; give the path of a diffusers VAE folder or a .safetensors file")


@dataclass(frozen=True)
class ComputeParams:
    """Where the heavy stages run (PyTorch): encoding audio, activation statistics, range
    search, sensitivity, reference decodes and quality. auto = CUDA when PyTorch sees a GPU,
    else the CPU. threads: CPU threads for PyTorch and ONNX Runtime."""

    device: Device = Device.AUTO
    threads: int = 2

    def validate(self, where: str) -> None:
        if self.threads < 1:
            raise UserError(f"{where}.threads: {self.threads} must be at least 1")


@dataclass(frozen=True)
class ProfileParams:
    """The engines' optimization profile, in latent frames (25 per second) and batch.

    The calibration and held-out latents default to `opt_frames`: calibrating at another
    length than the one the engine runs at cost the reference project 4 dB.
    """

    min_frames: int = 16
    opt_frames: int = 32
    max_frames: int = 128
    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = 1

    def validate(self, where: str) -> None:
        for kind in ("frames", "batch"):
            lo, opt, hi = (getattr(self, f"{p}_{kind}") for p in ("min", "opt", "max"))
            if lo < 1:
                raise UserError(f"{where}.min_{kind}: {lo} must be at least 1")
            if not lo <= opt <= hi:
                raise UserError(f"{where}: {kind} must satisfy min <= opt <= max, got {lo} / {opt} / {hi}")


@dataclass(frozen=True)
class ExportParams:
    """ONNX export. opset: 19+ (Q/DQ in fp16 needs 19). fp16_io: the I/O type of fp16 and
    INT8+fp16 graphs (`float32` adds casts inside the graph so callers keep float32 buffers)."""

    opset: int = 19
    fp16_io: Literal["float32", "float16"] = "float32"

    def validate(self, where: str) -> None:
        if not 17 <= self.opset <= 23:
            raise UserError(f"{where}.opset: {self.opset} is outside 17..23 (the exporter's Snake and ConvTranspose "
                            "need >= 17, fp16 Q/DQ >= 19)")


@dataclass(frozen=True)
class CorpusParams:
    """The built-in music-like corpus the `corpus` stage writes to data/corpus/: the default
    calibration and held-out folder. A 60 s profile needs clips of 60 s or more."""

    clips: int = 12
    seconds: float = 4.0
    seed: int = 0
    sampling_rate: int = 48000

    def validate(self, where: str) -> None:
        if self.clips < 1 or self.seconds <= 0 or self.sampling_rate < 8000:
            raise UserError(f"{where}: clips must be >= 1, seconds > 0 and sampling_rate >= 8000")


@dataclass(frozen=True)
class LatentSetParams:
    """A set of latents: calibration or held-out.

    source: `audio` (a folder of audio files, encoded by the VAE's encoder), `latents` (a
    folder of .npy / .pt / .safetensors tensors [1, 64, T] or [64, T]), `synthetic` (seeded
    normal latents with the per-channel mean and std of the latents in `path`), `normal`
    (seeded unit-normal latents: the scale a diffusion model hands the decoder; `path` is
    not read). path: a folder, tracked by DVC. frames: window length, null = the profile's
    opt_frames. seed: synthetic and normal only.
    """

    source: Literal["audio", "latents", "synthetic", "normal"] = "audio"
    path: str = "data/corpus"
    count: int = 8
    frames: int | None = None
    seed: int = 0

    def validate(self, where: str) -> None:
        if self.count < 1:
            raise UserError(f"{where}.count: {self.count} must be at least 1")
        if self.frames is not None and self.frames < 1:
            raise UserError(f"{where}.frames: {self.frames} must be at least 1 (or null for the profile's opt_frames)")
        if not self.path:
            raise UserError(f"{where}.path: empty; give a folder")


@dataclass(frozen=True)
class HoldoutParams(LatentSetParams):
    """Held-out evaluation data, disjoint from calibration data: when both name one folder,
    its files are split (`fraction` of them held out); different folders may not share a
    file. roundtrip_clips: held-out audio clips of `roundtrip_seconds` for the wav
    round-trip (audio sources only; 0 turns it off)."""

    count: int = 8
    seed: int = 1
    fraction: float = 0.25
    roundtrip_clips: int = 2
    roundtrip_seconds: float = 4.0

    def validate(self, where: str) -> None:
        super().validate(where)
        if not 0 < self.fraction < 1:
            raise UserError(f"{where}.fraction: {self.fraction} must be between 0 and 1")
        if self.roundtrip_clips < 0 or self.roundtrip_seconds <= 0:
            raise UserError(f"{where}: roundtrip_clips must be >= 0 and roundtrip_seconds > 0")


@dataclass(frozen=True)
class Int8Variant:
    """One INT8 recipe.

    calibrator: core.choices.Calibrator (entropy = TensorRT's; search = ranges chosen by
    decoding the first `search_latents` calibration latents, null = all, see quant.search;
    trt_cache = the scales of a TensorRT 10 calibration cache `cache`, a file in
    data/trt_caches/). percentile: for calibrator percentile.
    placement: where Q/DQ goes (quant.qdq): conv_inputs (every quantized convolution's
    input) or fused (TensorRT's placement rules: ConvTranspose in float, and Q/DQ on each
    residual Add's skip input so the convolution before it can fuse the Add).
    quantization: explicit (Q/DQ in the graph: TensorRT 10, 11, TensorRT-RTX) or implicit
    (the ranges as per-tensor dynamic ranges, INT8 + FP16 builder flags, layers kept in
    float pinned to fp16: full TensorRT 10.x only; trt.implicit).
    float_type: the type of everything not in INT8 (Snake, residual adds, biases, kept
    layers): fp16 (what TensorRT's implicit INT8 + FP16 ran) or fp32.
    keep_first / keep_last: leading / trailing convolution layers (ConvTranspose included)
    left in float. exclude_nodes / exclude_op_types: further layers left in float.
    target_psnr_db: makes the variant `auto`: the fewest further layers (most sensitive
    first) are kept in float until the model reaches this peak PSNR against
    `target_reference` (fp32, or fp16 computed in fp16) on the first `auto_latents`
    calibration latents; held-out quality is then measured by its evaluate stage.
    equalize: fold per-channel scales through Snake into the fp32 graph before Q/DQ
    (quant.equalize: cross-layer equalization, the same decode in float), so every engine
    made from the variant gets it. equalize_migration: how much of each channel's range
    moves into the weights, 0..1 (SmoothQuant's alpha); null = the candidate that decodes
    the calibration latents best.
    range_margin: every range times this factor (>= 1), room for peaks the calibration
    latents did not show; `auto` = the factor that decodes each half of the calibration
    latents best from the other half's ranges (quant.margin).
    format: int8, or fp8 (float8 e4m3fn: the same ranges over 448, explicit Q/DQ on the
    convolutions' inputs; quant.qdq). The section keeps its name: every quantized variant
    lives in `int8`.
    """

    calibrator: Calibrator
    percentile: float | None = None
    placement: Placement = Placement.CONV_INPUTS
    quantization: Quantization = Quantization.EXPLICIT
    float_type: FloatType = FloatType.FP16
    keep_first: int = 0
    keep_last: int = 0
    exclude_nodes: tuple[str, ...] = ()
    exclude_op_types: tuple[Literal["Conv", "ConvTranspose"], ...] = ()
    cache: str | None = None
    search_latents: int | None = None
    search_sweeps: int = 1
    target_psnr_db: float | None = None
    target_reference: Literal["fp32", "fp16"] = "fp32"
    auto_latents: int = 2
    equalize: bool = False
    equalize_migration: float | None = None
    range_margin: float | Literal["auto"] = 1.0
    format: QuantFormat = QuantFormat.INT8

    def validate(self, where: str) -> None:
        self._validate_cache(where)
        if self.format == QuantFormat.FP8 and self.quantization == Quantization.IMPLICIT:
            raise UserError(f"{where}.format: fp8 needs explicit Q/DQ (TensorRT's implicit quantization is INT8 "
                            "only); remove quantization: implicit")
        if self.format == QuantFormat.FP8 and self.placement != Placement.CONV_INPUTS:
            raise UserError(f"{where}.placement: {self.placement} quantizes residual skips for TensorRT's int8 "
                            "fusions; an fp8 variant uses conv_inputs (remove placement)")
        if self.range_margin != "auto" and not 1 <= self.range_margin <= 4:
            raise UserError(f"{where}.range_margin: {self.range_margin} is outside 1..4 (a factor on the calibrated "
                            "ranges; to clip more, use calibrator percentile or mse) or `auto`")
        if self.range_margin == "auto" and self.calibrator in (Calibrator.SEARCH, Calibrator.TRT_CACHE):
            raise UserError(f"{where}.range_margin: auto cross-validates ranges made from the statistics of half the "
                            f"calibration latents, which calibrator {self.calibrator} does not use; give range_margin "
                            "a number")
        if self.equalize_migration is not None and not self.equalize:
            raise UserError(f"{where}.equalize_migration: only used with equalize: true; remove it or set equalize")
        if self.equalize_migration is not None and not 0 <= self.equalize_migration <= 1:
            raise UserError(f"{where}.equalize_migration: {self.equalize_migration} is outside 0..1 (null: chosen on "
                            "the calibration latents)")
        if self.equalize and self.calibrator == Calibrator.TRT_CACHE:
            raise UserError(f"{where}.equalize: a TensorRT cache holds the ranges of the graph it was made from, not "
                            "of an equalized one; use a calibrator that reads this project's statistics")
        if self.calibrator == Calibrator.PERCENTILE:
            if self.percentile is None:
                raise UserError(f"{where}.percentile: required for calibrator 'percentile', e.g. 99.99")
            if not 0 < self.percentile <= 100:
                raise UserError(f"{where}.percentile: {self.percentile} is outside (0, 100]")
        elif self.percentile is not None:
            raise UserError(f"{where}.percentile: only used by calibrator 'percentile'; remove it")
        if self.keep_first < 0 or self.keep_last < 0:
            raise UserError(f"{where}: keep_first and keep_last must be >= 0")
        if self.target_psnr_db is not None and not 10 <= self.target_psnr_db <= 120:
            raise UserError(f"{where}.target_psnr_db: {self.target_psnr_db} is outside 10..120 dB")
        if self.auto_latents < 1 or (self.search_latents or 1) < 1 or self.search_sweeps < 1:
            raise UserError(f"{where}: auto_latents, search_latents (or null) and search_sweeps must be >= 1")
        if self.quantization == Quantization.IMPLICIT:
            self._validate_implicit(where)

    def _validate_cache(self, where: str) -> None:
        if (self.calibrator == Calibrator.TRT_CACHE) != (self.cache is not None):
            raise UserError(f"{where}.cache: a TensorRT calibration cache path goes with calibrator 'trt_cache' "
                            "(and only with it)")
        if self.cache is not None:
            inside = Path(self.cache).as_posix()
            if Path(self.cache).is_absolute() or not inside.startswith(TRT_CACHE_DIR + "/") or ".." in inside:
                raise UserError(f"{where}.cache: {self.cache} must be a file in {TRT_CACHE_DIR}/ (the folder dvc.yaml "
                                f"tracks for TensorRT caches); copy it there")

    def _validate_implicit(self, where: str) -> None:
        """Implicit INT8 is TensorRT's own precision choice: what the recipe can say is less."""
        if self.placement != Placement.CONV_INPUTS:
            raise UserError(f"{where}.placement: implicit INT8 has no Q/DQ to place; remove placement")
        if self.float_type != FloatType.FP16:
            raise UserError(f"{where}.float_type: implicit INT8 runs the rest in fp16 (the FP16 builder flag); "
                            "remove float_type")
        if self.target_psnr_db is not None or self.calibrator == Calibrator.SEARCH:
            raise UserError(f"{where}: auto (target_psnr_db) and search decode the Q/DQ graph, which implicit INT8 "
                            "has not; use a histogram calibrator or trt_cache with keep/exclude")

    @property
    def is_auto(self) -> bool:
        return self.target_psnr_db is not None


@dataclass(frozen=True)
class SensitivityParams:
    """Per-layer sensitivity analysis (report chart): each layer alone in INT8 with
    `calibrator` ranges, on `max_latents` held-out latents, against fp32."""

    calibrator: Calibrator = Calibrator.ENTROPY
    max_latents: int = 2

    def validate(self, where: str) -> None:
        if self.max_latents < 1:
            raise UserError(f"{where}.max_latents: must be >= 1")
        if not self.calibrator.from_statistics:
            raise UserError(f"{where}.calibrator: {self.calibrator} does not work from the statistics alone; use "
                            "entropy, minmax, percentile or mse")


@dataclass(frozen=True)
class BuildParams:
    """Engine builds. backend: auto (TensorRT if importable, else TensorRT-RTX) |
    tensorrt | tensorrt_rtx. compute_capabilities: TensorRT-RTX targets, [] = portable
    (every GPU it supports), e.g. ["12.0"] for an RTX 5090. workspace_mib: memory-pool
    limit. opt_level: builder optimization level 0..5."""

    backend: Backend = Backend.TENSORRT_RTX
    opt_level: int = 3
    workspace_mib: int = 4096
    compute_capabilities: tuple[str, ...] = ()

    def validate(self, where: str) -> None:
        if not 0 <= self.opt_level <= 5:
            raise UserError(f"{where}.opt_level: {self.opt_level} is outside 0..5")
        if self.workspace_mib < 64:
            raise UserError(f"{where}.workspace_mib: {self.workspace_mib} is below 64")
        for cc in self.compute_capabilities:
            if not re.fullmatch(r"\d+\.\d+", cc):
                raise UserError(f"{where}.compute_capabilities: {cc!r} is not like '8.6' or '12.0'")


@dataclass(frozen=True)
class CompileParams:
    """Compiled PyTorch engines (compiled.build) for the compute device, exported with the
    profile's frames dynamic and compiled in `mode`: one per precision in `precisions`
    (engines/torch/<precision>.pt2), and one per INT8 variant named in `int8`
    (engines/torch_int8/<variant>.pt2, fused kernels with the variant's ranges; they need fp16
    in `precisions`, the engine they are timed against). kernels:
    fused (one fused-convolution op per layer, Triton on a GPU), inductor (the
    channels-last decoder fused by Inductor), auto (fused for fp16 on a GPU, else inductor).
    fp16 and bf16 need a GPU, unless kernels: fused (the op's CPU reference, fp16 storage)."""

    precisions: tuple[Precision, ...] = ()
    int8: tuple[str, ...] = ()
    kernels: Kernels = Kernels.AUTO
    mode: CompileMode = CompileMode.DEFAULT

    def validate(self, where: str) -> None:
        if len(set(self.precisions)) != len(self.precisions):
            raise UserError(f"{where}.precisions: {list(self.precisions)} names a precision twice")
        if len(set(self.int8)) != len(self.int8):
            raise UserError(f"{where}.int8: {list(self.int8)} names a variant twice")


@dataclass(frozen=True)
class EvaluateParams:
    """Quality evaluation. clip_seconds: length of the wav clips written to listen to."""

    clip_seconds: float = 4.0

    def validate(self, where: str) -> None:
        if self.clip_seconds <= 0:
            raise UserError(f"{where}.clip_seconds: must be > 0")


@dataclass(frozen=True)
class BenchParams:
    """Latency: every runtime at frames x batches, `warmup` untimed calls, then `repeats`
    rounds in which the runtimes take turns (so a slow moment of the machine hits all of
    them); streaming: a latent of `stream_frames` decoded in windows of `stream_window`
    frames overlapping by `stream_overlap`, stitched (runtime.stream). runtimes:
    tensorrt (each plan beside the fp16 plan, where a GPU can run them), torch (the
    PyTorch decoder eager at `torch_precisions` -- what an app runs today -- and the
    compiled engines, on the compute device), onnxruntime (each variant's graph beside the
    fp16 and fp32 graphs on ONNX Runtime's CPU provider: what the Q/DQ graph costs on a
    CPU, not INT8 speed). sweep: the PyTorch engines at this many lengths from the shortest
    to the longest bench frames, round and odd ones (cost per second of audio by length;
    0 = none)."""

    frames: tuple[int, ...] = (16, 32, 125)
    batches: tuple[int, ...] = (1,)
    warmup: int = 1
    repeats: int = 5
    stream_frames: int = 125
    stream_window: int = 32
    stream_overlap: int = 8
    runtimes: tuple[Runtime, ...] = (Runtime.TENSORRT, Runtime.TORCH)
    torch_precisions: tuple[Precision, ...] = (Precision.FP32, Precision.FP16, Precision.BF16)
    sweep: int = 12

    def validate(self, where: str) -> None:
        if self.sweep < 0 or self.sweep == 1:
            raise UserError(f"{where}.sweep: {self.sweep}; give 0 (no sweep) or at least 2 lengths")
        if not self.frames or min(self.frames) < 1 or not self.batches or min(self.batches) < 1:
            raise UserError(f"{where}: frames and batches must be non-empty lists of positive integers")
        if self.repeats < 3 or self.warmup < 0:
            raise UserError(f"{where}: repeats >= 3 (a spread needs several rounds) and warmup >= 0 are required")
        if not 0 <= self.stream_overlap < self.stream_window <= self.stream_frames:
            raise UserError(f"{where}: streaming needs 0 <= stream_overlap < stream_window <= stream_frames")


@dataclass(frozen=True)
class ReportParams:
    """The report's first screen: the engine to ship on the machine that ran the pipeline, for
    held-out quality of at least `quality_target_db` peak PSNR against fp32 (the fastest
    engine that reaches it, with its speed, memory and quality)."""

    quality_target_db: float = 40.0

    def validate(self, where: str) -> None:
        if not 0 < self.quality_target_db < 200:
            raise UserError(f"{where}.quality_target_db: {self.quality_target_db}; give a peak PSNR in dB, e.g. 40")


@dataclass(frozen=True)
class Params:
    model: ModelParams = field(default_factory=ModelParams)
    compute: ComputeParams = field(default_factory=ComputeParams)
    profile: ProfileParams = field(default_factory=ProfileParams)
    export: ExportParams = field(default_factory=ExportParams)
    corpus: CorpusParams = field(default_factory=CorpusParams)
    calibration: LatentSetParams = field(default_factory=LatentSetParams)
    holdout: HoldoutParams = field(default_factory=HoldoutParams)
    int8: dict[str, Int8Variant] = field(default_factory=dict)
    sensitivity: SensitivityParams = field(default_factory=SensitivityParams)
    build: BuildParams = field(default_factory=BuildParams)
    compile: CompileParams = field(default_factory=CompileParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    bench: BenchParams = field(default_factory=BenchParams)
    report: ReportParams = field(default_factory=ReportParams)

    def validate(self, where: str) -> None:
        """Checks across sections (each section checked itself first)."""
        for name in self.int8:
            if not VARIANT_NAME.match(name) or name in RESERVED_VARIANTS:
                raise UserError(f"int8: variant name {name!r} is not usable; use letters, digits and '_' "
                                f"starting with a letter, not {' or '.join(RESERVED_VARIANTS)} (it names DVC stages "
                                "and files)")
        p, b = self.profile, self.bench
        outside = [f for f in (*b.frames, b.stream_window) if not p.min_frames <= f <= p.max_frames]
        if outside:
            raise UserError(f"bench.frames / bench.stream_window: {outside[0]} frames is outside the engines' profile "
                            f"{p.min_frames}..{p.max_frames}; the engine cannot run it: change bench or profile")
        if any(not p.min_batch <= batch <= p.max_batch for batch in b.batches):
            raise UserError(f"bench.batches: {list(b.batches)} is outside the profile's batch "
                            f"{p.min_batch}..{p.max_batch}; change bench.batches or the profile")
        c, h = self.calibration, self.holdout
        if c.source in ("synthetic", "normal") and h.source in ("synthetic", "normal") and c.seed == h.seed:
            raise UserError(f"holdout.seed: {h.source} held-out latents need another seed than calibration.seed")
        unknown = [name for name in self.compile.int8 if name not in self.int8]
        if unknown:
            raise UserError(f"compile.int8: {unknown[0]!r} is not an INT8 variant of this params.yaml; known: "
                            f"{', '.join(self.int8) or 'none'}")
        if self.compile.int8 and Precision.FP16 not in self.compile.precisions:
            raise UserError(f"compile.int8: {list(self.compile.int8)} needs fp16 in compile.precisions: an INT8 "
                            "engine is timed against the compiled fp16 engine it has to beat; add it "
                            "(compile: {precisions: [fp16]}, on a GPU)")
        fp16 = [name for name, v in self.int8.items() if v.float_type == "fp16"]
        if fp16 and self.export.opset < 19:
            raise UserError(f"export.opset: {self.export.opset}, but int8.{fp16[0]} has float_type fp16, whose Q/DQ "
                            "needs opset >= 19; raise export.opset or set float_type: fp32")

    def variant_names(self) -> list[str]:
        """fp16 first, then the INT8 variants in params order."""
        return ["fp16", *self.int8]

    def variant(self, name: str) -> Int8Variant | None:
        """The INT8 recipe `name` (None for fp16); an unknown name is an error listing the known ones."""
        if name == "fp16":
            return None
        if name not in self.int8:
            raise UserError(f"int8 has no variant {name!r}; known: {', '.join(self.variant_names())}")
        return self.int8[name]


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _describe(tp: Any) -> str:
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(repr(m.value) for m in tp)
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe(a) for a in typing.get_args(tp))
    if origin in (tuple, list):
        return f"a list of ({_describe(typing.get_args(tp)[0])})"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping with keys " + ", ".join(f.name for f in dataclasses.fields(tp))
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


# values a user may reasonably try under the wrong key: key -> value -> where it goes
VALUE_HINTS = {"float_type": {"fp8": "float8 Q/DQ is the variant's `format: fp8`"}}


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    hint = VALUE_HINTS.get(where.rsplit(".", 1)[-1], {}).get(value) if isinstance(value, str) else None
    bad = UserError(f"{where}: {value!r} is not {_describe(tp)}" + (f"; {hint}" if hint else ""))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if value not in {m.value for m in tp}:
            raise bad
        return tp(value)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise bad
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None:
            if type(None) in options:
                return None
            raise bad
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(option, value, where)
            except UserError:
                continue
        raise bad
    if origin in (tuple, list):
        if not isinstance(value, list):
            raise bad
        return tuple(_convert(typing.get_args(tp)[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise bad
        item_type = typing.get_args(tp)[1]
        return {str(k): _convert(item_type, v, _join(where, str(k))) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_mapping(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    raise TypeError(f"unsupported params type {tp!r}")


def from_mapping(cls: type, data: Any, where: str) -> Any:
    """Build dataclass `cls` from a YAML mapping, checking keys, types and ranges."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{where or 'top level'}: expected {_describe(cls)}, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        hint = f" ({MOVED[unknown[0]]})" if unknown[0] in MOVED else ""
        raise UserError(f"{_join(where, unknown[0])}: unknown key{hint}; allowed keys here are {', '.join(fields)}")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], _join(where, name))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise UserError(f"{where}.{name}: required ({_describe(hints[name])})")
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate(where)
    return obj


def load(params_file: str | Path) -> Params:
    """Read and validate the whole params file."""
    path = Path(params_file)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise UserError(f"{path} does not exist; run from the project root (where params.yaml is)") from exc
    except yaml.YAMLError as exc:
        raise UserError(f"{path} is not valid YAML ({str(exc).splitlines()[0]}); fix its syntax") from exc
    try:
        return from_mapping(Params, data, "")
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None


def section_hash(*sections: Any) -> str:
    """A short, stable hash of params sections: provenance that says which params made a number."""
    blob = json.dumps([dataclasses.asdict(s) if dataclasses.is_dataclass(s) else s for s in sections],
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
