#!/usr/bin/env bash
# Regenerate docs/results.md end to end: T-TAME and the baselines on the test part of the
# evaluation photos (data/eval_photos/test) and of the ground-truth composites
# (data/groundtruth/test), for each backbone, with the heads in checkpoints/ (a backbone without
# one is scored with an untrained head and labelled so). These are the final numbers: tune
# recipes on the dev part (data/eval_photos/dev, data/groundtruth/dev), never on test.
# Build the data first: python scripts/build_pool.py --out data/
#
# Sized for two CPU cores (about an hour in all): ROAD runs on every photo, but the costly
# baselines (Score-CAM: one pass per channel; RISE: one pass per mask) and the sanity check
# run on a subset spread over the photos, and RISE uses fewer masks than the reference's 4000.
# Raise the numbers on a GPU (ROAD_IMAGES=N limits ROAD to N photos):
#   SLOW_IMAGES=62 SANITY_IMAGES=62 RISE_MASKS=4000 bash scripts/run_results.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=docs/results
ROAD_IMAGES=${ROAD_IMAGES:-}
SLOW_IMAGES=${SLOW_IMAGES:-8}
RISE_MASKS=${RISE_MASKS:-1000}
SANITY_IMAGES=${SANITY_IMAGES:-8}
BACKBONES=${BACKBONES:-"mobilenet_v2 efficientnet_lite0"}
FAST=ttame,gradcam,gradcampp,random,centre
PHOTOS=data/eval_photos/test
TRUTH=data/groundtruth/test
AGAINST=${AGAINST:-gradcam}  # the fast runs also report every method minus this one, paired
PARALLEL=${PARALLEL:-0}  # 1: one backbone per core, at once
mkdir -p "$OUT"
touch "$OUT/commands.txt"
for backbone in $BACKBONES; do  # a backbone run again replaces its own commands only
  sed -i "/--backbone $backbone /d" "$OUT/commands.txt"
done

run() {  # record the command, then run it
  echo "ttame $*" >> "$OUT/commands.txt"
  "$PY" -m ttame "$@"
}

evaluate_backbone() {
  local backbone=$1
  run evaluate --backbone "$backbone" --images "$PHOTOS" --methods "$FAST" --against "$AGAINST" \
    ${ROAD_IMAGES:+--road-limit "$ROAD_IMAGES"} --sanity "$SANITY_IMAGES" --json "$OUT/${backbone}_photos.json"
  run evaluate --backbone "$backbone" --images "$PHOTOS" --methods scorecam,rise \
    --limit "$SLOW_IMAGES" --rise-masks "$RISE_MASKS" --json "$OUT/${backbone}_photos_slow.json"
  run evaluate --backbone "$backbone" --images "$TRUTH/images" --masks "$TRUTH" \
    --methods "$FAST" --against "$AGAINST" --no-road --json "$OUT/${backbone}_groundtruth.json"
}

pids=()
for backbone in $BACKBONES; do
  if [[ "$PARALLEL" == 1 ]]; then
    OMP_NUM_THREADS=1 evaluate_backbone "$backbone" &
    pids+=($!)
  else
    evaluate_backbone "$backbone"
  fi
done
for pid in "${pids[@]}"; do wait "$pid"; done  # a failed backbone fails the script
sort -o "$OUT/commands.txt" "$OUT/commands.txt"
"$PY" scripts/results_report.py --dir "$OUT" --out docs/results.md
