#!/usr/bin/env bash
# The full-size pipeline on the lent GPU machine (issues 20, 24, 25, 30), timed stage by stage,
# with the fused fp16 engine and an INT8 engine for every default variant (CUDA graphs):
#   1. the pipeline from scratch at the 60 s GPU configuration (full-size seeded decoder, profile
#      125/1500/1500, 8 calibration and 4 held-out 60 s windows of unit-normal latents -- the scale
#      a diffusion model hands the decoder, issue 38: calibrated on the seeded encoder's encodings
#      (std 0.027) every INT8 engine fell to ~27 dB on a unit-normal latent), run by
#      `vae-engines repro --jobs $JOBS` (independent stages side by side, timed stages alone);
#   1b. the other kind of held-out windows: 4 encoded 60 s corpus windows, every variant scored on
#      them too (heldout_audio/, in records.tgz);
#   2. every INT8 engine against its Q/DQ graph, layer by layer (benchmarks/int8_agreement.py);
#   3. one INT8 variant's recipe changed, the pipeline again (what re-runs, and how long);
#   4. a no-op `dvc repro` beside `dvc status`.
#   5. (issue 31) each layer's rate from the tune record, and kernel options not tuned yet.
# RESUME=1 (a later call while the machine is warm) starts at 1b / 3 in the last call's /tmp/proj.
# EXTRAS=0 skips 1b, 2 and 5 (recorded in h100_b962957) so that one 600 s call has time for 1, 3 and 4.
# MEMORY_RECORD=FILE (a reports/stage_memory.json of an earlier run on the same GPU model, e.g.
# benchmarks/results/gpu_pipeline/h100_ccd7e3a/stage_memory.json) starts the from-scratch run with
# those peaks, as a workspace that has run the pipeline before does: the scheduler then places
# stages by their figures instead of finding out by running out of memory (README, `--jobs`).
# Results go to $OUT (at most 8 files come back from the lent machine): full.json, report.md,
# agreement.json / agreement.md, variant.json, noop.txt, log.txt and records.tgz (full.md,
# every engine's build record, the bench records, the quality metrics, the latest report.md,
# dvc.lock, kernels/), each written as soon as its step ends (full.json after every stage):
# the machine can be taken back mid-run, and a call that reaches its time limit returns only
# what is in $OUT.
#
# That machine has no package index: DVC, diffusers, soundfile and TensorRT-RTX's bindings come
# as cp312 wheels in $STASH, and TensorRT-RTX's library (larger than one call may carry) as xz
# parts rtx.tar.xz.* of the installed tensorrt_rtx and tensorrt_rtx_libs packages.
set -euo pipefail
STASH=${STASH:-/tmp/stash}
JOBS=${JOBS:-8}
EXTRAS=${EXTRAS:-1}
SRC=$(pwd)
OUT_DIR=${OUT:-/tmp/out}
mkdir -p "$OUT_DIR" /tmp/site
# everything this prints, also in $OUT as it comes (less PyTorch's per-shape CUDA-graph and
# archive-name warnings): a call that ends at its time limit returns no output of its own
exec > >(grep --line-buffered -v "cudagraph_utils.py\|Expect archive file\|dvc push" | tee -a "$OUT_DIR/log.txt") 2>&1
records() {  # the records of the run so far, as one file
  tar -czf "$OUT_DIR/records.tgz" dvc.lock engines/torch/*.json engines/torch_int8/*.json reports/torch reports/report.md \
    reports/variants/*/quality.json reports/variants/*/bench.json engines/onnx/*.ranges.json \
    data/stats/stats.json reports/stage_memory.json kernels full.md heldout_audio/variants/*/quality.json heldout_audio/holdout/manifest.json \
    2>/dev/null || true
}
if [ "${RESUME:-0}" = 1 ]; then  # a later call on the same warm machine: the last call's packages and project
  export PYTHONPATH=/tmp/site:/tmp/proj PATH=/tmp/site/bin:$PATH DVC_NO_ANALYTICS=1 PYTHONUNBUFFERED=1
  cd /tmp/proj
  # the from-scratch run's rest, where the last call ended inside it (else a no-op repro)
  python3 benchmarks/stage_times.py --jobs "$JOBS" --out "$OUT_DIR/rest" \
    --label "the rest of the from-scratch run, after the call that began it ended" \
    || echo "rest repro failed" >> "$OUT_DIR/noop.txt"
  cp reports/report.md "$OUT_DIR/report.md" || true
  records
else
cat "$STASH"/rtx.tar.xz.* | tar -xJ -C /tmp/site
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$STASH"/*.whl
export PYTHONPATH=/tmp/site PATH=/tmp/site/bin:$PATH DVC_NO_ANALYTICS=1 PYTHONUNBUFFERED=1
python3 -c "import dvc, diffusers, soundfile, tensorrt_rtx; print('dvc', dvc.__version__, 'trt-rtx', tensorrt_rtx.__version__)"

