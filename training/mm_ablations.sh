#!/usr/bin/env bash
# The multimodal ablations measured by `genkit bench mm`: small models that differ from `base` in exactly one
# flag, trained at equal budget (same seed, steps, batch and data order), then measured side by side.
#
#   training/mm_ablations.sh train [ARM ...]    # train these arms (default: all), resumable: rerun to continue
#   training/mm_ablations.sh bench [FLAG ...]    # measure every trained arm -> $ROOT/bench_mm.json (+ .md);
#                                               # flags go to genkit bench mm, e.g. --num 200 --temperature 0.5
#
# Environment: ROOT (default runs/mm-ablations), STEPS (default 2000), LAUNCH (default "accelerate launch";
# e.g. "python" on a CPU box). The discrete arm needs a VQ tokenizer folder (TOKENIZER, default weights/openmoji-vq).
set -euo pipefail
ROOT=${ROOT:-runs/mm-ablations}
STEPS=${STEPS:-2000}
LAUNCH=${LAUNCH:-accelerate launch}
TOKENIZER=${TOKENIZER:-weights/openmoji-vq}
ARMS=(base rope1d tie_v1 mse raster cosine discrete)

flags_for() {
  case "$1" in
    base) echo "" ;;
    rope1d) echo "--positions rope1d" ;;
    tie_v1) echo "--positions tie_v1" ;;
    mrope) echo "--positions mrope" ;;
    mse) echo "--image_head mse" ;;
    raster) echo "--order raster" ;;
    cosine) echo "--mask_schedule cosine" ;;
    discrete) echo "--vq_tokenizer $TOKENIZER" ;;
    *) echo "unknown arm '$1'; allowed: ${ARMS[*]} mrope" >&2; return 2 ;;
  esac
}

cmd=${1:-}
shift || true
case "$cmd" in
  train)
    [ $# -gt 0 ] || set -- "${ARMS[@]}"
    for arm in "$@"; do
      extra=$(flags_for "$arm")
      # shellcheck disable=SC2086
      $LAUNCH training/train_mm.py --output_dir "$ROOT/$arm" --d_model 128 --n_layers 4 --n_heads 4 \
        --head_width 128 --head_depth 2 --train_batch_size 32 --max_train_steps "$STEPS" --seed 0 \
        --eval_every 500 --checkpointing_steps 250 --resume_from_checkpoint latest $extra
    done ;;
  bench)
    args=()
    for arm in "${ARMS[@]}" mrope; do
      [ -f "$ROOT/$arm/model_index.json" ] && args+=(--arm "$arm=$ROOT/$arm")
    done
    genkit bench mm "${args[@]}" --out "$ROOT/bench_mm.json" "$@" ;;
  *) echo "usage: training/mm_ablations.sh train [ARM ...] | bench [genkit bench mm flags]" >&2; exit 2 ;;
esac
