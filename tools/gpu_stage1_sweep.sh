#!/usr/bin/env bash
# Stage-1 recipes side by side on one GPU, inside a fixed wall-clock budget (a lent GPU for a few minutes).
#
#   BUDGET_S=420 SCENES=1536 OUT_DIR=experiments/gpu_sweep bash tools/gpu_stage1_sweep.sh
#
# Generates SCENES static training scenes (same test scenes as every generated set), measures each recipe's speed
# with all of them sharing the GPU (a short probe), sizes every run to end inside BUDGET_S, trains them in parallel,
# and exports each run's last weights as a pretrained directory under $OUT_DIR/<name>/export. With PACK_DIR set,
# everything exported (and the logs) is packed there as <=15 MB pieces: cat PACK_DIR/pack.tgz.part-* | tar xz.
# Recipes: name|overrides; edit RECIPES below. Benchmarks/RESULTS.md says which recipe won and what it scored.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
BUDGET_S=${BUDGET_S:-420}
SCENES=${SCENES:-1536}
OUT_DIR=${OUT_DIR:-experiments/gpu_sweep}
DATA=data/synthetic_${SCENES}s
WORKERS=${DATA_WORKERS:-3}
DEVICE=${DEVICE:-cuda}
PROBE_STEPS=${PROBE_STEPS:-60}
EXTRA=${EXTRA:-}  # overrides for every run, after the recipe's (e.g. EXTRA=training.batch_size=2 for a CPU dry run)
T0=$(date +%s)

# RECIPES_ENV (one "name|overrides" per line) replaces the list below, e.g. to continue one run with init_from.
RECIPES=(
  "tiny_b32|training.batch_size=32 training.lr=1.0e-3"
  "tiny_b64|training.batch_size=64 training.lr=1.5e-3"
  "d192_b32|training.batch_size=32 training.lr=7.0e-4 model.dim=192 model.heads=6 model.camera_layers=4 model.scene_layers=4 model.renderer_layers=4 model.num_latents=128"
  "posed_b32|training.batch_size=32 training.lr=1.0e-3 model.cameras=given"
)
if [ -n "${RECIPES_ENV:-}" ]; then mapfile -t RECIPES <<<"$RECIPES_ENV"; fi
COMMON="configs/tiny/wildrayzer_stage1_pretrain.yaml data.root=$DATA/re10k_processed_v2 training.device=$DEVICE
  data.num_workers=$WORKERS training.lr_warmup=300 training.keep_last_n=1 logging.progress=false
  logging.tensorboard=false training.output_dir=$OUT_DIR"

if [ ! -f "$DATA/re10k_processed_v2/train/full_list.txt" ]; then
  $PY -m wildrayzer data synth --out "$DATA" --scenes "$SCENES" --dynamic-scenes 0 --test-scenes 8 \
    --workers "$(nproc)" --no-progress
fi
echo "data ready after $(( $(date +%s) - T0 )) s"

run_all() {  # $1 = phase (probe|main); $2 = steps spec "name=steps ..." or a fixed count
  local phase=$1 spec=$2 pids=()
  for r in "${RECIPES[@]}"; do
    local name=${r%%|*} over=${r#*|} steps=$spec
    [[ $spec == *=* ]] && steps=$(tr ' ' '\n' <<<"$spec" | sed -n "s/^$name=//p")
    local every=$(( steps > 40 ? steps / 4 : steps ))
    # shellcheck disable=SC2086
    $PY -m wildrayzer train --config $COMMON training.run_name="${name}_$phase" training.max_steps="$steps" \
      training.checkpoint_every="$every" training.log_every=20 $over $EXTRA >"$OUT_DIR/$name.$phase.log" 2>&1 &
    pids+=($!)
  done
  local rc=0
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
  return $rc
}

mkdir -p "$OUT_DIR"
run_all probe "$PROBE_STEPS"
LEFT=$(( BUDGET_S - ($(date +%s) - T0) - 60 ))  # 60 s for start-up, export and packing
SPEC=""
for r in "${RECIPES[@]}"; do
  name=${r%%|*}
  ips=$(grep -o 'it/s [0-9.]*' "$OUT_DIR/$name.probe.log" | tail -1 | cut -d' ' -f2)
  steps=$($PY -c "print(max(100, int(float('$ips') * $LEFT * 0.85 // 100 * 100)))")
  echo "$name: probe $ips it/s -> $steps steps in $LEFT s"
  SPEC="$SPEC $name=$steps"
done
run_all main "$SPEC" || echo "a run failed: see $OUT_DIR/*.main.log"
for r in "${RECIPES[@]}"; do
  name=${r%%|*}
  tail -2 "$OUT_DIR/$name.main.log"
  $PY -c "from pathlib import Path; from wildrayzer.commands.schedule import export_pretrained as e; \
e(Path('$OUT_DIR/${name}_main'), Path('$OUT_DIR/$name/export'))" || echo "$name: nothing to export"
done
if [ -n "${PACK_DIR:-}" ]; then
  mkdir -p "$PACK_DIR"
  tar czf - "$OUT_DIR"/*/export "$OUT_DIR"/*.log | split -b 15M - "$PACK_DIR/pack.tgz.part-"
  ls -la "$PACK_DIR"
fi
echo "done after $(( $(date +%s) - T0 )) s"
