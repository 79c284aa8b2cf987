#!/usr/bin/env bash
# MTL's hard-task (HT) meta-batch against the plain meta-batch, same number of tasks, several seeds,
# real images on a CPU (results/README.md, "MTL: HT meta-batch vs plain").
#
# Data: a folder in the mini-ImageNet CSV layout (filelists written here), e.g. cub50_bbox84 (CUB
# classes 001-050, FEAT split 23 / 14 / 13 classes) or miniimagenet84_fs100.
# Recipe (run_mtl_cpu.sh's budget cuts, official rates otherwise):
# - encoder ResNet-25 at widths WIDTHS (32-64-128, stem 16: 1.6 M parameters instead of 40.9 M),
#   images SIZE x SIZE (40; the MTL pipeline scaled: Resize(46) [-> RandomResizedCrop(44)] -> CenterCrop(40));
# - phase 1 once (seed 0), shared by every meta-training run: PRE_EPOCHS epochs of the base-class
#   classifier (batch 64, SGD Nesterov 0.1, wd 5e-4, LR x0.2 every PRE_STEP epochs), validated on 200
#   tasks with the official preval inner loop; its best validation checkpoint starts phase 2;
# - phase 2 per seed and arm, one epoch, every task one Adam step at the official rates (1e-4 SS and
#   BatchNorm, 1e-3 base-learner initialisation), UPDATE_STEP inner steps of 0.01, 5-way 1-shot 15 queries:
#     plain  TASKS random tasks;
#     ht     TASKS * K / (K + 1) random tasks and, after every K of them, one hard task re-sampled from
#            their failure classes (--ht_meta_batch K --ht_hard_tasks 1, the configs' K = 5): TASKS in all.
#   With the same seed both arms start from the same encoder and base-learner initialisation and their
#   random tasks are the same sequence (the plain arm's last TASKS / (K + 1) replace HT's hard tasks);
# - phase 3: the last (= only) meta-training checkpoint tested on TEST_EPISODES 5-way 1-shot tasks of the
#   novel classes, 15 queries, test seed 0 for every run (the same tasks), mean ± 1.96 std / sqrt(n).
# Every command runs under `nice -n 19` and /usr/bin/time (CPU seconds per command in $OUT/cpu_times.tsv);
# a finished command leaves $OUT/done/<step> and is skipped when the script runs again. Then
# results/mtl_ht_summary.py writes the tables and JSON.
#
# Usage: DATA=/path/to/cub50_bbox84 bash results/run_mtl_ht_cpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:?dataset folder in the mini-ImageNet CSV layout}
NAME=${NAME:-cub_cropped}
SEEDS=${SEEDS:-0 1 2}
SIZE=${SIZE:-40}
WIDTHS=${WIDTHS:-32,64,128}
PRE_EPOCHS=${PRE_EPOCHS:-10}
PRE_STEP=${PRE_STEP:-5}
TASKS=${TASKS:-120}
K=${K:-5}
UPDATE_STEP=${UPDATE_STEP:-100}
VAL_EPISODES=${VAL_EPISODES:-100}
TEST_EPISODES=${TEST_EPISODES:-600}
OUT=${OUT:-results/runs/mtl_ht}
SUMMARY=${SUMMARY:-results/mtl_ht_cub50.json}
mkdir -p "$OUT"
TIMES="$OUT/cpu_times.tsv"
if (( TASKS % (K + 1) )); then echo "TASKS ($TASKS) must be a multiple of K + 1 ($((K + 1)))" >&2; exit 1; fi
REGULAR=$(( TASKS / (K + 1) * K ))

# run STEP CMD...: CMD under nice and /usr/bin/time, once (skipped when its done marker exists)
run() {
  local step=$1; shift
  if [[ -e "$OUT/done/$step" ]]; then echo "== $step: done before, skipped"; return; fi
  echo "== $step"
  /usr/bin/time -a -o "$TIMES" -f "$step	%U	%S	%e" nice -n 19 "$@"
  mkdir -p "$OUT/done" && touch "$OUT/done/$step"
}

C=(--dataset "$NAME" --data_path "$DATA" --method mtl --image_size "$SIZE" --widths "$WIDTHS" --num_workers 2)
python write_miniImagenet_filelist.py --data_path "$DATA"
run pretrain python pretrain.py "${C[@]}" --checkpoint_dir "$OUT/pretrain" --seed 0 --quiet --overwrite \
  --epoch "$PRE_EPOCHS" --batch_size 64 --lr 0.1 --step_size "$PRE_STEP" --gamma 0.2 --val_n_episode 200 --save_freq 1
PRE="$OUT/pretrain/$NAME/$(basename "$DATA")/ResNet25_mtl_pretrain/best_model.pdparams"
for SEED in $SEEDS; do
  for ARM in plain ht; do
    if [[ $ARM == plain ]]; then ARM_FLAGS=(--train_n_episode "$TASKS")
    else ARM_FLAGS=(--train_n_episode "$REGULAR" --ht_meta_batch "$K" --ht_hard_tasks 1); fi
    CKPT="$OUT/seed$SEED/$ARM"
    run "meta_${ARM}_seed$SEED" python meta_train.py "${C[@]}" --checkpoint_dir "$CKPT" --seed "$SEED" --quiet \
      --overwrite --epoch 1 "${ARM_FLAGS[@]}" --n_shot 1 --update_step "$UPDATE_STEP" --val_n_episode "$VAL_EPISODES" \
      --save_freq 1 --run_name "metatrain_$ARM" --pretrain_path "$PRE"
    MODEL="$CKPT/$NAME/$(basename "$DATA")/metatrain_$ARM/last_model.pdparams"
    run "test_${ARM}_seed$SEED" python test.py "${C[@]}" --seed 0 --n_shot 1 --n_query 15 --update_step "$UPDATE_STEP" \
      --test_n_episode "$TEST_EPISODES" --model_path "$MODEL" --result_file "$OUT/seed$SEED/$ARM/results.json"
  done
done

python results/mtl_ht_summary.py --out "$OUT" --seeds $SEEDS --json_out "$SUMMARY"
