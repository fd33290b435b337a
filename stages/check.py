"""DVC stage `check` (always runs, first): validate params.yaml as a whole, and record what
engines depend on: the TensorRT toolchain and the PyTorch target (nothing else about the
machine)."""

from vae_engines.core import entry
from vae_engines.core.checks import check_stage


def main(args):
    check_stage(args.params, toolchain_json=args.toolchain, torch_json=args.torch, stamp=args.stamp)


if __name__ == "__main__":
    p = entry.parser(__doc__)
    p.add_argument("--toolchain", required=True, help="where to write the TensorRT toolchain record (JSON)")
    p.add_argument("--torch", required=True, help="where to write the PyTorch target record (JSON)")
    p.add_argument("--stamp", required=True, help="constant file every root stage depends on, so this one runs first")
    entry.run(main, p)
