# Sourced by tools/gpu_schedule.sh and tools/posed_to_selfsup.sh: the `wildrayzer schedule` overrides of every
# labelling round after the first, as shipped since v1.1, into the array LATER_ROUNDS. Reads ROUNDS, STATIC_DIR and
# STATIC_NEG / LATE_S3 (default 1 each): static negatives in stage 2 (benchmarks/RESULTS.md v1.0); stage 3 on the
# dynamic test's 12-23-frame windows with a quarter of static scenes (v1.1).
LATER_ROUNDS=()
for ((r = 2; r <= ROUNDS; r++)); do
  if [ "${STATIC_NEG:-1}" = 1 ]; then
    LATER_ROUNDS+=(--stage-override "2:$r" "data.static_root=$STATIC_DIR"
                   --stage-override "2:$r" training.mask_pos_weight=6)
  fi
  if [ "${LATE_S3:-1}" = 1 ]; then
    LATER_ROUNDS+=(--stage-override "3:$r" data.frame_gap_min=12 --stage-override "3:$r" data.frame_gap_max=23
                   --stage-override "3:$r" "data.static_root=$STATIC_DIR"
                   --stage-override "3:$r" data.static_fraction=0.25)
  fi
done
