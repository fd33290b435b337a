#!/usr/bin/env bash
# Makes what benchmarks/gpu_pipeline.sh needs on the lent GPU machine, which has Python 3.12,
# torch, Triton and ONNX but no package index: DVC, diffusers, soundfile and TensorRT-RTX's
# bindings as cp312 wheels, and TensorRT-RTX's library (228 MB installed, larger than the
# 64 MiB one call may carry) as xz parts of the installed tensorrt_rtx and tensorrt_rtx_libs
# packages. Everything lands in three folders that fit one call each beside the tracked tree:
#   $STASH/p1: rtx.tar.xz.aa;  $STASH/p2: rtx.tar.xz.ab and diffusers;  $STASH/p3: the other wheels
# (the tracked tree is ~23 MB of each call's 64 MiB, so a part stays under ~40 MB).
# Usage (after the README's setup, which installs tensorrt-rtx-cu13 into .venv):
#   bash benchmarks/gpu_stash.sh [.stash]
# then one call per part, each copying it to /tmp/stash there, the last one running
# `STASH=/tmp/stash bash benchmarks/gpu_pipeline.sh` (the machine keeps /tmp only while warm).
set -euo pipefail
STASH=${1:-.stash}
SITE=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
WHEELS=$(mktemp -d)
trap 'rm -rf "$WHEELS"' EXIT
rm -rf "$STASH" && mkdir -p "$STASH"/p1 "$STASH"/p2 "$STASH"/p3

# antlr4-python3-runtime 4.9.3 (hydra, under DVC) publishes no wheel: build it first.
.venv/bin/pip wheel -q --no-deps antlr4-python3-runtime==4.9.3 -w "$WHEELS"
.venv/bin/pip download -q --python-version 3.12 --only-binary=:all: --find-links "$WHEELS" -d "$WHEELS" \
  "dvc==$(.venv/bin/python -c 'import dvc; print(dvc.__version__)')" \
  "diffusers==$(.venv/bin/python -c 'import diffusers; print(diffusers.__version__)')" \
  soundfile "tensorrt-rtx-cu13-bindings==$(.venv/bin/pip show tensorrt-rtx-cu13-bindings | sed -n 's/^Version: //p')"
# What the machine's image already has, built against its own torch: never shadow it. And what
# no step there uses: git (the project runs there with core.no_scm), SSH remotes, Hub downloads.
(cd "$WHEELS" && rm -f numpy-* torch-* triton-* nvidia_* pillow-* scipy-* sympy-* mpmath-* onnx-* \
  onnxruntime-* onnxscript-* onnx_ir-* ml_dtypes-* protobuf-* setuptools-* networkx-* \
  pygit2-* asyncssh-* cryptography-* hf_xet-*)
mv "$WHEELS"/diffusers-*.whl "$STASH"/p2/
mv "$WHEELS"/*.whl "$STASH"/p3/

tar -C "$SITE" -cf - tensorrt_rtx tensorrt_rtx_libs | xz -T2 -6 | split -b 38M - "$STASH"/p1/rtx.tar.xz.
mv "$STASH"/p1/rtx.tar.xz.a[b-z] "$STASH"/p2/
du -sh "$STASH"/p1 "$STASH"/p2 "$STASH"/p3
