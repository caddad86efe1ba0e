#!/usr/bin/env bash
# The shipped tiny model's recipe (benchmarks/RESULTS.md v1.4-v2.2; v2.6: its defaults): a posed stage 1, then a
# camera estimator whose tokens read their own view and the shift cue learns the cameras from the rendering loss
# alone, then stages 2-3.
#   0. unless POSED names one: a posed stage 1 (model.cameras=given: the dataset's cameras, normalised), d=128, batch
#      32: (a) unless POSED_START names one, S_POSED steps at lr 1e-3, warmup 300 (default 12,000 as shipped since
#      v2.6: 110 min on the 2-core CPU; committed as checkpoints/wildrayzer_tiny_2view_parts/posed); (b) with
#      S_POSED_B > 0 (v2.2-v2.4: S_POSED=4500 S_POSED_B=2000), that many more steps from it at lr 5e-4, warmup 100
#      (a fresh schedule). DEVICE=cuda, or pass POSED_START / POSED;
#   1. its tokenizer, scene encoder and renderer + a fresh own-view camera estimator with the shift cue
#      (model.camera_shift_cue=true; SHIFT_CUE=0: without, the v1.5 recipe) (training.init_from of a posed checkpoint
#      into a model that predicts its cameras);
#   2. the estimator alone against the frozen rest, targets shuffled, rendering loss only: S_CAM steps (batch 8, lr
#      1e-3); with S_CAM_B > 0 (v1.5: S_CAM_B=3000 SHIFT_CUE=0 S_POSED=4500 S_POSED_B=0) a second run of that many
#      steps from the first's weights with a fresh optimiser and schedule;
#   3. every part jointly, rendering loss only, S_JOINT steps at lr 3e-4. No dataset camera reaches the model after
#      step 0 (phase 4's labeller reads them; the model trained never does);
#      Phases 1-3 roll back when the training loss jumps (training.rollback_db=ROLLBACK_DB, 3 dB; 0 = off): seed 1
#      collapsed in phase 2 without it (benchmarks/RESULTS.md v1.7, v1.9);
#   4. with EXPORT_DIR: stages 2-3 in two labelling rounds as shipped since v1.1 (`wildrayzer schedule --stage1-from`,
#      S2 / S3 steps on data/synthetic_192, S3_LATE for the second round's stage 3), exported to EXPORT_DIR. With
#      LABELLER=posed (since v2.8) the posed model of phase 0 makes the pseudo-labels of both rounds, rendering with
#      the dataset's cameras (`pseudolabel.stage1_checkpoint`; RESULTS v2.8: the labels are camera-limited); with
#      LABELLER=own the model labels itself (stage 2) or its stage-2 run does (stage 3), the second round masking the
#      context tokens its head flags, as v1.1-v2.6 did.
# On the 2-core CPU (v2.6, the defaults): phase 0 110 min, 2 21, 3 9, 4 26 (2 h 46 min; 56 min from POSED).
#
#   DEVICE=cuda bash tools/posed_to_selfsup.sh [OUT_DIR [EXPORT_DIR]]     # e.g. OUT_DIR checkpoints/wildrayzer_tiny_2view
#   POSED=checkpoints/wildrayzer_tiny_2view_parts/posed bash tools/posed_to_selfsup.sh OUT EXPORT   # phase 0 as committed
#   S_POSED=12000 S_POSED_B=0 S_CAM=3000 S_CAM_B=0 SHIFT_CUE=1 S_JOINT=1500 S2=300 S3=600 S3_LATE=1200 LABELLER=posed
#   DATA=data/synthetic_1536/re10k_processed_v2 THREADS=2 SEED=42 ROLLBACK_DB=3 AMP=(see below) COMPILE=1 PRELOAD=1
#   CKPT_EVERY=250
#   (defaults; SEED is training.seed of every phase: the fresh estimator's initialisation and the data order;
#   AMP is training.amp of every phase; by default bf16 where it pays and auto (fp32 on a CPU) elsewhere. bf16 makes
#   the posed phase 1.5x faster on a CPU with bf16 matmul units (amx_bf16 in /proc/cpuinfo; `wildrayzer bench amp`,
#   RESULTS v2.5) and is CUDA's own choice (DEVICE=cuda); on a CPU without them it is emulated and 5-8x slower than
#   fp32 (an AMD EPYC without AVX-512: stage 3 at 0.18 against 1.4 steps/s, RESULTS v2.8), so the default there is
#   auto, as v2.4 and earlier were made.
#   COMPILE=1 runs the posed and joint phases under torch.compile (training.compile=true; about a minute to compile
#   at each start, and a C++ compiler on a CPU; the estimator phase is slower compiled, so it stays eager); PRELOAD=1
#   decodes the training frames once into memory for every stage-1 phase (data.preload=true data.num_workers=0;
#   453 MB for the 1,536 scenes). On this 2-core CPU with AMP=bf16 both together take the posed phase from 1.34 to
#   about 2.1 steps/s and the joint one from 2.5 to 3.9 (RESULTS v2.6); COMPILE=0 PRELOAD=0 turn them off.)
# Resumable: a finished phase is skipped, an interrupted one continues from its last checkpoint (every CKPT_EVERY
# steps of the stage-1 phases).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${1:-experiments/posed_to_selfsup}
EXPORT=${2:-}
DEVICE=${DEVICE:-cpu}
S_POSED=${S_POSED:-12000}
S_POSED_B=${S_POSED_B:-0}
S_CAM=${S_CAM:-3000}
S_CAM_B=${S_CAM_B:-0}
SHIFT_CUE=${SHIFT_CUE:-1}
S_JOINT=${S_JOINT:-1500}
S2=${S2:-300}
S3=${S3:-600}
S3_LATE=${S3_LATE:-1200}
LABELLER=${LABELLER:-posed}
case $LABELLER in posed | own) ;; *) echo "error: LABELLER must be posed or own, got '$LABELLER'" >&2; exit 2 ;; esac
DATA=${DATA:-data/synthetic_1536/re10k_processed_v2}
SEED=${SEED:-42}
ROLLBACK_DB=${ROLLBACK_DB:-3}
if [ -z "${AMP:-}" ]; then  # bf16 on CUDA or a CPU with bf16 matmul units, else fp32
  AMP=auto
  if [ "$DEVICE" != cpu ] || grep -qs amx_bf16 /proc/cpuinfo; then AMP=bf16; fi
