#!/usr/bin/env bash
# From a posed checkpoint (model.cameras=given) to a stage 1 whose camera estimator reads its own view, as measured
# in benchmarks/RESULTS.md v1.4 (rotation error 5.55 deg vs identity's 7.42 on the embedded static test):
#   1. the posed model's tokenizer, scene encoder and renderer + a fresh own-view camera estimator
#      (training.init_from of a posed checkpoint into a model that predicts its cameras);
#   2. the estimator alone against the frozen rest, targets shuffled, rendering loss only: two runs of S_CAM steps
#      (batch 8, lr 1e-3; the second from the first's weights with a fresh optimiser and schedule);
#   3. every part jointly, rendering loss only, S_JOINT steps at lr 3e-4. No dataset camera is used after step 1.
#
#   POSED=experiments/gpu_sweep/posed_b32/export bash tools/posed_to_selfsup.sh [OUT_DIR]
#   S_CAM=3000 S_JOINT=1500 DATA=data/synthetic_1536/re10k_processed_v2 THREADS=2 (defaults)
# Resumable: a finished phase is skipped, an interrupted one continues from its last checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
POSED=${POSED:?set POSED to a posed checkpoint (file or run dir)}
OUT=${1:-experiments/posed_to_selfsup}
S_CAM=${S_CAM:-3000}
S_JOINT=${S_JOINT:-1500}
DATA=${DATA:-data/synthetic_1536/re10k_processed_v2}
export OMP_NUM_THREADS=${THREADS:-2}
mkdir -p "$OUT"
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
train() {  # NAME INIT STEPS overrides...
  local name=$1 init=$2 steps=$3; shift 3
  if grep -qs "^done: step $steps," "$OUT/$name.log"; then return; fi
  $PY -m wildrayzer train --config configs/tiny/wildrayzer_stage1_pretrain.yaml data.root="$DATA" \
    training.output_dir="$OUT" training.run_name="$name" training.init_from="$init" training.max_steps="$steps" \
    training.batch_size=8 training.lr_warmup=100 training.checkpoint_every=500 data.shuffle_targets=true \
    model.camera_query=own_view logging.progress=false logging.tensorboard=false "$@" 2>&1 | tee -a "$OUT/$name.log"
}
FROZEN="training.freeze_parts=[tokenizer,scene,renderer]"
train cam_a "$POSED" "$S_CAM" "$FROZEN" training.lr=1.0e-3
train cam_b "$OUT/cam_a" "$S_CAM" "$FROZEN" training.lr=1.0e-3
train joint "$OUT/cam_b" "$S_JOINT" "training.freeze_parts=[]" training.lr=3.0e-4
echo "stage 1: $OUT/joint (wildrayzer bench poses $OUT/joint data.root=...; stages 2-3: wildrayzer schedule \
--stage1-from $OUT/joint model.camera_query=own_view ...)"
