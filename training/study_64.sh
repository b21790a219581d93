#!/usr/bin/env bash
# The 64 px schedule study (issue 18, item 4): shifted-cosine (base 32) vs plain cosine log-SNR schedule, same
# UNet, data, seed and budget. The two arms train in alternating chunks of CHUNK steps, so that whenever the
# script stops both have (within one chunk) the same number of steps. Resumable: rerun it; each arm continues
# from its latest checkpoint (--checkpoints_total_limit 1 keeps only that one). After each chunk the arm's EMA
# pipeline folder is copied to runs/s64-ARM/snapshots/step-N (under step-N.tmp, then renamed), which is what
# `genkit eval curve` measures:
#
#   bash training/study_64.sh                                   # from the repo root (or anywhere)
#   mkdir -p runs/s64 && STOP_AT=$(date -d '+6 hours' +%s) nohup bash training/study_64.sh > runs/s64/drive.log 2>&1 &
#   genkit eval curve --run shifted=runs/s64-shifted --run cosine=runs/s64-cosine --num 1000 --steps 8 \
#       --at 250,500,1000,2000,4000 --out weights/openmoji-64-study/curve.json
#   bash training/study_64.sh save        # each arm's latest snapshot -> weights/openmoji-64-study/ARM (to commit)
#
# runs/ may not outlive a machine: `save` copies each arm's latest EMA pipeline to INTERIM/ARM (committed, a few
# times, as interim weights). An arm with no checkpoint under runs/ continues from INTERIM/ARM when it is there
# (train_diffusion.py --init_from: the EMA weights, at their step; a fresh optimizer, the LR warmup and the EMA
# warmup run again: the same for both arms, so the budget stays equal).
#
# CHUNK: steps per chunk, also the checkpoint / snapshot interval (a killed chunk is lost: keep it short);
# FINAL: stop once both arms reach it (default 4000 steps: about 2 h per arm on one CPU thread at ~1.8 s/step in
# bf16); STOP_AT: epoch seconds after which no new chunk is launched (a running chunk finishes); INTERIM: the
# committed interim weights (default weights/openmoji-64-study); MIXED_PRECISION: bf16 (default: CPU autocast,
# about 2x faster per step than fp32 on a CPU with AMX / AVX512-BF16, as the dev box has) or no (fp32).
# Logs: runs/s64/ARM.log.
set -u
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
CHUNK=${CHUNK:-125}; FINAL=${FINAL:-4000}; STOP_AT=${STOP_AT:-}
PYTHON=${PYTHON:-python}; INTERIM=${INTERIM:-weights/openmoji-64-study}; MIXED_PRECISION=${MIXED_PRECISION:-bf16}
mkdir -p runs/s64
common=(--resolution 64 --channels 32,64,128,128 --layers_per_block 1 --attention_levels 2,3
        --train_batch_size 32 --learning_rate 2e-4 --lr_warmup_steps 200 --seed 0
        --checkpointing_steps $CHUNK --checkpoints_total_limit 1 --resume_from_checkpoint latest --log_every 25
        --mixed_precision $MIXED_PRECISION)
# the step of an arm's exported EMA pipeline (0 before its first chunk)
step_of() { "$PYTHON" -c "import json,sys;print(json.load(open(sys.argv[1]))['global_step'])" \
              "$1/training_state.json" 2>/dev/null || echo 0; }
# an arm's step: its run, else its interim weights
arm_step() { local s; s=$(step_of runs/s64-$1); [ "$s" -gt 0 ] || s=$(step_of $INTERIM/$1); echo $s; }
if [ "${1:-}" = save ]; then
  for arm in shifted cosine; do
    snap=$(ls -d runs/s64-$arm/snapshots/step-* 2>/dev/null | grep -v '\.tmp$' | sort -V | tail -1)
    [ -n "$snap" ] || { echo "$arm: no snapshot to save"; continue; }
    rm -rf $INTERIM/$arm.tmp; mkdir -p $INTERIM; cp -r $snap $INTERIM/$arm.tmp
    rm -rf $INTERIM/$arm.old; [ -d $INTERIM/$arm ] && mv $INTERIM/$arm $INTERIM/$arm.old
    mv $INTERIM/$arm.tmp $INTERIM/$arm && rm -rf $INTERIM/$arm.old
    echo "$arm: $snap -> $INTERIM/$arm"
  done
  exit 0
fi
while :; do
  # 1. the next target: one chunk past the arm that is behind
  s1=$(arm_step shifted); s2=$(arm_step cosine)
  lo=$(( s1 < s2 ? s1 : s2 )); target=$(( (lo / CHUNK + 1) * CHUNK ))
  [ "$lo" -ge "$FINAL" ] && break
  # 2. bring each arm to the target in turn (an arm already there is skipped)
  for arm in shifted cosine; do
    [ -n "$STOP_AT" ] && [ "$(date +%s)" -ge "$STOP_AT" ] && exit 0
    out=runs/s64-$arm; s=$(arm_step $arm); [ "$s" -ge "$target" ] && continue
    sched=(--schedule shifted_cosine --base_resolution 32); [ $arm = cosine ] && sched=(--schedule cosine)
    # a new machine: no checkpoint under runs/, continue from the interim weights when they are there
    if ! ls -d $out/checkpoint-* >/dev/null 2>&1 && [ -f $INTERIM/$arm/model_index.json ]; then
      sched=(--init_from $INTERIM/$arm)
    fi
    echo "$(date -u +%FT%T) $arm -> $target"
    nice -n 10 "$PYTHON" training/train_diffusion.py --output_dir $out --max_train_steps $target "${common[@]}" \
      "${sched[@]}" >> runs/s64/$arm.log 2>&1 || { echo "$arm failed (see runs/s64/$arm.log)"; exit 1; }
    # 3. snapshot the EMA pipeline of this step (atomic: copied under .tmp, then renamed)
    snap=$out/snapshots/step-$(step_of $out); mkdir -p $out/snapshots
    [ -d $snap ] || { rm -rf $snap.tmp; mkdir $snap.tmp; cp -r $out/unet $out/scheduler $out/model_index.json \
      $out/training_state.json $snap.tmp/ && mv $snap.tmp $snap; }
  done
done