rm -rf /tmp/proj && mkdir /tmp/proj
tar -C "$SRC" --exclude=./.whl --exclude=./.stash --exclude=./.venv --exclude=./.git -cf - . | tar -C /tmp/proj -xf -
cd /tmp/proj
dvc config --local core.no_scm true
export PYTHONPATH=/tmp/site:/tmp/proj

mkdir -p kernels
if [ -n "${MEMORY_RECORD:-}" ]; then mkdir -p reports && cp "$SRC/$MEMORY_RECORD" reports/stage_memory.json; fi
python3 benchmarks/stage_times.py --jobs "$JOBS" --out "$OUT_DIR/full" \
  --label "full-size pipeline, lent GPU, from scratch, vae-engines repro --jobs $JOBS${MEMORY_RECORD:+, memory record $MEMORY_RECORD}" \
  --set model.source=seeded --set model.checkpoint=vae_engines/fixtures/acestep-1.5 --set compute.device=cuda \
  --set compute.threads=16 --set profile.min_frames=125 --set profile.opt_frames=1500 --set profile.max_frames=1500 \
  --set corpus.clips=16 --set corpus.seconds=60 --set calibration.count=8 --set holdout.count=4 \
  --set calibration.source=normal --set holdout.source=normal \
  --set sensitivity.max_latents=2 --set "bench.frames=[125, 250, 1500]" --set "bench.runtimes=[tensorrt, torch]" \
  --set "bench.torch_precisions=[fp32, fp16]" \
  --set bench.stream_frames=1500 --set bench.stream_window=125 --set bench.stream_overlap=16 \
  --set "compile.precisions=[fp16]" --set compile.mode=reduce-overhead \
  --set "compile.int8=[entropy, minmax, minmax_fused, percentile, mse, auto_40db, speed_40db, minmax_fp8]" \
  || echo "full repro failed" >> "$OUT_DIR/noop.txt"
cp reports/report.md "$OUT_DIR/report.md" || true
mv "$OUT_DIR/full.md" full.md || true
records
fi

if [ "$EXTRAS" = 1 ]; then
# 1b. held-out windows of the other kind: the corpus encoded by the seeded encoder, each variant's graph
# scored on them by its evaluate stage's own code (outside DVC: heldout_audio/ is not a pipeline output)
python3 - <<'PY' || echo "audio held-out failed" >> "$OUT_DIR/noop.txt"
import yaml
p = yaml.safe_load(open("params.yaml"))
p["holdout"].update(source="audio", path="data/corpus")
yaml.safe_dump(p, open("heldout_audio.yaml", "w"), sort_keys=False)
PY
{ python3 stages/holdout.py --params heldout_audio.yaml --out heldout_audio/holdout \
  && python3 stages/reference.py --params heldout_audio.yaml --fp32 engines/onnx/fp32.onnx \
       --fp16 engines/onnx/fp16.onnx --holdout heldout_audio/holdout --out heldout_audio/reference \
  && for v in $(python3 -c "import yaml; print(' '.join(yaml.safe_load(open('params.yaml'))['int8']))"); do
       python3 stages/evaluate.py --params heldout_audio.yaml --variant "$v" --onnx "engines/onnx/$v.onnx" \
         --plan "engines/tensorrt_rtx/$v.plan" --holdout heldout_audio/holdout --reference heldout_audio/reference \
         --out "heldout_audio/variants/$v" || echo "audio held-out $v failed" >> "$OUT_DIR/noop.txt"
     done; } || echo "audio held-out failed" >> "$OUT_DIR/noop.txt"
records

python3 benchmarks/int8_agreement.py --out "$OUT_DIR" --frames 250 --count 1 --variants minmax,minmax_fused,entropy \
  || echo "agreement failed" >> "$OUT_DIR/noop.txt"
fi

python3 benchmarks/stage_times.py --jobs "$JOBS" --out /tmp/variant \
  --label "one INT8 variant's recipe changed (minmax -> mse), vae-engines repro --jobs $JOBS" \
  --set int8.minmax.calibrator=mse || echo "variant repro failed" >> "$OUT_DIR/noop.txt"
cp /tmp/variant.json "$OUT_DIR/variant.json" || true
records

{ /usr/bin/time -f "dvc status %e s" dvc status -q; /usr/bin/time -f "no-op dvc repro %e s" dvc repro -q; } \
  2>> "$OUT_DIR/noop.txt" || true
cat "$OUT_DIR/noop.txt"

[ "$EXTRAS" = 1 ] || exit 0
# issue 31: each layer's rate from the tune record, and kernel options the tune stage does not try yet
python3 benchmarks/layer_table.py --out kernels > /dev/null || true
left=$(( ${BUDGET_SECONDS:-570} - SECONDS - 15 ))  # what the call has left (one command: 600 s)
if [ "$left" -gt 30 ]; then
  timeout "$(( left < 150 ? left : 150 ))" python3 benchmarks/gpu_tiles_explore.py --out kernels || true
fi
records
