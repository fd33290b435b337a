"""Every choice params.yaml offers, one table each: the names live here and nowhere else.

The params schema (core.params) types its fields with these enums, so an unknown name is
an error listing the allowed ones; the code that acts on a choice keeps one table keyed by
the enum (quant.calibrators.CALIBRATORS, quant.qdq.PLACEMENTS, runtime.load.KINDS, ...), and
a test holds every table complete. Members compare equal to their strings, so records and
params files keep plain names.
"""

from __future__ import annotations

from enum import StrEnum


class Calibrator(StrEnum):
    """How an INT8 variant gets its activation ranges (quant.calibrators, quant.search)."""

    ENTROPY = "entropy"  # TensorRT's entropy calibration on the |x| histogram
    MINMAX = "minmax"  # the largest |x|
    PERCENTILE = "percentile"  # the |x| percentile `percentile`
    MSE = "mse"  # the range of least expected int8 error
    SEARCH = "search"  # ranges chosen by decoding the calibration latents
    TRT_CACHE = "trt_cache"  # scales of a TensorRT 10 calibration cache

    @property
    def from_statistics(self) -> bool:
        """Computed from the shared activation histograms alone."""
        return self in (Calibrator.ENTROPY, Calibrator.MINMAX, Calibrator.PERCENTILE, Calibrator.MSE)


class Placement(StrEnum):
    """Where Q/DQ goes in an explicit INT8 graph (quant.qdq)."""

    CONV_INPUTS = "conv_inputs"  # every quantized convolution's input and weight
    FUSED = "fused"  # TensorRT's placement rules for this network (quant.qdq says which)


FP8_MAX = 448.0  # the largest finite float8 e4m3fn: an fp8 scale is a range over it, as int8's is over 127


class QuantFormat(StrEnum):
    """The 8-bit type a quantized variant's convolutions read (quant.qdq.FORMATS)."""

    INT8 = "int8"  # symmetric int8, per-tensor activations, per-channel weights
    FP8 = "fp8"  # float8 e4m3fn, the same scales over 448: Ada, Hopper and later (compute capability 8.9+)


class Quantization(StrEnum):
    """How TensorRT learns an INT8 variant's precision."""

    EXPLICIT = "explicit"  # Q/DQ nodes in the ONNX: TensorRT 10, 11 and TensorRT-RTX
    IMPLICIT = "implicit"  # per-tensor dynamic ranges + INT8/FP16 builder flags: TensorRT 10.x only


class FloatType(StrEnum):
    """The type of everything an INT8 variant does not run in INT8."""

    FP16 = "fp16"
    FP32 = "fp32"


class Precision(StrEnum):
    """Float precisions of compiled PyTorch engines and PyTorch references."""

    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"


class Backend(StrEnum):
    """Which TensorRT builds the plans (trt.backend)."""

    AUTO = "auto"  # TensorRT where installed, else TensorRT-RTX
    TENSORRT = "tensorrt"
    TENSORRT_RTX = "tensorrt_rtx"


class EngineKind(StrEnum):
    """What an engine file is; runtime.load picks its runner from this."""

    TENSORRT = "tensorrt"  # a full TensorRT plan
    TENSORRT_RTX = "tensorrt_rtx"  # a TensorRT-RTX plan
    TORCH = "torch"  # a compiled PyTorch package (compiled.build)
    ONNX = "onnx"  # an ONNX graph, run by ONNX Runtime


class Device(StrEnum):
    """Where the PyTorch work of the stages runs."""

    AUTO = "auto"  # CUDA when PyTorch sees a GPU, else the CPU
    CPU = "cpu"
    CUDA = "cuda"


class Runtime(StrEnum):
    """What bench.runtimes can time."""

    TENSORRT = "tensorrt"  # the plans, where a GPU can run them
    TORCH = "torch"  # eager PyTorch and the compiled PyTorch engines, on the compute device
    ONNXRUNTIME = "onnxruntime"  # the variants' graphs on ONNX Runtime's CPU provider


class Kernels(StrEnum):
    """What a compiled PyTorch engine runs inside (compiled.build)."""

    AUTO = "auto"  # fused on a GPU for fp16 (and always for INT8 engines), inductor otherwise
    FUSED = "fused"  # one fused-convolution op per layer: Triton kernels on a GPU (kernels.op)
    INDUCTOR = "inductor"  # the channels-last decoder, compiled and fused by Inductor


class CompileMode(StrEnum):
    """torch.compile modes a compiled PyTorch engine may be built with."""

    DEFAULT = "default"
    MAX_AUTOTUNE = "max-autotune-no-cudagraphs"
    REDUCE_OVERHEAD = "reduce-overhead"  # CUDA graphs: fewer launches per call

    @property
    def inductor_mode(self) -> str:
        """What torch.compile is given. reduce-overhead compiles like default: the runtime
        captures one CUDA graph per input shape itself (runtime.compiled.CudaGraphs), which
        leaves less host work per call than Inductor's CUDA graph trees."""
        return "default" if self is CompileMode.REDUCE_OVERHEAD else str(self)
