"""What every stage entry point shares: logging, user errors as one line, clean kills.

A `UserError` prints as one line on stderr and exits 1; with --debug (or
VAE_ENGINES_DEBUG=1) the traceback is shown too. Running out of GPU or host memory is a
user's matter too (one line naming what to shrink). Any other exception is a bug and
keeps its traceback. SIGTERM becomes SystemExit, so in-flight temporaries are removed on the
way out; SIGKILL cannot be caught, and the next run sweeps what it left. A stage that succeeds
writes its peak GPU memory where `vae-engines repro` asks it to (core/gpu_memory.py), so the
driver can fit stages side by side on the GPU.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import warnings
from collections.abc import Callable, Sequence

from vae_engines.core.errors import UserError
from vae_engines.core.gpu_memory import MEMORY_RECORD_ENV, write_stage_peak

NOISY_LOGGERS = ("onnx_ir", "onnxscript", "torch", "diffusers", "matplotlib", "PIL", "numexpr")


def setup_logging(debug: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, format="%(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    # the ONNX exporter warns that torchvision's ops are not registered; this project has none
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    if not debug:
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module="torch")


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.add_argument("--debug", action="store_true", help="show tracebacks of user errors")
    return p


def _out_of_memory(exc: Exception) -> str | None:
    """"GPU" or "host" where `exc` says a device ran out of memory, else None. PyTorch raises
    torch.cuda.OutOfMemoryError from its allocator, but a failed copy to the device
    (`tensor.to("cuda")`) surfaces as torch.AcceleratorError "CUDA error: out of memory"."""
    if isinstance(exc, MemoryError):
        return "host"
    if type(exc).__name__ == "OutOfMemoryError" or "CUDA error: out of memory" in str(exc):
        return "GPU"
    return None


def run(main: Callable[[argparse.Namespace], None], arg_parser: argparse.ArgumentParser,
        argv: Sequence[str] | None = None) -> None:
    args = arg_parser.parse_args(argv)
    debug = args.debug or os.environ.get("VAE_ENGINES_DEBUG") == "1"
    setup_logging(debug)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if hasattr(signal, "SIGPIPE"):  # `vae-engines ... | head` ends quietly, like any command-line tool
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    try:
        main(args)
        record = os.environ.get(MEMORY_RECORD_ENV)
        if record:
            write_stage_peak(record)
    except UserError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except Exception as exc:
        where = _out_of_memory(exc)
        if where is None or debug:
            raise
        print(f"error: out of {where} memory ({str(exc).splitlines()[0][:100] if str(exc) else type(exc).__name__}); "
              "use fewer or shorter windows (calibration.frames, bench.frames, holdout.count) or set "
              "compute.device: cpu", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("error: interrupted; the previous outputs are intact, run the command again", file=sys.stderr)
        sys.exit(130)
