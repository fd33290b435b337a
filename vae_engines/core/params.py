"""Typed, frozen params, one dataclass per params.yaml section, validated at the edge.

`load(params_file)` reads the whole file once and returns `Params`; stage entry points
pick their section from it. Every mistake -- an unknown key, a wrong type, a value out of
range -- is a `UserError` naming the file, the key path, what was given and what is
allowed. Nothing falls back to a default silently. Library code never reads params.yaml:
it receives these objects.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from vae_engines.core.errors import UserError

Calibrator = Literal["entropy", "minmax", "percentile", "mse", "trt_cache"]
Backend = Literal["auto", "tensorrt", "tensorrt_rtx"]
VARIANT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
RESERVED_VARIANTS = ("fp16", "fp32")


@dataclass(frozen=True)
class ModelParams:
    """Which VAE weights the pipeline runs.

    source: `fixture` is the small trained model shipped in the package (the ACE-Step 1.5
    structure at reduced width, trained on the built-in music-like corpus); `seeded` builds
    `architecture` with weights drawn from `seed` (for shapes and speed; its audio is
    noise); `checkpoint` loads `checkpoint`, a diffusers AutoencoderOobleck folder
    (config.json + safetensors, as ACE-Step ships `vae/`) or a bare .safetensors state dict
    of the whole VAE or of the decoder alone.
    """

    source: Literal["fixture", "seeded", "checkpoint"] = "fixture"
    architecture: Literal["acestep-1.5", "acestep-1.5-small"] = "acestep-1.5"
    seed: int = 0
    checkpoint: str | None = None

    def validate(self, where: str) -> None:
        if self.source == "checkpoint" and not self.checkpoint:
            raise UserError(f"{where}.checkpoint: required when source is 'checkpoint'; give the path of a "
                            "diffusers VAE folder or a .safetensors file")
        if self.source != "checkpoint" and self.checkpoint:
            raise UserError(f"{where}.checkpoint: set but source is '{self.source}'; set source: checkpoint to load "
                            "it, or remove checkpoint")


@dataclass(frozen=True)
class ProfileParams:
    """The engines' optimization profile, in latent frames (25 per second) and batch.

    The calibration and held-out latents default to `opt_frames`: calibrating at another
    length than the one the engine runs at cost the reference project 4 dB.
    """

    min_frames: int = 8
    opt_frames: int = 16
    max_frames: int = 32
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
    """ONNX export. fp16_io: the fp16 model's input/output type (`float32` adds casts
    inside the graph so callers keep float32 buffers)."""

    opset: int = 18
    fp16_io: Literal["float32", "float16"] = "float32"

    def validate(self, where: str) -> None:
        if not 17 <= self.opset <= 23:
            raise UserError(f"{where}.opset: {self.opset} is outside 17..23 (Q/DQ per-channel axis needs >= 13, "
                            "the exporter's Snake and ConvTranspose need >= 17)")


@dataclass(frozen=True)
class LatentSetParams:
    """A set of latents: calibration or held-out.

    source: `synthetic` (seeded normal latents; with `stats` = a folder of real latents,
    their per-channel mean and std), `audio` (a folder of audio files encoded by the VAE
    encoder; the built-in corpus when `path` is null), `latents` (a folder of .npy / .pt /
    .safetensors tensors [1, 64, T] or [64, T]). frames: window length, null = the
    profile's opt_frames.
    """

    source: Literal["synthetic", "audio", "latents"] = "synthetic"
    count: int = 8
    frames: int | None = None
    seed: int = 0
    path: str | None = None
    stats: str | None = None

    def validate(self, where: str) -> None:
        if self.count < 1:
            raise UserError(f"{where}.count: {self.count} must be at least 1")
        if self.frames is not None and self.frames < 1:
            raise UserError(f"{where}.frames: {self.frames} must be at least 1 (or null for the profile's opt_frames)")
        if self.source == "latents" and not self.path:
            raise UserError(f"{where}.path: required when source is 'latents'; give a folder of latent tensors")
        if self.stats and self.source != "synthetic":
            raise UserError(f"{where}.stats: only used by source 'synthetic'; remove it")

    def window(self, profile: ProfileParams) -> int:
        return self.frames if self.frames is not None else profile.opt_frames


@dataclass(frozen=True)
class HoldoutParams(LatentSetParams):
    """Held-out evaluation data: latents of another seed than calibration, plus
    `audio_clips` generated clips of `audio_seconds` for the wav round-trip."""

    count: int = 4
    seed: int = 1
    audio_clips: int = 2
    audio_seconds: float = 2.0

    def validate(self, where: str) -> None:
        super().validate(where)
        if self.audio_clips < 0 or self.audio_seconds <= 0:
            raise UserError(f"{where}: audio_clips must be >= 0 and audio_seconds > 0")


@dataclass(frozen=True)
class Int8Variant:
    """One INT8 recipe.

    calibrator: entropy | minmax | percentile (with `percentile`) | mse | trt_cache (scales
    from a TensorRT 10 calibration cache file, `cache`).
    keep_first / keep_last: leading / trailing convolution layers (ConvTranspose included)
    left without Q/DQ, in the network's float type. exclude_nodes / exclude_op_types:
    further layers left in float. max_latents: use only the first N calibration latents.
    num_bins: histogram bins for entropy / percentile / mse. target_psnr_db: makes the
    variant `auto`: the fewest further layers (most sensitive first) are kept in float until
    the model reaches this peak PSNR against `target_reference` (fp32 or fp16) on the first
    `auto_latents` calibration latents (each ranking step decodes them once per layer);
    held-out quality is then measured by its evaluate stage.
    """

    calibrator: Calibrator
    percentile: float | None = None
    keep_first: int = 0
    keep_last: int = 0
    exclude_nodes: tuple[str, ...] = ()
    exclude_op_types: tuple[Literal["Conv", "ConvTranspose"], ...] = ()
    max_latents: int | None = None
    num_bins: int = 2048
    cache: str | None = None
    target_psnr_db: float | None = None
    target_reference: Literal["fp32", "fp16"] = "fp32"
    auto_latents: int = 2

    def validate(self, where: str) -> None:
        if (self.calibrator == "trt_cache") != (self.cache is not None):
            raise UserError(f"{where}.cache: a TensorRT calibration cache path goes with calibrator 'trt_cache' "
                            "(and only with it)")
        if self.calibrator == "percentile":
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
        if self.max_latents is not None and self.max_latents < 1:
            raise UserError(f"{where}.max_latents: must be >= 1 or null")
        if self.auto_latents < 1:
            raise UserError(f"{where}.auto_latents: must be >= 1")
        if not 128 <= self.num_bins <= 65536:
            raise UserError(f"{where}.num_bins: {self.num_bins} is outside 128..65536")


@dataclass(frozen=True)
class SensitivityParams:
    """Per-layer sensitivity analysis (report chart): each layer alone in INT8 with
    `calibrator` ranges, on `max_latents` held-out latents, against fp32."""

    calibrator: Calibrator = "entropy"
    max_latents: int = 4

    def validate(self, where: str) -> None:
        if self.calibrator == "trt_cache" or self.max_latents < 1:
            raise UserError(f"{where}: calibrator must be entropy, minmax, percentile or mse and max_latents >= 1")


@dataclass(frozen=True)
class BuildParams:
    """Engine builds. backend: auto (TensorRT if importable, else TensorRT-RTX) |
    tensorrt | tensorrt_rtx. compute_capabilities: TensorRT-RTX targets, [] = portable
    (every GPU it supports), e.g. ["12.0"] for an RTX 5090. workspace_mib: memory-pool
    limit. opt_level: builder optimization level 0..5."""

    backend: Backend = "tensorrt_rtx"
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
class EvaluateParams:
    """Quality evaluation. clip_seconds: length of the wav clips written to listen to."""

    clip_seconds: float = 2.0
    threads: int = 2

    def validate(self, where: str) -> None:
        if self.clip_seconds <= 0 or self.threads < 1:
            raise UserError(f"{where}: clip_seconds must be > 0 and threads >= 1")


@dataclass(frozen=True)
class BenchParams:
    """Latency sweep: frame counts x batch sizes, `warmup` untimed then `repeats` timed
    calls; streaming: a latent of `stream_frames` decoded in windows of `stream_window`
    frames overlapping by `stream_overlap`."""

    frames: tuple[int, ...] = (8, 16, 32)
    batches: tuple[int, ...] = (1,)
    warmup: int = 1
    repeats: int = 3
    threads: int = 2
    stream_frames: int = 64
    stream_window: int = 16
    stream_overlap: int = 4
    runtimes: tuple[Literal["onnxruntime", "torch", "tensorrt"], ...] = ("onnxruntime", "torch", "tensorrt")

    def validate(self, where: str) -> None:
        if not self.frames or min(self.frames) < 1 or not self.batches or min(self.batches) < 1:
            raise UserError(f"{where}: frames and batches must be non-empty lists of positive integers")
        if self.repeats < 1 or self.warmup < 0 or self.threads < 1:
            raise UserError(f"{where}: repeats >= 1, warmup >= 0 and threads >= 1 are required")
        if not 0 <= self.stream_overlap < self.stream_window <= self.stream_frames:
            raise UserError(f"{where}: streaming needs 0 <= stream_overlap < stream_window <= stream_frames")


@dataclass(frozen=True)
class Params:
    model: ModelParams = field(default_factory=ModelParams)
    profile: ProfileParams = field(default_factory=ProfileParams)
    export: ExportParams = field(default_factory=ExportParams)
    calibration: LatentSetParams = field(default_factory=LatentSetParams)
    holdout: HoldoutParams = field(default_factory=HoldoutParams)
    int8: dict[str, Int8Variant] = field(default_factory=dict)
    sensitivity: SensitivityParams = field(default_factory=SensitivityParams)
    build: BuildParams = field(default_factory=BuildParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    bench: BenchParams = field(default_factory=BenchParams)

    def validate(self, where: str) -> None:
        for name in self.int8:
            if not VARIANT_NAME.match(name) or name in RESERVED_VARIANTS:
                raise UserError(f"int8: variant name {name!r} is not usable; use letters, digits and '_' "
                                f"starting with a letter, not {' or '.join(RESERVED_VARIANTS)} (it names DVC stages "
                                "and files)")

    def variant_names(self) -> list[str]:
        """fp16 first, then the INT8 variants in params order."""
        return ["fp16", *self.int8]


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _describe(tp: Any) -> str:
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


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    bad = UserError(f"{where}: {value!r} is not {_describe(tp)}")
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
        raise UserError(f"{_join(where, unknown[0])}: unknown key; allowed keys here are {', '.join(fields)}")
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
    import yaml  # lazy: keeps `--help` fast

    path = Path(params_file)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise UserError(f"{path} does not exist; run from the project root or pass --params") from exc
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
