#!/usr/bin/env bash
# The full-size pipeline on the lent GPU machine (issues 20, 24, 25), timed stage by stage, with
# the fused fp16 engine and an INT8 engine for every default variant (CUDA graphs):
#   1. `dvc repro` from scratch at the 60 s GPU configuration (full-size seeded decoder,
#      profile 125/1500/1500, 16 x 60 s corpus, 8 calibration and 4 held-out windows);
#   2. one INT8 variant's recipe changed, `dvc repro` again (what re-runs, and how long);
#   3. a no-op `dvc repro` beside `dvc status`.
# Results (benchmarks/stage_times.py's JSON and Markdown) go to $OUT/pipeline.
#
# That machine has no package index: DVC, diffusers and soundfile come as cp312 wheels in
# $STASH, and TensorRT-RTX's libraries (larger than one call may carry) as xz parts
# rtx.tar.xz.* made by `tar -cJ` of the installed tensorrt_rtx_libs package.
set -euo pipefail
STASH=${STASH:-/tmp/stash}
SRC=$(pwd)
OUT_DIR=${OUT:-/tmp/out}/pipeline
mkdir -p "$OUT_DIR" /tmp/site
cat "$STASH"/rtx.tar.xz.* | tar -xJ -C /tmp/site
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$STASH"/*.whl
export PYTHONPATH=/tmp/site PATH=/tmp/site/bin:$PATH DVC_NO_ANALYTICS=1 PYTHONUNBUFFERED=1
python3 -c "import dvc, diffusers, soundfile, tensorrt_rtx; print('dvc', dvc.__version__, 'trt-rtx', tensorrt_rtx.__version__)"

rm -rf /tmp/proj && mkdir /tmp/proj
tar -C "$SRC" --exclude=./.whl --exclude=./.venv --exclude=./.git -cf - . | tar -C /tmp/proj -xf -
cd /tmp/proj
dvc config --local core.no_scm true
export PYTHONPATH=/tmp/site:/tmp/proj

python3 benchmarks/stage_times.py --out "$OUT_DIR/full" --label "full-size pipeline, lent H200, from scratch" \
  --set model.source=seeded --set model.checkpoint=vae_engines/fixtures/acestep-1.5 --set compute.device=cuda \
  --set compute.threads=16 --set profile.min_frames=125 --set profile.opt_frames=1500 --set profile.max_frames=1500 \
  --set corpus.clips=16 --set corpus.seconds=60 --set calibration.count=8 --set holdout.count=4 \
  --set sensitivity.max_latents=2 --set "bench.frames=[125, 250, 1500]" --set "bench.runtimes=[tensorrt, torch]" \
  --set bench.stream_frames=1500 --set bench.stream_window=125 --set bench.stream_overlap=16 \
  --set "compile.precisions=[fp16]" --set compile.mode=reduce-overhead \
  --set "compile.int8=[entropy, minmax, minmax_fused, percentile, mse, auto_40db, speed_40db]" \
  || echo "full repro failed" >> "$OUT_DIR/failed.txt"
cp reports/report.md "$OUT_DIR/full_report.md" || true
cp reports/torch/bench.json "$OUT_DIR/full_torch_bench.json" || true

python3 benchmarks/stage_times.py --out "$OUT_DIR/variant" --label "one INT8 variant's recipe changed (minmax -> mse)" \
  --set int8.minmax.calibrator=mse || echo "variant repro failed" >> "$OUT_DIR/failed.txt"

{ /usr/bin/time -f "dvc status %e s" dvc status -q; /usr/bin/time -f "no-op dvc repro %e s" dvc repro -q; } \
  2>> "$OUT_DIR/noop.txt" || true
cat "$OUT_DIR/noop.txt"