fi
COMPILE=${COMPILE:-1}
CKPT_EVERY=${CKPT_EVERY:-250}
PRELOAD=${PRELOAD:-1}
export OMP_NUM_THREADS=${THREADS:-2}
mkdir -p "$OUT"
COMMON=(training.device="$DEVICE" training.seed="$SEED" training.amp="$AMP" logging.progress=false
  logging.tensorboard=false)  # every run
STAGE1=()  # every stage-1 phase
if [ "$PRELOAD" = 1 ]; then STAGE1=(data.preload=true data.num_workers=0); fi
COMPILED=training.compile=false  # the posed and joint phases
if [ "$COMPILE" = 1 ]; then COMPILED=training.compile=true; fi
done_already() {  # NAME STEPS: the run's log says it finished
  grep -qs "^done: step $2," "$OUT/$1.log"
}
train() {  # NAME INIT STEPS overrides...
  local name=$1 init=$2 steps=$3; shift 3
  if done_already "$name" "$steps"; then return; fi
  $PY -m wildrayzer train --config configs/tiny/wildrayzer_stage1_pretrain.yaml data.root="$DATA" \
    training.output_dir="$OUT" training.run_name="$name" training.init_from="$init" training.max_steps="$steps" \
    training.checkpoint_every="$CKPT_EVERY" "${COMMON[@]}" "${STAGE1[@]}" "$@" 2>&1 | tee -a "$OUT/$name.log"
}
if [ "$DATA" = data/synthetic_1536/re10k_processed_v2 ]; then  # the generated set, made once if absent
  $PY tools/ensure_scenes.py 1536
fi
if [ -z "${POSED:-}" ]; then
  POSED=${POSED_START:-}
  if [ -z "$POSED" ]; then
    POSED=$OUT/posed
    train posed "" "$S_POSED" model.cameras=given training.batch_size=32 training.lr=1.0e-3 training.lr_warmup=300 \
      "$COMPILED"
  fi
  if [ "$S_POSED_B" -gt 0 ]; then
    train posed_b "$POSED" "$S_POSED_B" model.cameras=given training.batch_size=32 training.lr=5.0e-4 \
      training.lr_warmup=100 "$COMPILED"
    POSED=$OUT/posed_b
  fi
fi
$PY - "$POSED" <<'PYEOF'  # only a posed source: its renderer reads the cameras the estimator learns to give
import sys
from wildrayzer.errors import UserError
from wildrayzer.weights import read_weights, resolve_checkpoint, stored_config
try:
    weights = resolve_checkpoint(sys.argv[1])
    cameras = stored_config(read_weights(weights)[1], str(weights)).model.cameras
    if cameras != "given":
        raise UserError(f"{sys.argv[1]} is not a posed checkpoint (model.cameras={cameras})")
except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
PYEOF
OWN="training.batch_size=8 training.lr_warmup=100 data.shuffle_targets=true model.camera_query=own_view \
training.rollback_db=$ROLLBACK_DB"
CUE=model.camera_shift_cue=false
if [ "$SHIFT_CUE" = 1 ]; then CUE=model.camera_shift_cue=true; fi
OWN="$OWN $CUE"
FROZEN="training.freeze_parts=[tokenizer,scene,renderer]"
# shellcheck disable=SC2086
train cam_a "$POSED" "$S_CAM" $OWN "$FROZEN" training.lr=1.0e-3
CAM=$OUT/cam_a
if [ "$S_CAM_B" -gt 0 ]; then
  # shellcheck disable=SC2086
  train cam_b "$OUT/cam_a" "$S_CAM_B" $OWN "$FROZEN" training.lr=1.0e-3
  CAM=$OUT/cam_b
fi
# shellcheck disable=SC2086
train joint "$CAM" "$S_JOINT" $OWN "training.freeze_parts=[]" training.lr=3.0e-4 "$COMPILED"
echo "stage 1: $OUT/joint (wildrayzer bench poses $OUT/joint data.root=...)"
[ -n "$EXPORT" ] || exit 0
ROUNDS=2
STATIC_DIR=data/synthetic_192/re10k_processed_v2
# shellcheck source=tools/later_rounds.sh
source tools/later_rounds.sh  # LATER_ROUNDS
LABELS=(--stage-override 3:2 training.max_steps="$S3_LATE")
if [ "$LABELLER" = posed ]; then
  LABELS+=(--stage-override 2 pseudolabel.stage1_checkpoint="$POSED" --stage-override 3
           pseudolabel.stage1_checkpoint="$POSED" --stage-override 2:2 pseudolabel.mask_context=false
           --stage-override 3:2 pseudolabel.mask_context=false)
fi
$PY -m wildrayzer schedule --out "$OUT/stages23" --train-scenes 192 --steps 1 "$S2" "$S3" --label-rounds "$ROUNDS" \
  --stage1-from "$OUT/joint" --export "$EXPORT" --stage-override 3 training.ema_decay=0.99 "${LATER_ROUNDS[@]}" \
  "${LABELS[@]}" model.camera_query=own_view "$CUE" "${COMMON[@]}" 2>&1 | tee -a "$OUT/stages23.log"
