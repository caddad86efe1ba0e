#!/usr/bin/env bash
# The v1.1 tiny model's recipe on one GPU, end to end: data, stages 1 -> 2 -> 3, export (d=192, self-supervised
# from the start; the shipped model since v1.5 comes from tools/posed_to_selfsup.sh).
#
#   bash tools/gpu_schedule.sh [EXPORT_DIR]          # default export: experiments/gpu_schedule/export
#   S1=6000 S2=300 S3=600 SCENES=1536 OUT_DIR=experiments/gpu_schedule bash tools/gpu_schedule.sh
#
# Stage 1 is where a GPU pays (benchmarks/RESULTS.md "v0.6"): d=192, 4+4+4 layers, 128 latents, batch 32, lr 7e-4
# on SCENES generated static scenes; stages 2 and 3 keep the tiny CPU settings. Resumable: re-running continues each
# stage from its last checkpoint and skips finished ones. PY=python3 by default (a checkout on PYTHONPATH is enough:
# `python3 -m wildrayzer`); DEVICE=cpu runs the same recipe on the CPU (slowly). EMA=0.999 makes stage 1's
# checkpoints an exponential moving average of its weights (training.ema_decay; default 0 = off, not yet measured
# on stage 1). ROUNDS=2 (the default, as shipped since v0.8) repeats stages 2-3 once with masked labeller renders
# (`wildrayzer schedule --label-rounds`; ROUNDS=1: v0.7's schedule); stage 3 averages its weights (decay 0.99).
# WINDOW="12 23" (default) samples stage 1's training views from windows of 12-23 frames, the test scenes' context
# spans; the shipped stage 1 was trained on the tiny configs' 2-8 (WINDOW="2 8"; benchmarks/RESULTS.md v0.8).
# STATIC_NEG=1 (default, as shipped since v1.0) mixes the generated static scenes into the stage 2 of every round
# after the first (data.static_root, labelled static in every view; mask pos weight 6): the head then masks a third
# as many tokens of scenes where nothing moves (benchmarks/RESULTS.md v1.0). STATIC_NEG=0: v0.8's schedule.
# LATE_S3=1 (default, as shipped since v1.1) trains the stage 3 of every round after the first on the test's
# 12-23-frame windows with a quarter of its samples from the static scenes: +0.11 dB on the dynamic test, -0.17 dB on
# the static test (benchmarks/RESULTS.md v1.1). LATE_S3=0: v1.0's schedule.
# SHUFFLE_TARGETS=1 feeds stage 1 its targets in random order (data.shuffle_targets): every stage 1 so far learned a
# pose per target slot instead of reading the images (benchmarks/RESULTS.md v1.3); default 0 until measured on a GPU.
# CAMERA_QUERY=own_view starts every camera token from an attention pool over its own view (model.camera_query; with
# shuffled targets the cameras then follow their images and, against a renderer that reads them, learn the yaw after
# 40 k samples: benchmarks/RESULTS.md v1.4); default view_index (the release) until a stage 1 measures it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
SCENES=${SCENES:-1536}
S1=${S1:-6000}
S2=${S2:-300}
S3=${S3:-600}
EMA=${EMA:-0}
ROUNDS=${ROUNDS:-2}
WINDOW=${WINDOW:-12 23}
read -r GAP_MIN GAP_MAX <<< "$WINDOW"
OUT_DIR=${OUT_DIR:-experiments/gpu_schedule}
EXPORT=${1:-experiments/gpu_schedule/export}
WORKERS=${DATA_WORKERS:-8}
STATIC_NEG=${STATIC_NEG:-1}
LATE_S3=${LATE_S3:-1}
SHUFFLE_TARGETS=${SHUFFLE_TARGETS:-0}
CAMERA_QUERY=${CAMERA_QUERY:-view_index}
STATIC_DIR=data/synthetic_$SCENES/re10k_processed_v2
# shellcheck source=tools/later_rounds.sh
source tools/later_rounds.sh  # LATER_ROUNDS (STATIC_NEG, LATE_S3)
ARCH="model.dim=192 model.heads=6 model.camera_layers=4 model.scene_layers=4 model.renderer_layers=4
  model.num_latents=128 model.camera_query=$CAMERA_QUERY"

# The set `schedule --train-scenes` expects (same parameters, so it is not regenerated), on all cores (schedule: <= 4)
$PY tools/ensure_scenes.py "$SCENES"
# shellcheck disable=SC2086
$PY -m wildrayzer schedule --out "$OUT_DIR" --train-scenes "$SCENES" --steps "$S1" "$S2" "$S3" --export "$EXPORT" \
  --label-rounds "$ROUNDS" \
  --stage-override 1 training.batch_size=32 --stage-override 1 training.lr=7.0e-4 \
  --stage-override 1 training.lr_warmup=300 --stage-override 1 data.num_workers="$WORKERS" \
  --stage-override 1 training.checkpoint_every=1000 --stage-override 1 training.ema_decay="$EMA" \
  --stage-override 1 data.frame_gap_min="$GAP_MIN" --stage-override 1 data.frame_gap_max="$GAP_MAX" \
  --stage-override 1 data.shuffle_targets="$([ "$SHUFFLE_TARGETS" = 1 ] && echo true || echo false)" \
  --stage-override 3 training.ema_decay=0.99 "${LATER_ROUNDS[@]}" \
  $ARCH training.device="$DEVICE" logging.progress=false logging.tensorboard=false
